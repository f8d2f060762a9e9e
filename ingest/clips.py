"""The clip decoding job: Ray Data decodes videos into frame batches in parallel.

``clip_dataset`` is the lazy stage (training can stream from it); ``write_clips`` runs it
and stores uint8 frames, frame masks and video ids as Parquet shards, so that training
reads decoded frames and never decodes twice. Bad videos are skipped and reported by a
small log actor, so the report is complete on a multi-node cluster too; it also
counts the videos each node decoded.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import ray

from .report import Report, Skipped
from .video import BadVideo, ClipSpec, decode_clip


@ray.remote(num_cpus=0)
class DecodeLog:
    """Gathers, from every decoder on every node, the ``Skipped`` records and how
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
    """``map_batches`` callable (an actor's, or a task's as an instance): rows of
    ``video_id``/``path`` -> decoded clips (good ones only)."""

    def __init__(self, spec: ClipSpec, collector):
        self.spec = spec
        self.collector = collector

    def __call__(self, batch: dict[str, np.ndarray]):
        # A generator, so that a batch of only bad videos yields no rows at all.
        ids, frames, masks, skipped = [], [], [], []
        ends = batch.get("end", np.full(len(batch["path"]), np.nan))
        for video_id, path, end in zip(batch["video_id"], batch["path"], ends):
            try:
                clip, mask = decode_clip(path, self.spec, None if np.isnan(end) else float(end))
            except BadVideo as bad:
                skipped.append(Skipped(bad.kind, str(path), str(bad)))
                continue
            ids.append(video_id)
            frames.append(clip)
            masks.append(mask)
        ray.get(
            self.collector.add.remote(skipped, ray.get_runtime_context().get_node_id(), len(ids))
        )
        if ids:
            yield {
                "video_id": np.array(ids, dtype=object),
                "frames": np.stack(frames),
                "frame_mask": np.stack(masks),
            }


# Decodes of fewer videos run as tasks in Ray's pooled workers, which are warm after the
# first job (12 tiny videos: 0.8-1.0 s, where a pool of fresh actor processes takes 2.7-3.6
# s to start). From this many on, the pool's start-up is paid back (bench/decode.py on a
# fresh Ray, 320x240 videos: 24 clips 4.8 s as a pool, 4.6 s as tasks; 60 clips 8.6 s as a
# pool, 10.2 s as tasks; 600 clips: the pool at 89% of linear scaling).
POOL_MIN_VIDEOS = 32


