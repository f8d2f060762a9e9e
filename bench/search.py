"""Top-10 search over a large index: exhaustive exact WTI, this project's search and a peer,
on the same vectors in one run.

    python bench/search.py                                   # 1M videos, runs/wti/checkpoint
    python bench/search.py --videos 10000 --queries 100 --probe 4,8 --nprobe 4,8

The index holds features from a trained synthetic model, not random noise: clips like the
synthetic corpus's (random shape, colour, size, direction and background noise) are
rendered (a process pool), encoded by ``jobs.encode.ClipEncoder`` and written with
``retrieval.store`` (cached under ``~/.cache/vqa-wti-ray/bench``; 1M takes about 30 minutes
on 2 cores). Queries are captions from the corpus's templates, encoded by its text encoder.
Every method runs one query at a time on one slice holding the whole index, as one serving
shard does:

- exhaustive: ``token_wise_topk`` over every video (the reference);
- this project, the default: ``retrieval.lists.search_lists`` with the index's inverted
  lists scored in the order of their bounds until none left can beat the k-th score (the
  exact top-k; ``--cones`` per list for the bound);
- this project, the fixed rule (``--probe``): the best lists by centroid until they hold
  that many lists' worth of videos, all of them scored exactly;
- the old first stage (``--pooled``): every pooled vector scanned, the best re-scored;
- the peer: FAISS IVF-Flat (``faiss-cpu``, installed on first use) over the same pooled
  vectors with as many lists, its ``--peer_candidates`` best re-scored by the same exact WTI.

Prints ms/query, the speed-up, overlap@10 and the share of queries whose top-10 is identical
to exhaustive for each setting, each first stage's build time and bytes per video, then one
JSON line.
"""

from __future__ import annotations

import argparse
import json
import math
import os
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
from models import load_checkpoint, token_wise_scores, token_wise_topk  # noqa: E402
from models.encode import encode_texts  # noqa: E402
from retrieval.lists import (  # noqa: E402
    CONES_PER_LIST,
    InvertedLists,
    frame_cones,
    nearest_centroid,
    probe_lists,
    search_lists,
    train_centroids,
    trim_padding,
)
from retrieval.store import IndexWriter, load_index, read_manifest  # noqa: E402

# The first stage the inverted lists replaced, measured beside them: every pooled vector
# scanned, the best re-scored exactly. At least MIN_CANDIDATES, and CANDIDATE_FRACTION of the
# slice (chosen on a 100k index).
MIN_CANDIDATES = 256
CANDIDATE_FRACTION = 0.03


def top_rows(scores: torch.Tensor, count: int) -> torch.Tensor:
    """Indices of the ``count`` largest of a 1-D score vector, unordered. On a CPU numpy's
    linear-time partition (about 8x faster than ``torch.topk`` at 100k)."""
    if scores.device.type == "cpu":
        return torch.from_numpy(np.argpartition(-scores.float().numpy(), count - 1)[:count])
    return scores.topk(count, sorted=False).indices


