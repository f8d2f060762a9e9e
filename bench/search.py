"""Top-10 search over a large index: exhaustive exact WTI against the serving path.

    python bench/search.py                                   # 100k videos, runs/wti/checkpoint
    python bench/search.py --videos 10000 --queries 100 --candidates 256,512,1024

The index holds features from a trained synthetic model, not random noise: clips like the
synthetic corpus's (random shape, colour, size, direction and background noise) are
rendered, encoded by ``jobs.encode.ClipEncoder`` and written with ``models.index`` (cached
under ``~/.cache/vqa-wti-ray/bench``). Queries are captions from the corpus's templates,
encoded by its text encoder. Both sides run one query at a time, on one slice holding the
whole index, as one serving shard does: exhaustive is ``token_wise_topk`` over every video,
the serving path is ``models.search.search`` (pooled candidates, then exact WTI on them).
Prints latency per query, the speed-up and overlap@10 for each candidate count, then one
JSON line.
"""
from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ingest.synthetic import COLORS, DIRECTIONS, SHAPES, SIZES, Clip, render_clips  # noqa: E402
from jobs.encode import ClipEncoder  # noqa: E402
from jobs.index import add_encoded, checkpoint_digest, index_info  # noqa: E402
from models import load_checkpoint, token_wise_topk  # noqa: E402
from models.encode import encode_texts  # noqa: E402
from models.index import IndexWriter, load_rows, read_manifest  # noqa: E402
from models.search import candidate_count, search  # noqa: E402

CACHE = Path.home() / ".cache" / "vqa-wti-ray" / "bench"


def synthetic_index(checkpoint: Path, num_videos: int, folder: Path | None = None, seed: int = 0,
                    chunk: int = 2000) -> Path:
    """An index of ``num_videos`` rendered synthetic clips encoded by ``checkpoint`` (cached)."""
    folder = folder or CACHE / f"index_{checkpoint_digest(checkpoint)[:12]}_{num_videos}_{seed}"
    if (folder / "manifest.json").is_file():
        return folder
    encoder = ClipEncoder(str(checkpoint))  # the index job's encoder, called in-process
    config = encoder.model.config
    writer = IndexWriter(folder, info={**index_info(checkpoint), "synthetic": True, "seed": seed})
    started = time.time()
    for first in range(0, num_videos, chunk):
        n = min(chunk, num_videos - first)
        clips, frames = render_clips(n, config.max_frames, config.image_size, seed=seed * 7_919 + first)
        batch = {"video_id": np.array([f"video{first + i}" for i in range(n)], dtype=object), "frames": frames,
                 "frame_mask": np.ones((n, config.max_frames), np.uint8)}
        add_encoded(writer, encoder(batch))
        done = first + n
        print(f"  encoded {done}/{num_videos} synthetic videos ({done / (time.time() - started):.0f}/s)",
              file=sys.stderr, flush=True)
    writer.close()
    return folder


def synthetic_queries(num_queries: int, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    return [rng.choice(Clip("q", rng.choice(list(COLORS)), rng.choice(SHAPES), rng.choice(SIZES),
                            rng.choice(list(DIRECTIONS))).captions()) for _ in range(num_queries)]


def encode_queries(checkpoint: Path, texts: list[str]):
    model, tokenizer = load_checkpoint(checkpoint)
    encoded = encode_texts(model, tokenizer, texts)
    return encoded.tokens, encoded.weights, encoded.pooled


def run(checkpoint: Path, num_videos: int, num_queries: int, top_k: int, candidate_counts: list[int]) -> dict:
    folder = synthetic_index(checkpoint, num_videos)
    rows = load_rows(folder, 0, read_manifest(folder)["count"])
    frames, weights = torch.from_numpy(rows.frames).float(), torch.from_numpy(rows.weights)
    video_pooled = torch.from_numpy(rows.pooled)
    text, text_weight, text_pooled = encode_queries(checkpoint, synthetic_queries(num_queries))

    def timed(fn):
        fn(0)  # warm-up
        started, out = time.perf_counter(), [fn(a) for a in range(num_queries)]
        return (time.perf_counter() - started) / num_queries, torch.cat(out)

    one = lambda a: (text[a : a + 1], text_weight[a : a + 1], text_pooled[a : a + 1])  # noqa: E731
    exact_s, exact = timed(lambda a: token_wise_topk(*one(a)[:2], frames, weights, top_k, dtype=torch.float32)[1])
    served_s, served = timed(lambda a: search(*one(a), frames, weights, video_pooled, top_k, exact=True)[1])
    assert torch.equal(served, exact), "the serving exact path must find what exhaustive scoring finds"
    results = {"exhaustive_ms": 1000 * exact_s, "exact_path_ms": 1000 * served_s, "runs": []}
    print(f"{num_videos} videos x {frames.shape[1]} frames x {frames.shape[2]} dims, {num_queries} queries, "
          f"top-{top_k}\nexhaustive exact WTI (padded query, as evaluation scores): {1000 * exact_s:.2f} ms/query"
          f"\nthe service's exact path (same top-10; padding trimmed, models.search.trim_padding): "
          f"{1000 * served_s:.2f} ms/query")
    print(f"{'candidates':>10} {'ms/query':>9} {'speed-up':>9} {'vs exact path':>14} {'overlap@10':>11} "
          f"{'identical top-10':>17}")
    for candidates in candidate_counts:
        two_s, found = timed(lambda a: search(*one(a), frames, weights, video_pooled, top_k,
                                              candidates=candidates)[1])
        overlap = np.mean([len(set(e.tolist()) & set(f.tolist())) / top_k for e, f in zip(exact, found)])
        identical = np.mean([set(e.tolist()) == set(f.tolist()) for e, f in zip(exact, found)])
        in_order = np.mean([e.tolist() == f.tolist() for e, f in zip(exact, found)])
        row = {"candidates": candidates, "ms": 1000 * two_s, "speedup": exact_s / two_s,
               "speedup_vs_exact_path": served_s / two_s, "overlap@10": overlap, "identical_top10": identical,
               "identical_order": in_order}
        results["runs"].append(row)
        print(f"{candidates:>10} {1000 * two_s:>9.2f} {exact_s / two_s:>8.1f}x {served_s / two_s:>13.1f}x "
              f"{overlap:>11.4f} {100 * identical:>16.1f}%")
    default = candidate_count(num_videos, top_k)
    print(f"serving default for a {num_videos}-video shard: {default} candidates (models.search.candidate_count)")
    return {**results, "default_candidates": default}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="runs/wti/checkpoint", help="a trained retriever (python jobs/train.py)")
    parser.add_argument("--videos", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--top_k", type=int, default=10)
    parser.add_argument("--candidates", default="256,512,1024,2000,4000", help="comma-separated counts to try")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args(argv)
    checkpoint = Path(args.checkpoint).resolve()
    if not (checkpoint / "config.json").is_file():
        print(f"bench/search.py: error: no checkpoint at {checkpoint} (run: python jobs/train.py)", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    counts = [int(c) for c in args.candidates.split(",")]
    out = run(checkpoint, args.videos, args.queries, args.top_k, counts)
    print(json.dumps({"bench": "search", "machine": platform.machine(), "threads": torch.get_num_threads(),
                      "videos": args.videos, "queries": args.queries, **out}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
