"""Retrieval evaluation at scale: sharded rank counts vs the full-matrix path.

    python bench/evaluate.py                          # --sizes 5000,20000,50000, 2 shards
    python bench/evaluate.py --sizes 100000 --full_up_to 0 --device cuda   # on a GPU node

Each size N is N texts x N videos (one caption per video, as MSR-VTT's test split) of
prepared features at tiny dims (L=16 tokens, F=4 frames, D=64; a caption is a noisy copy
of its video's frames, so ranks spread from 1 to N). On the same features, in one run:

- **sharded** (``jobs.similarity.sliced_ranks``, what ``jobs/evaluate.py`` runs): Ray tasks
  each score one slice of the videos against all texts and return rank counts;
- **full matrix** (the references' way, and this project's before: the ``[N, N]`` scores on
  one process, then ranks): up to ``--full_up_to`` (its matrix is 4 N^2 bytes, 10 GB at
  50k, and its rank pass needs twice that again).

Reports the metrics' equality, seconds, and peak resident memory per process: the driver
(sampled /proc/self) and the shard tasks (the largest of their processes, sampled /proc).
Prints a table, then one JSON line ``{"runs": [{"size", "metrics_equal",
"peak_driver_mb", "peak_shard_mb", "seconds", ...}]}``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from jobs.metrics import metrics_from_ranks, retrieval_metrics  # noqa: E402
from jobs.similarity import sliced_ranks  # noqa: E402
from models.wti import normalize_masked, token_wise_scores  # noqa: E402


def make_features(size: int, tokens: int, frames: int, dim: int, seed: int = 0, noise: float = 4.0):
    """Prepared (text, text_weight, video, video_weight), built in chunks so that the driver
    never holds more than the features themselves."""
    g = torch.Generator().manual_seed(seed)
    video = torch.empty(size, frames, dim)
    text = torch.empty(size, tokens, dim)
    for lo in range(0, size, 4096):
        hi = min(size, lo + 4096)
        v = torch.randn(hi - lo, frames, dim, generator=g)
        video[lo:hi] = normalize_masked(v, torch.ones(hi - lo, frames))
        pick = torch.randint(0, frames, (hi - lo, tokens), generator=g)
        t = v.gather(1, pick[..., None].expand(-1, -1, dim)) + noise * torch.randn(
            hi - lo, tokens, dim, generator=g
        )
        text[lo:hi] = normalize_masked(t, torch.ones(hi - lo, tokens))
    text_weight = torch.softmax(torch.randn(size, tokens, generator=g), dim=-1)
    video_weight = torch.softmax(torch.randn(size, frames, generator=g), dim=-1)
    return text, text_weight, video, video_weight


def _rss_mb(pid: str = "self") -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _shard_pids() -> list[str]:
    """Ray worker processes running a shard task (their title is ``ray::_rank_counts`` etc.)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                title = (proc / "cmdline").read_bytes()[:40]
            except OSError:
                continue
            if title.startswith((b"ray::_rank_counts", b"ray::_true_scores")):
                pids.append(proc.name)
    return pids


class PeakMemory:
    """Peak RSS of this process and of the shard tasks' processes while the block runs."""

    def __init__(self, interval: float = 0.05):
        self.interval, self.driver_mb, self.shard_mb = interval, 0.0, 0.0

    def _sample(self):
        while not self._stop.is_set():
            self.driver_mb = max(self.driver_mb, _rss_mb())
            for pid in _shard_pids():
                self.shard_mb = max(self.shard_mb, _rss_mb(pid))
            self._stop.wait(self.interval)

    def __enter__(self):
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.started
        self._stop.set()
        self._thread.join()
        self.driver_mb = max(self.driver_mb, _rss_mb())


