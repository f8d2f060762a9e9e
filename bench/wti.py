"""Exact A x V WTI score matrix: this project's blockwise matrix product vs DRL's loop.

    python bench/wti.py                      # 1000 x 1000, L=32, F=12, D=512, CPU
    python bench/wti.py --device cuda --texts 5000 --videos 5000

Runs, in one process and on the same inputs: DRL's evaluation loop (``_run_on_single_gpu``
calling ``wti_interaction`` on 32 x 32 blocks, a 4-D einsum with the masks multiplied in
separately), ``WTIHead`` (this project), and the bare matrix product
``[A*L, D] x [D, V*F]`` (the machine's limit). Checks that the two matrices agree, prints a
table, and ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from models import WTIHead  # noqa: E402
from models.wti import _block_sizes  # noqa: E402


def drl_wti_interaction(head: WTIHead, text_feat, video_feat, text_mask, video_mask):
    """DRL's ``wti_interaction`` at evaluation time, as its repository writes it."""
    text_weight = head.text_weight_fc(text_feat).squeeze(2)
    text_weight.masked_fill_((1 - text_mask).bool(), float("-inf"))
    text_weight = torch.softmax(text_weight, dim=-1)
    video_weight = head.video_weight_fc(video_feat).squeeze(2)
    video_weight.masked_fill_((1 - video_mask).bool(), float("-inf"))
    video_weight = torch.softmax(video_weight, dim=-1)
    text_feat = text_feat / text_feat.norm(dim=-1, keepdim=True)
    video_feat = video_feat / video_feat.norm(dim=-1, keepdim=True)
    logits = torch.einsum("atd,bvd->abtv", [text_feat, video_feat])
    logits = torch.einsum("abtv,at->abtv", [logits, text_mask])
    logits = torch.einsum("abtv,bv->abtv", [logits, video_mask])
    t2v, _ = logits.max(dim=-1)
    t2v = torch.einsum("abt,at->ab", [t2v, text_weight])
    v2t, _ = logits.max(dim=-2)
    v2t = torch.einsum("abv,bv->ab", [v2t, video_weight])
    return (t2v + v2t) / 2.0


def drl_eval_loop(head, text_feat, video_feat, text_mask, video_mask, mini_batch=32):
    """DRL's ``_run_on_single_gpu``: every 32 x 32 block, rows concatenated."""
    rows = []
    for t_feat, t_mask in zip(text_feat.split(mini_batch), text_mask.split(mini_batch)):
        row = [
            drl_wti_interaction(head, t_feat, v_feat, t_mask, v_mask).cpu()
            for v_feat, v_mask in zip(video_feat.split(mini_batch), video_mask.split(mini_batch))
        ]
        rows.append(torch.cat(row, dim=-1))
    return torch.cat(rows)


def bare_product(text_feat, video_feat, block_elements=None):
    """The matrix product alone, in the same blocks the scoring uses, into one reused buffer."""
    A, L, D = text_feat.shape
    V, num_frames, _ = video_feat.shape
    texts, videos = _block_sizes(L, num_frames, text_feat.device, block_elements)
    frames = video_feat.transpose(0, 1)  # (F, V, D)
    out = torch.empty(
        texts * L, videos * num_frames, device=text_feat.device, dtype=text_feat.dtype
    )
    for j in range(0, V, videos):
        block = frames[:, j : j + videos].reshape(-1, D)
        for i in range(0, A, texts):
            t = text_feat[i : i + texts].reshape(-1, D)
            torch.mm(t, block.T, out=out[: t.shape[0], : block.shape[0]])


def make_inputs(A, V, L, F, D, seed, device):
    g = torch.Generator().manual_seed(seed)
    text = torch.randn(A, L, D, generator=g)
    video = torch.randn(V, F, D, generator=g)
    # Captions of 8..L tokens and clips of 4..F frames, as in MSR-VTT.
    text_mask = (torch.arange(L) < torch.randint(8, L + 1, (A, 1), generator=g)).float()
    video_mask = (torch.arange(F) < torch.randint(4, F + 1, (V, 1), generator=g)).float()
    return [x.to(device) for x in (text, video, text_mask, video_mask)]