def clip_dataset(
    videos: dict[str, str | Path],
    spec: ClipSpec,
    collector,
    concurrency: int | None = None,
    batch_size: int = 4,
    ends: dict[str, float] | None = None,
) -> ray.data.Dataset:
    """Lazy Ray Dataset of decoded clips: ``video_id``, ``frames [F,S,S,3] uint8``, ``frame_mask [F]``.

    ``videos`` maps video id to path; ``ends`` a video's window end in seconds (ActivityNet's
    ``ceil(duration)``), where it has one. Decoding runs one CPU a decoder, at most
    ``concurrency`` at a time (CLIP4Clip's --num_thread_reader, DRL's --workers; at most the
    cluster's CPUs, which is also the default): a pool of actors from ``POOL_MIN_VIDEOS``
    videos on, tasks below it.
    """
    ends = ends or {}
    rows = [
        {"video_id": vid, "path": str(path), "end": float(ends.get(vid, np.nan))}
        for vid, path in videos.items()
    ]
    # One batch per block: clips stream out as soon as they are decoded and the decoders
    # stay evenly loaded (bench/decode.py measured this against 4 and 16 batches a block).
    blocks = max(1, -(-len(rows) // batch_size))
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    # At most one decoder per CPU of the cluster (each takes one: more actors would wait
    # forever for their CPU) and per block to give them.
    workers = max(1, min(concurrency or cpus, cpus, blocks))
    ds = ray.data.from_items(rows, override_num_blocks=blocks)
    if len(rows) < POOL_MIN_VIDEOS:
        return ds.map_batches(
            ClipDecoder(spec, collector),
            batch_size=batch_size,
            compute=ray.data.TaskPoolStrategy(size=workers),
            num_cpus=1,
        )
    return ds.map_batches(
        ClipDecoder,
        fn_constructor_kwargs={"spec": spec, "collector": collector},
        batch_size=batch_size,
        compute=ray.data.ActorPoolStrategy(size=workers),
        num_cpus=1,
    )


def write_clips(
    videos: dict[str, str | Path],
    out_dir: str | Path,
    spec: ClipSpec,
    concurrency: int | None = None,
    rows_per_file: int = 256,
    progress_every: int = 100,
    prefix: str = "part",
    ends: dict[str, float] | None = None,
) -> tuple[int, Report]:
    """Decode ``videos`` into Parquet shards under ``out_dir``; returns (clips written, report).

    The decoders stream their clips to this process, which writes the files (so a
    folder on this machine is right on a cluster of several nodes too, and no write task
    competes with the decoders for a CPU) and prints one progress line every
    ``progress_every`` videos. The report (``out_dir/skipped.jsonl``) lists every skipped
    video and why.
    """
    import time

    import pyarrow as pa
    from ray.data.extensions import ArrowTensorArray

    out_dir = Path(out_dir)
    (out_dir / "clips").mkdir(parents=True, exist_ok=True)
    collector = DecodeLog.remote()
    ds = clip_dataset(videos, spec, collector, concurrency, ends=ends)
    written, files, started, shown = 0, 0, time.time(), 0
    pending: list[dict] = []

    def flush():
        nonlocal files
        batch = {k: np.concatenate([p[k] for p in pending]) for k in pending[0]}
        # Ray's tensor columns, as ``Dataset.write_parquet`` stores them: read_clips gets arrays back.
        table = pa.table(
            {
                "video_id": pa.array(batch["video_id"].tolist(), pa.string()),
                "frames": ArrowTensorArray.from_numpy(batch["frames"]),
                "frame_mask": ArrowTensorArray.from_numpy(batch["frame_mask"]),
            }
        )
        pq.write_table(table, out_dir / "clips" / f"{prefix}_{files:05d}.parquet")
        files += 1
        pending.clear()

    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        pending.append(batch)
        written += len(batch["video_id"])
        if sum(len(p["video_id"]) for p in pending) >= rows_per_file:
            flush()
        if written - shown >= progress_every:
            shown = written
            print(
                f"  decoded {written}/{len(videos)} videos ({written / (time.time() - started):.1f}/s)",
                flush=True,
            )
    if pending:
        flush()
    report = ray.get(collector.report.remote())
    report.write(out_dir / "skipped.jsonl")
    ray.kill(collector)
    return written, report


# --- the decode cache: decode each video once, re-decode only what changed ------------------

MANIFEST = (
    "videos.json"  # video id -> the file it was decoded from (path, size, mtime) and where it went
)


def _source(path: str | Path) -> dict | None:
    """What identifies a video file's content here: its resolved path, size and mtime."""
    try:
        stat = Path(path).stat()
    except OSError:
        return None
    return {"path": str(Path(path).resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _read_manifest(out_dir: Path) -> dict:
    try:
        return json.loads((out_dir / MANIFEST).read_text())
    except (OSError, ValueError):
        return {}


@dataclass
class CacheUpdate:
    """What ``update_clips`` did: the report of the videos asked for (skips, old and new),
    and how many clips it reused and decoded."""

    report: Report
    reused: int
    decoded: int
    skipped: int

    def summary(self) -> str:
        return (
            f"reused {self.reused} decoded clips, decoded {self.decoded} new or changed videos; "
            f"{self.report.summary('decode')}"
        )


def update_clips(
    videos: dict[str, str | Path],
    out_dir: str | Path,
    spec: ClipSpec,
    concurrency: int | None = None,
    ends: dict[str, float] | None = None,
) -> CacheUpdate:
    """Bring the decoded clips in ``out_dir`` up to date with ``videos`` (id -> path; ``ends``:
    per-video window ends, see ``clip_dataset``; a changed end decodes the video again).

    A video whose file (path, size, mtime) is the one decoded before is reused; a new or
    changed one is decoded (``write_clips``) into new Parquet files; a missing one is tried
    again (and reported). ``videos.json`` records each video's source and file; it is
    replaced in one rename after the new files are written, so an interrupted run leaves
    the previous cache intact (its half-written files are deleted by the next run).
    ``skipped.jsonl`` lists the skips among ``videos``.
    """
    out_dir = Path(out_dir)
    manifest = _read_manifest(out_dir)
    if (
        not manifest and out_dir.exists()
    ):  # a cache without a manifest (older, or interrupted): start over
        shutil.rmtree(out_dir)
    (out_dir / "clips").mkdir(parents=True, exist_ok=True)
    referenced = {entry["file"] for entry in manifest.values() if entry.get("file")}
    for part in (out_dir / "clips").glob("*.parquet"):
        if part.name not in referenced:
            part.unlink()  # written by a run that did not finish
    ends = ends or {}
    sources = {vid: _source(path) for vid, path in videos.items()}
    for vid, source in sources.items():
        if source is not None and vid in ends:
            source["end"] = ends[vid]
    todo = {
        vid: path
        for vid, path in videos.items()
        if sources[vid] is None or manifest.get(vid, {}).get("source") != sources[vid]
    }
    decoded = 0
    if todo:
        run = 1 + max([int(name.split("_")[0][4:]) for name in referenced] or [0])
        prefix = f"part{run:05d}"
        print(
            f"decoding {len(todo)} new or changed videos with Ray Data into {out_dir} "
            f"({len(videos) - len(todo)} reused)",
            flush=True,
        )
        decoded, report = write_clips(todo, out_dir, spec, concurrency, prefix=prefix, ends=ends)
        by_path = {str(path): vid for vid, path in todo.items()}
        skipped = {vid: [] for vid in todo}
        for record in report.records:
            skipped.setdefault(by_path.get(record.path, record.path), []).append(asdict(record))
        written = {}
        for part in sorted((out_dir / "clips").glob(f"{prefix}_*.parquet")):
            written.update(
                dict.fromkeys(
                    pq.read_table(part, columns=["video_id"]).column("video_id").to_pylist(),
                    part.name,
                )
            )
        for vid in todo:
            manifest[vid] = {
                "source": sources[vid],
                "file": written.get(vid),
                "skipped": skipped.get(vid, []),
            }
        staged = out_dir / f"{MANIFEST}.tmp"
        staged.write_text(json.dumps(manifest))
        staged.replace(out_dir / MANIFEST)
    report = Report([Skipped(**record) for vid in videos for record in manifest[vid]["skipped"]])
    report.write(out_dir / "skipped.jsonl")
    return CacheUpdate(
        report, reused=len(videos) - len(todo), decoded=decoded, skipped=len(report.records)
    )


def read_clips(out_dir: str | Path, video_ids=None) -> ray.data.Dataset:
    """The decoded clips in ``out_dir`` as a Ray Dataset: with a cache manifest
    (``update_clips``), the current clip of each of ``video_ids`` (default: all); without
    one, every Parquet file ``write_clips`` wrote."""
    out_dir = Path(out_dir)
    manifest = _read_manifest(out_dir)
    if not manifest:
        return _read_parquet(str(out_dir / "clips"))
    wanted = set(video_ids) if video_ids is not None else None
    current = {
        vid: entry["file"]
        for vid, entry in manifest.items()
        if entry.get("file") and (wanted is None or vid in wanted)
    }
    files = sorted({str(out_dir / "clips" / name) for name in current.values()})
    if not files:
        raise FileNotFoundError(f"{out_dir}: no decoded clips for the videos asked for")

    def current_rows(
        batch,
    ):  # a video decoded again lives in a newer file: the older row is dropped
        keep = np.array(
            [
                current.get(vid) == Path(path).name
                for vid, path in zip(batch["video_id"], batch["path"])
            ],
            dtype=bool,
        )
        return {k: v[keep] for k, v in batch.items() if k != "path"}

    return _read_parquet(files, include_paths=True).map_batches(current_rows, batch_format="numpy")


def _read_parquet(paths, **kwargs) -> ray.data.Dataset:
    """``ray.data.read_parquet`` without the tqdm bar its file sampling draws at every read
    (a line of output each time where the output is not a terminal); the dataset's own
    progress shows as configured (``cluster.connect``)."""
    context = ray.data.DataContext.get_current()
    shown = context.enable_progress_bars
    context.enable_progress_bars = False
    try:
        ds = ray.data.read_parquet(paths, **kwargs)
    finally:
        context.enable_progress_bars = shown
    ds.context.enable_progress_bars = shown
    return ds


def clip_ids(out_dir: str | Path, video_ids=None) -> list[str]:
    """The video ids with a decoded clip in ``out_dir`` (of ``video_ids``, default all), read
    from the cache manifest or the Parquet files alone (no Ray job)."""
    out_dir = Path(out_dir)
    manifest = _read_manifest(out_dir)
    if manifest:
        wanted = set(video_ids) if video_ids is not None else None
        return [
            vid
            for vid, entry in manifest.items()
            if entry.get("file") and (wanted is None or vid in wanted)
        ]
    folder = out_dir / "clips"
    if not folder.is_dir():
        return []
    return pq.read_table(folder, columns=["video_id"]).column("video_id").to_pylist()