def full_matrix_metrics(text, text_weight, video, video_weight, text_video) -> dict:
    """The references' evaluation: the whole ``[A, V]`` matrix on one process, then ranks."""
    sim = token_wise_scores(text, text_weight, video, video_weight).numpy()
    return retrieval_metrics(sim, text_video)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sizes", default="5000,20000,50000", help="N for N texts x N videos, comma-separated"
    )
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument(
        "--shards", type=int, default=2, help="shard tasks (one CPU or one GPU each)"
    )
    parser.add_argument(
        "--full_up_to",
        type=int,
        default=20000,
        help="largest N at which the full-matrix path also runs (0: never)",
    )
    parser.add_argument(
        "--device", choices=("cpu", "cuda"), default="cpu", help="where the shards score"
    )
    args = parser.parse_args(argv)
    try:
        sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
        assert sizes and all(s > 0 for s in sizes)
    except (ValueError, AssertionError):
        print(
            f"bench/evaluate.py: --sizes: expected comma-separated positive integers, got {args.sizes!r}",
            file=sys.stderr,
        )
        return 2

    from cluster import ClusterError, connect

    try:
        ray = connect()
    except ClusterError as err:
        print(f"bench/evaluate.py: error: {err}", file=sys.stderr)
        return 2
    _features_task = ray.remote(num_returns=4)(
        lambda *a: tuple(x.numpy() for x in make_features(*a))
    )
    use_gpu = args.device == "cuda"
    runs = []
    for size in sizes:
        # The features are made in a Ray task and stay in the object store, as an encoding
        # job's output does; the driver passes references.
        features = _features_task.remote(size, args.tokens, args.frames, args.dim)
        text_video = np.arange(size)
        with PeakMemory() as sharded:
            t2v, v2t, used = sliced_ranks(
                *features,
                text_video,
                num_slices=args.shards,
                use_gpu=use_gpu,
                dtype=torch.float16 if use_gpu else None,
            )
        metrics = metrics_from_ranks(t2v, v2t, size)
        run = {
            "size": size,
            "metrics_equal": None,
            "peak_driver_mb": round(sharded.driver_mb, 1),
            "peak_shard_mb": round(sharded.shard_mb, 1),
            "seconds": round(sharded.seconds, 2),
            "shards": used,
            "t2v_R@1": metrics["t2v"]["R@1"],
            "t2v_MdR": metrics["t2v"]["MdR"],
            "full_seconds": None,
            "full_peak_mb": None,
        }
        if size <= args.full_up_to and not use_gpu:
            with PeakMemory() as full:
                want = full_matrix_metrics(
                    *(torch.from_numpy(np.array(x)) for x in ray.get(features)), text_video
                )
            run.update(
                metrics_equal=want == metrics,
                full_seconds=round(full.seconds, 2),
                full_peak_mb=round(full.driver_mb, 1),
            )
        runs.append(run)
        print(
            f"  {size} x {size}: sharded {run['seconds']} s (driver {run['peak_driver_mb']} MB, shard "
            f"{run['peak_shard_mb']} MB)"
            + (
                f", full matrix {run['full_seconds']} s ({run['full_peak_mb']} MB), "
                f"equal metrics: {run['metrics_equal']}"
                if run["full_seconds"]
                else ""
            ),
            flush=True,
        )
        del features

    device = torch.cuda.get_device_name() if use_gpu else f"{platform.machine()} CPU"
    print(
        f"\nretrieval evaluation, N texts x N videos, L={args.tokens} F={args.frames} D={args.dim}, "
        f"{args.shards} shard task(s) on {device}"
    )
    print(
        f"{'N':>8} {'sharded s':>10} {'driver MB':>10} {'shard MB':>9} {'full s':>8} {'full MB':>8} "
        f"{'equal':>6} {'R@1':>6} {'MdR':>6}"
    )
    for r in runs:
        full_s = f"{r['full_seconds']:.1f}" if r["full_seconds"] is not None else "-"
        full_mb = f"{r['full_peak_mb']:.0f}" if r["full_peak_mb"] is not None else "-"
        equal = {None: "-", True: "yes", False: "NO"}[r["metrics_equal"]]
        print(
            f"{r['size']:>8} {r['seconds']:>10.1f} {r['peak_driver_mb']:>10.0f} {r['peak_shard_mb']:>9.0f} "
            f"{full_s:>8} {full_mb:>8} {equal:>6} {r['t2v_R@1']:>6.1f} {r['t2v_MdR']:>6.0f}"
        )
    print(
        json.dumps(
            {
                "bench": "evaluate",
                "device": device,
                "tokens": args.tokens,
                "frames": args.frames,
                "dim": args.dim,
                "runs": runs,
            }
        )
    )
    return 1 if any(r["metrics_equal"] is False for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