class Peak:
    """Peak extra memory of a block of work: CUDA allocator peak, or the process's RSS peak."""

    def __init__(self, device):
        self.device = device

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
            self.base = self._status("VmRSS")
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.bytes = torch.cuda.max_memory_allocated() - self.base
        else:
            self.bytes = self._status("VmHWM") - self.base
        self.seconds = time.perf_counter() - self.start

    @staticmethod
    def _status(field):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1]) * 1024
        return 0


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--texts", type=int, default=1000)
    parser.add_argument("--videos", type=int, default=1000)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeat", type=int, default=2, help="best of N for the fast paths")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    head = WTIHead(args.dim).to(device).eval()
    text, video, text_mask, video_mask = make_inputs(
        args.texts, args.videos, args.tokens, args.frames, args.dim, args.seed, device
    )
    results = {}
    with torch.no_grad():
        with Peak(device) as ref:
            reference = drl_eval_loop(head, text, video, text_mask, video_mask)
        results["reference"] = ref
        best = None
        for _ in range(args.repeat):
            with Peak(device) as ours:
                scores = head(text, video, text_mask, video_mask)
            best = ours if best is None or ours.seconds < best.seconds else best
        results["wti_head"] = best
        best = None
        for _ in range(args.repeat):
            with Peak(device) as bare:
                bare_product(text, video)
            best = bare if best is None or bare.seconds < best.seconds else best
        results["bare_matmul"] = best
        fp16_top10_same = None
        if device.type == "cuda":
            from models.wti import token_wise_topk

            t, tw = head.prepare_text(text, text_mask)
            v, vw = head.prepare_video(video, video_mask)
            with Peak(device) as half:
                _, top_half = token_wise_topk(t, tw, v, vw, k=10)
            results["wti_topk_fp16"] = half
            top_full = scores.topk(10, dim=1).indices
            fp16_top10_same = (top_half == top_full).all(dim=1).float().mean().item()

    max_diff = (scores.cpu() - reference).abs().max().item()
    top10_same = (
        (scores.cpu().topk(10, dim=1).indices == reference.topk(10, dim=1).indices)
        .all(dim=1)
        .float()
        .mean()
        .item()
    )
    name = (
        torch.cuda.get_device_name()
        if device.type == "cuda"
        else f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"
    )
    print(
        f"WTI score matrix {args.texts} x {args.videos}, L={args.tokens}, F={args.frames}, D={args.dim} on {name}"
    )
    print(f"{'path':<16}{'seconds':>10}{'peak MB':>10}{'vs reference':>14}")
    for key, r in results.items():
        print(
            f"{key:<16}{r.seconds:>10.3f}{r.bytes / 2**20:>10.1f}{results['reference'].seconds / r.seconds:>13.2f}x"
        )
    speedup = results["reference"].seconds / results["wti_head"].seconds
    over_bare = results["wti_head"].seconds / results["bare_matmul"].seconds
    print(f"max |ours - reference| = {max_diff:.2e}   identical top-10: {top10_same:.1%}")
    print(
        f"speed-up over the reference: {speedup:.2f}x   time over the bare matrix product: {over_bare:.2f}x"
    )
    summary = {
        "bench": "wti",
        "device": name,
        "texts": args.texts,
        "videos": args.videos,
        "tokens": args.tokens,
        "frames": args.frames,
        "dim": args.dim,
        "seconds": {k: round(r.seconds, 4) for k, r in results.items()},
        "peak_mb": {k: round(r.bytes / 2**20, 1) for k, r in results.items()},
        "speedup_vs_reference": round(speedup, 3),
        "ratio_vs_bare_matmul": round(over_bare, 3),
        "max_abs_diff": max_diff,
        "top10_identical": top10_same,
        "fp16_top10_identical": fp16_top10_same,
    }
    print(json.dumps(summary))
    return 0 if max_diff <= 1e-5 or device.type == "cuda" else 1


if __name__ == "__main__":
    sys.exit(main())