@torch.no_grad()
def pooled_scan_search(
    text: torch.Tensor,
    text_weight: torch.Tensor,
    text_pooled: torch.Tensor,
    frames: torch.Tensor,
    frame_weight: torch.Tensor,
    frame_pooled: torch.Tensor,
    top_k: int,
    exact: bool = False,
    candidates: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Best ``top_k`` rows for each query, best first: (scores ``[A, k]``, row indices ``[A, k]``),
    with the pooled scan as the first stage (``retrieval.lists.search_lists`` replaced it).

    text ``[A, L, D]``/``[A, L]``/``[A, D]`` and the slice's frames ``[V, F, D]``/``[V, F]``/
    ``[V, D]``, all prepared (``models.encode``). ``exact`` scores every row.
    """
    V = frames.shape[0]
    top_k = min(top_k, V)
    candidates = candidates or max(MIN_CANDIDATES, top_k, math.ceil(CANDIDATE_FRACTION * V))
    text, text_weight = trim_padding(text, text_weight)
    if exact or candidates >= V:
        return token_wise_topk(text, text_weight, frames, frame_weight, top_k, dtype=frames.dtype)
    coarse = text_pooled.to(frame_pooled.dtype) @ frame_pooled.T  # (A, V)
    best, found = [], []
    for a in range(text.shape[0]):
        rows = top_rows(coarse[a], max(candidates, top_k))
        scores = token_wise_scores(
            text[a : a + 1], text_weight[a : a + 1], frames[rows], frame_weight[rows]
        )[0]
        top = scores.topk(top_k)
        best.append(top.values)
        found.append(rows.to(frames.device)[top.indices])
    return torch.stack(best), torch.stack(found)


CACHE = Path.home() / ".cache" / "vqa-wti-ray" / "bench"


def _render(job: tuple[int, int, int, int]) -> tuple[int, np.ndarray]:
    """(render seed, clips, frames, size) -> (render seed, frames): one chunk, in a pool process."""
    job_seed, n, max_frames, image_size = job
    return job_seed, render_clips(n, max_frames, image_size, seed=job_seed)[1]


def synthetic_index(
    checkpoint: Path, num_videos: int, folder: Path | None = None, seed: int = 0, chunk: int = 2000
) -> Path:
    """An index of ``num_videos`` rendered synthetic clips encoded by ``checkpoint`` (cached).
    Clips are rendered by a process pool (one process per core) while this process encodes."""
    from concurrent.futures import ProcessPoolExecutor

    folder = folder or CACHE / f"index_{checkpoint_digest(checkpoint)[:12]}_{num_videos}_{seed}"
    if (folder / "manifest.json").is_file():
        return folder
    encoder = ClipEncoder(str(checkpoint))  # the index job's encoder, called in-process
    config = encoder.model.config
    writer = IndexWriter(folder, info={**index_info(checkpoint), "synthetic": True, "seed": seed})
    started = time.time()
    jobs = [
        (seed * 7_919 + first, min(chunk, num_videos - first), config.max_frames, config.image_size)
        for first in range(0, num_videos, chunk)
    ]
    workers = max(1, os.cpu_count() or 1)
    with ProcessPoolExecutor(workers) as pool:
        window = [
            pool.submit(_render, job) for job in jobs[: 2 * workers]
        ]  # bounded: a chunk is ~100 MB
        for i, (job_seed, n, _, _) in enumerate(jobs):
            frames = window.pop(0).result()[1]
            if i + len(window) + 1 < len(jobs):
                window.append(pool.submit(_render, jobs[i + len(window) + 1]))
            first = job_seed - seed * 7_919
            batch = {
                "video_id": np.array([f"video{first + i}" for i in range(n)], dtype=object),
                "frames": frames,
                "frame_mask": np.ones((n, config.max_frames), np.uint8),
            }
            add_encoded(writer, encoder(batch))
            done = first + n
            print(
                f"  encoded {done}/{num_videos} synthetic videos ({done / (time.time() - started):.0f}/s)",
                file=sys.stderr,
                flush=True,
            )
    started = time.time()
    manifest = writer.close()
    print(
        f"  {manifest['lists']} inverted lists (k-means) in {time.time() - started:.1f} s",
        file=sys.stderr,
        flush=True,
    )
    return folder


def synthetic_queries(num_queries: int, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    return [
        rng.choice(
            Clip(
                "q",
                rng.choice(list(COLORS)),
                rng.choice(SHAPES),
                rng.choice(SIZES),
                rng.choice(list(DIRECTIONS)),
            ).captions()
        )
        for _ in range(num_queries)
    ]


def encode_queries(checkpoint: Path, texts: list[str]):
    model, tokenizer = load_checkpoint(checkpoint)
    encoded = encode_texts(model, tokenizer, texts)
    return encoded.features, encoded.weights, encoded.pooled


def peer_faiss():
    """FAISS, the peer (``faiss-cpu``), installed into this environment on first use."""
    try:
        import faiss
    except ImportError:
        import subprocess

        print(f"installing the peer: pip install {FAISS}", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", FAISS], check=True)
        import faiss
    return faiss


FAISS = "faiss-cpu==1.15.1"


def agreement(exact: torch.Tensor, found: torch.Tensor, top_k: int) -> dict:
    return {
        "overlap@10": float(
            np.mean([len(set(e.tolist()) & set(f.tolist())) / top_k for e, f in zip(exact, found)])
        ),
        "identical_top10": float(
            np.mean([set(e.tolist()) == set(f.tolist()) for e, f in zip(exact, found)])
        ),
    }


def run(
    checkpoint: Path,
    num_videos: int,
    num_queries: int,
    top_k: int,
    cones: list[int],
    probes: list[int],
    pooled: list[int],
    nprobes: list[int],
    peer_candidates: list[int],
    device: str = "cpu",
) -> dict:
    folder = synthetic_index(checkpoint, num_videos)
    manifest = read_manifest(folder)
    rows = load_index(folder)
    centroids = np.load(folder / manifest["centroids"])
    frames = torch.from_numpy(rows.frames).to(device, torch.float32)
    order, lists = InvertedLists.build(
        rows.lists, centroids, frames, torch.from_numpy(rows.weights).to(device)
    )  # as a serving shard holds it (fp32: the second stage's exact scores)
    del frames
    rows = rows.take(order)  # every method sees the rows in list order, so row numbers agree
    frames = torch.from_numpy(rows.frames).to(device, torch.float32)
    weights = torch.from_numpy(rows.weights).to(device)
    video_pooled = torch.from_numpy(rows.pooled).to(device)
    text, text_weight, text_pooled = (
        x.to(device) for x in encode_queries(checkpoint, synthetic_queries(num_queries))
    )
    F, D = frames.shape[1:]

    median = {}  # the median query time of the latest ``timed`` call, for ``report``

    def timed(fn):
        fn(0)  # warm-up
        times, out = [], []
        for a in range(num_queries):
            started = time.perf_counter()
            out.append(fn(a))
            if device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - started)
        median["s"] = float(np.median(times))
        return float(np.mean(times)), torch.cat(out)

    one = lambda a: (text[a : a + 1], text_weight[a : a + 1], text_pooled[a : a + 1])  # noqa: E731
    print(
        f"{num_videos} videos x {F} frames x {D} dims, {num_queries} queries, top-{top_k}, "
        f"{torch.get_num_threads()} threads",
        flush=True,
    )
    exact_s, exact = timed(
        lambda a: token_wise_topk(*one(a)[:2], frames, weights, top_k, dtype=torch.float32)[1]
    )
    print(
        f"exhaustive exact WTI (padded query, as evaluation scores): {1000 * exact_s:.2f} ms/query",
        flush=True,
    )
    results = {"exhaustive_ms": 1000 * exact_s, "runs": []}

    def report(method: str, setting: str, seconds: float, found: torch.Tensor, **extra) -> None:
        row = {
            "method": method,
            "setting": setting,
            "ms": 1000 * seconds,
            "p50_ms": 1000 * median["s"],
            "speedup": exact_s / seconds,
            **agreement(exact, found, top_k),
            **extra,
        }
        results["runs"].append(row)
        print(
            f"{method:<34} {setting:<26} {1000 * seconds:>9.2f} {1000 * median['s']:>7.2f} {exact_s / seconds:>8.1f}x "
            f"{row['overlap@10']:>11.4f} {100 * row['identical_top10']:>16.1f}%",
            flush=True,
        )

    print(
        f"\n{'method':<34} {'setting':<26} {'ms/query':>9} {'p50 ms':>7} {'speed-up':>9} {'overlap@10':>11} {'identical top-10':>17}"
    )
    # This project's default: lists by their bounds until the k-th score beats every bound left.
    for count in cones:
        started = time.perf_counter()
        lists.cones = frame_cones(lists, count)
        cones_s = time.perf_counter() - started
        scored = []
        original = lists.scores
        lists.scores = lambda *a, o=original, s=scored: s.append(len(a[2])) or o(*a)
        seconds, found = timed(lambda a: search_lists(*one(a), lists, top_k)[1])
        lists.scores = original
        report(
            "this project: lists by bound + WTI",
            f"{count} cones/list (exact top-k)",
            seconds,
            found,
            cones=count,
            lists_scored_per_query=sum(scored) / (num_queries + 1),
            cones_build_s=cones_s,
        )
    lists.cones = frame_cones(lists, CONES_PER_LIST)
    # The fixed rule: the centroids, then exact WTI on every video of the best lists.
    per_list = int(np.ceil(len(rows) / len(centroids)))
    for probe in probes:  # lists' worth of videos, as retrieval.lists.candidate_count counts them
        count = probe * per_list
        seconds, found = timed(
            lambda a, count=count: search_lists(*one(a), lists, top_k, candidates=count)[1]
        )
        report(
            "this project: inverted lists + WTI",
            f"{probe} lists ({count} videos)",
            seconds,
            found,
            probe_lists=probe,
            candidates=count,
        )
    # Before: every pooled vector scanned (fp32), the best re-scored exactly.
    for count in pooled:
        seconds, found = timed(
            lambda a, count=count: pooled_scan_search(
                *one(a), frames, weights, video_pooled, top_k, candidates=count
            )[1]
        )
        report(
            "pooled scan + WTI (the old stage)",
            f"{count} candidates",
            seconds,
            found,
            candidates=count,
        )

    # The peer: FAISS's IVF-Flat over the same pooled vectors (its own k-means, as many lists),
    # its top candidates re-scored with the same exact WTI. ``--nprobe ''`` leaves it out.
    peer_build_s = None
    if nprobes:
        peer_build_s = peer_runs(
            rows,
            centroids,
            (text, text_weight, text_pooled),
            frames,
            weights,
            top_k,
            nprobes,
            peer_candidates,
            timed,
            report,
        )
    results.update(first_stage_figures(rows, centroids, peer_build_s, F, D))
    for method in ("this project", "pooled scan", "peer"):
        good = [
            r
            for r in results["runs"]
            if r["method"].startswith(method) and r["identical_top10"] >= 0.99
        ]
        if good:
            best = min(good, key=lambda r: r["ms"])
            print(
                f"fastest at >= 99% identical top-10, {method}: {best['setting']}, {best['ms']:.2f} ms/query"
            )
    return {**results, "default_probe_lists": probe_lists(len(centroids)), "device": device}


def peer_runs(
    rows, centroids, queries, frames, weights, top_k, nprobes, peer_candidates, timed, report
) -> float:
    """FAISS IVF-Flat + the same exact WTI at each setting; its build seconds. ``queries``:
    the encoded queries (tokens, weights, pooled)."""
    text, text_weight, text_pooled = queries
    D = frames.shape[-1]
    faiss = peer_faiss()
    faiss.omp_set_num_threads(torch.get_num_threads())
    started = time.perf_counter()
    peer = faiss.IndexIVFFlat(faiss.IndexFlatIP(D), D, len(centroids), faiss.METRIC_INNER_PRODUCT)
    sample = rows.pooled[
        np.random.default_rng(0).choice(
            len(rows), min(len(rows), 64 * len(centroids)), replace=False
        )
    ]
    peer.train(np.ascontiguousarray(sample))
    peer.add(np.ascontiguousarray(rows.pooled))
    peer_build_s = time.perf_counter() - started

    def peer_search(a: int, nprobe: int, count: int) -> torch.Tensor:
        peer.nprobe = nprobe
        ids = torch.from_numpy(peer.search(text_pooled[a : a + 1].cpu().numpy(), count)[1][0])
        ids = ids[ids >= 0].to(frames.device)
        q, w = trim_padding(text[a : a + 1], text_weight[a : a + 1])
        scores = token_wise_scores(q, w, frames[ids], weights[ids])[0]
        return ids[scores.topk(min(top_k, len(ids))).indices][None]

    for nprobe in nprobes:
        for count in peer_candidates:
            seconds, found = timed(
                lambda a, nprobe=nprobe, count=count: peer_search(a, nprobe, count)
            )
            report(
                f"peer: {FAISS} IVF-Flat + WTI",
                f"nprobe {nprobe}, {count} candidates",
                seconds,
                found,
                nprobe=nprobe,
                candidates=count,
            )

    return peer_build_s


def first_stage_figures(rows, centroids, peer_build_s, F: int, D: int) -> dict:
    """Build time and memory per video of each first stage (the exact stage's frames are
    the same for both), printed and returned."""
    started = time.perf_counter()
    ours = train_centroids(rows.pooled, len(centroids))
    nearest_centroid(rows.pooled, ours)
    ours_build_s = time.perf_counter() - started
    n = len(rows)
    figures = {
        "first_stage": {
            "this_project": {
                "build_s": ours_build_s,
                "lists": len(centroids),
                "bytes_per_video": 4 + centroids.nbytes / n,
            },  # a list id on disk; the centroids shared
            "peer": {
                "build_s": peer_build_s,
                "lists": len(centroids),
                "bytes_per_video": 4 * D + 8,
            },  # vector + id
        },
        "exact_stage_bytes_per_video": {
            "disk": F * D * 2 + F * 4 + F + D * 4 + 4,
            "memory": F * D * 4 + F * 4,
        },
    }
    peer = f"{peer_build_s:.1f} s" if peer_build_s is not None else "not run"
    print(
        f"\nfirst stage build: this project {ours_build_s:.1f} s (k-means + lists), peer {peer}; "
        f"bytes per video: this project {figures['first_stage']['this_project']['bytes_per_video']:.1f} "
        f"(a list id + its share of the centroids), peer {4 * D + 8} (the pooled vector + id); "
        f"the exact stage's frames: {F * D * 4 + F * 4} B in memory (fp32), "
        f"{figures['exact_stage_bytes_per_video']['disk']} B on disk per video, both methods"
    )
    return figures


def ints(text: str) -> list[int]:
    return [int(c) for c in text.split(",") if c]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--checkpoint",
        default="runs/wti/checkpoint",
        help="a trained retriever (python jobs/train.py)",
    )
    parser.add_argument("--videos", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--top_k", type=int, default=10)
    parser.add_argument(
        "--cones",
        default=str(CONES_PER_LIST),
        help="this project's default search: cones per list for the bound (comma-separated)",
    )
    parser.add_argument(
        "--probe",
        default="32",
        help="this project's fixed rule: lists probed per query (their average size each)",
    )
    parser.add_argument(
        "--pooled", default="", help="the old pooled scan: candidates to try (e.g. 30000)"
    )
    parser.add_argument(
        "--nprobe", default="16,32,64", help="the peer: lists probed ('' leaves the peer out)"
    )
    parser.add_argument(
        "--peer_candidates", default="2000,8000", help="the peer: candidates re-scored"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    parser.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="where the index is held and scored (the peer stays on the CPU)",
    )
    args = parser.parse_args(argv)
    checkpoint = Path(args.checkpoint).resolve()
    if not (checkpoint / "config.json").is_file():
        print(
            f"bench/search.py: error: no checkpoint at {checkpoint} (run: python jobs/train.py)",
            file=sys.stderr,
        )
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    out = run(
        checkpoint,
        args.videos,
        args.queries,
        args.top_k,
        ints(args.cones),
        ints(args.probe),
        ints(args.pooled),
        ints(args.nprobe),
        ints(args.peer_candidates),
        args.device,
    )
    print(
        json.dumps(
            {
                "bench": "search",
                "machine": platform.machine(),
                "threads": torch.get_num_threads(),
                "videos": args.videos,
                "queries": args.queries,
                **out,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
