"""The clip decoding job: Ray Data decodes videos into frame batches in parallel.

``clip_dataset`` is the lazy stage (training can stream from it); ``write_clips`` runs it
and stores uint8 frames, frame masks and video ids as Parquet shards, so that training
reads decoded frames and never decodes twice. Bad videos are skipped and reported by a
small log actor, so the report is complete on a multi-node cluster too; it also
counts the videos each node decoded.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import ray

from .report import Report, Skipped
from .video import BadVideo, ClipSpec, decode_clip


@ray.remote(num_cpus=0)
class DecodeLog:
    """Gathers, from every decoding actor on every node, the ``Skipped`` records and how
    many videos each node decoded."""

    def __init__(self):
        self.records: list[Skipped] = []
        self.per_node: dict[str, int] = {}

    def add(self, records: list[Skipped], node: str, decoded: int) -> None:
        self.records.extend(records)
        self.per_node[node] = self.per_node.get(node, 0) + decoded

    def report(self) -> Report:
        return Report(self.records, nodes=self.per_node)


class ClipDecoder:
    """``map_batches`` callable: rows of ``video_id``/``path`` -> decoded clips (good ones only)."""

    def __init__(self, spec: ClipSpec, collector):
        self.spec = spec
        self.collector = collector

    def __call__(self, batch: dict[str, np.ndarray]):
        # A generator, so that a batch of only bad videos yields no rows at all.
        ids, frames, masks, skipped = [], [], [], []
        for video_id, path in zip(batch["video_id"], batch["path"]):
            try:
                clip, mask = decode_clip(path, self.spec)
            except BadVideo as bad:
                skipped.append(Skipped(bad.kind, str(path), str(bad)))
                continue
            ids.append(video_id)
            frames.append(clip)
            masks.append(mask)
        ray.get(self.collector.add.remote(skipped, ray.get_runtime_context().get_node_id(), len(ids)))
        if ids:
            yield {"video_id": np.array(ids, dtype=object), "frames": np.stack(frames), "frame_mask": np.stack(masks)}


def clip_dataset(videos: dict[str, str | Path], spec: ClipSpec, collector, concurrency: int | None = None,
                 batch_size: int = 4) -> ray.data.Dataset:
    """Lazy Ray Dataset of decoded clips: ``video_id``, ``frames [F,S,S,3] uint8``, ``frame_mask [F]``.

    ``videos`` maps video id to path. Decoding runs on a bounded pool of actors (one CPU
    each; ``concurrency`` defaults to the cluster's CPUs).
    """
    rows = [{"video_id": vid, "path": str(path)} for vid, path in videos.items()]
    workers = concurrency or max(1, int(ray.cluster_resources().get("CPU", 1)))
    workers = max(1, min(workers, len(rows)))
    # One batch per block: clips stream out as soon as they are decoded and the actors
    # stay evenly loaded (bench/decode.py measured this against 4 and 16 batches a block).
    ds = ray.data.from_items(rows, override_num_blocks=max(1, -(-len(rows) // batch_size)))
    return ds.map_batches(
        ClipDecoder,
        fn_constructor_kwargs={"spec": spec, "collector": collector},
        batch_size=batch_size,
        compute=ray.data.ActorPoolStrategy(size=workers),
        num_cpus=1,
    )


def write_clips(videos: dict[str, str | Path], out_dir: str | Path, spec: ClipSpec,
                concurrency: int | None = None, rows_per_file: int = 256, progress_every: int = 100) -> tuple[int, Report]:
    """Decode ``videos`` into Parquet shards under ``out_dir``; returns (clips written, report).

    The decoding actors stream their clips to this process, which writes the files (so a
    folder on this machine is right on a cluster of several nodes too, and no write task
    competes with the decoders for a CPU) and prints one progress line every
    ``progress_every`` videos. The report (``out_dir/skipped.jsonl``) lists every skipped
    video and why.
    """
    import time

    import pyarrow as pa
    import pyarrow.parquet as pq
    from ray.data.extensions import ArrowTensorArray

    out_dir = Path(out_dir)
    (out_dir / "clips").mkdir(parents=True, exist_ok=True)
    collector = DecodeLog.remote()
    ds = clip_dataset(videos, spec, collector, concurrency)
    written, files, started, shown = 0, 0, time.time(), 0
    pending: list[dict] = []

    def flush():
        nonlocal files
        batch = {k: np.concatenate([p[k] for p in pending]) for k in pending[0]}
        # Ray's tensor columns, as ``Dataset.write_parquet`` stores them: read_clips gets arrays back.
        table = pa.table({"video_id": pa.array(batch["video_id"].tolist(), pa.string()),
                          "frames": ArrowTensorArray.from_numpy(batch["frames"]),
                          "frame_mask": ArrowTensorArray.from_numpy(batch["frame_mask"])})
        pq.write_table(table, out_dir / "clips" / f"part_{files:05d}.parquet")
        files += 1
        pending.clear()

    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        pending.append(batch)
        written += len(batch["video_id"])
        if sum(len(p["video_id"]) for p in pending) >= rows_per_file:
            flush()
        if written - shown >= progress_every:
            shown = written
            print(f"  decoded {written}/{len(videos)} videos ({written / (time.time() - started):.1f}/s)", flush=True)
    if pending:
        flush()
    report = ray.get(collector.report.remote())
    report.write(out_dir / "skipped.jsonl")
    ray.kill(collector)
    return written, report


def read_clips(out_dir: str | Path) -> ray.data.Dataset:
    """The Parquet shards ``write_clips`` wrote, as a Ray Dataset."""
    return ray.data.read_parquet(str(Path(out_dir) / "clips"))


def clip_ids(out_dir: str | Path) -> list[str]:
    """The video ids ``write_clips`` wrote, read from the Parquet files alone (no Ray job)."""
    import pyarrow.parquet as pq

    folder = Path(out_dir) / "clips"
    if not folder.is_dir():
        return []
    return pq.read_table(folder, columns=["video_id"]).column("video_id").to_pylist()
