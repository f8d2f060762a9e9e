"""Encode a video collection with a trained retriever into a sharded retrieval index, and
change it while it is served.

    python jobs/index.py                                          # runs/wti/checkpoint over its synthetic corpus
    python jobs/index.py --checkpoint DIR --features_path VIDEOS --output_dir DIR/index
    python jobs/index.py --checkpoint DIR --features_path NEW_VIDEOS --output_dir DIR/index --append
    python jobs/index.py --output_dir DIR/index --remove VIDEO_ID [VIDEO_ID ...]

``--append`` encodes only the videos in ``--features_path`` into new segments of the
index (a video id it already holds is replaced); the checkpoint must be the one the index was
built with. ``--remove`` takes videos out. Each change is the index's next version, made in
one rename of its manifest (``retrieval.store``); a running service picks it up within seconds.

Ray Data decodes the videos (the clip job, streamed: nothing but the index is written),
``jobs.encode.ClipEncoder`` encodes them (an actor per GPU when the cluster has GPUs, else
tasks), and the driver writes the rows into segments (``retrieval.store``): per video its
id, prepared frame features (fp16), frame mask, video-side WTI weights, pooled vector and a
thumbnail. The manifest records the checkpoint, the count, the dimensions and
the shard layout. ``serve run serve.app`` serves ``runs/wti/index`` by default. Ray comes
from RAY_ADDRESS or starts locally.
"""

from __future__ import annotations

import hashlib
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PROG = "jobs/index.py"


def checkpoint_digest(checkpoint: Path) -> str:
    """sha256 of the weights, so that an index names exactly the model it came from."""
    digest = hashlib.sha256()
    with (checkpoint / "model.safetensors").open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def index_info(checkpoint: Path) -> dict:
    """What the manifest says of the model the index came from."""
    from models.checkpoint import read_config

    config = read_config(checkpoint)["config"]
    return {
        "checkpoint": str(checkpoint),
        "checkpoint_sha256": checkpoint_digest(checkpoint),
        "interaction": config["interaction"],
        "sim_header": config["sim_header"],
        "pooled": "normalised mean of the prepared frames weighted by the video-side WTI weights",
    }


def clip_spec(saved: dict, feature_framerate: float, slice_framepos: int):
    """How the videos of an index (and ``jobs/explain.py``'s video) are decoded for the
    retriever checkpoint whose ``config.json`` is ``saved``: its frame count and size."""
    from ingest.video import ClipSpec

    config = saved["config"]
    return ClipSpec(
        feature_framerate,
        config["max_frames"],
        slice_framepos,
        config["clip_config"]["vision_config"]["image_size"],
    )


def add_encoded(writer, batch: dict) -> None:
    """Append ``jobs.encode.ClipEncoder`` rows (a batch of columns) to a ``retrieval.store.IndexWriter``."""
    from retrieval.store import IndexRows

    writer.add(
        IndexRows(
            list(batch["video_id"]),
            batch["frames"],
            batch["weights"],
            batch["mask"],
            batch["pooled"],
        ),
        list(batch["thumbnail"]),
    )


def write_index(
    encoded,
    output_dir: Path | None,
    info: dict | None = None,
    rows_per_segment: int = 50_000,
    keep: set[str] | None = None,
    append: bool = False,
) -> tuple[dict | None, dict]:
    """Write ``encoded`` (``jobs.encode.ClipEncoder`` rows, a Ray Dataset) as an index under
    ``output_dir`` (None: write nothing), in one pass that also keeps the rows of the video
    ids in ``keep`` in memory (the test videos, for evaluation). Returns (manifest, kept columns).
    """
    import numpy as np

    from retrieval.store import IndexWriter

    writer = (
        IndexWriter(output_dir, rows_per_segment, info=info, append=append)
        if output_dir is not None
        else None
    )
    kept, started, done = [], time.time(), 0
    for batch in encoded.iter_batches(batch_size=256, batch_format="numpy"):
        if writer is not None:
            add_encoded(writer, batch)
        if keep is not None:
            rows = np.isin(batch["video_id"], list(keep))
            kept.append(
                {column: values[rows] for column, values in batch.items() if column != "thumbnail"}
            )
        done += len(batch["video_id"])
        print(f"encoded {done} videos ({done / (time.time() - started):.1f}/s)", flush=True)
    columns = (
        {column: np.concatenate([part[column] for part in kept]) for column in kept[0]}
        if kept
        else {}
    )
    if writer is None:
        return None, columns
    manifest = writer.close()
    manifest["replaced"] = writer.replaced
    return manifest, columns


def build_index(
    checkpoint: Path,
    clips,
    output_dir: Path,
    use_gpu: bool = False,
    rows_per_segment: int = 50_000,
    keep: set[str] | None = None,
    append: bool = False,
    compute_dtype: str = "fp32",
) -> tuple[dict, dict]:
    """Encode ``clips`` (the clip job's rows) into an index under ``output_dir`` (``append``:
    into new segments of the index there) with the model computing in ``compute_dtype``;
    returns (manifest, the kept rows' encodings) as ``write_index``."""
    from jobs.encode import ClipEncoder, encode

    return write_index(
        encode(clips, ClipEncoder, checkpoint, use_gpu, 16, compute_dtype),
        output_dir,
        index_info(checkpoint),
        rows_per_segment,
        keep,
        append,
    )


def parse_args(argv):
    from jobs.args import DEFAULT_SYNTHETIC_DIR, PRECISIONS
    from jobs.cli import Parser, Switch, positive_int

    parser = Parser(prog=PROG, description=__doc__)
    add = parser.add_argument
    add("--checkpoint", default="runs/wti/checkpoint", help="retriever checkpoint folder")
    add(
        "--features_path",
        default=None,
        help="folder of videos (default: the synthetic corpus the main job made)",
    )
    add(
        "--output_dir", default=None, help="index folder (default: the checkpoint's sibling index/)"
    )
    add("--feature_framerate", type=float, default=1.0, help="frames per second sampled")
    add(
        "--slice_framepos", type=int, choices=(0, 1, 2), default=2, help="0 head, 1 tail, 2 uniform"
    )
    add(
        "--rows_per_segment",
        "--rows_per_shard",
        type=positive_int,
        default=50_000,
        help="videos per segment (the index's immutable storage unit)",
    )
    add(
        "--use_gpu",
        action=Switch,
        default=None,
        help="encode on GPUs (default: when the cluster has them)",
    )
    add(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="what the model computes in (jobs/train.py --help; the index stores fp16 features "
        "either way)",
    )
    add(
        "--append",
        action="store_true",
        help="add the videos of --features_path to the index in --output_dir "
        "(an id it holds is replaced); --checkpoint must be the one it was built with",
    )
    add(
        "--remove",
        nargs="+",
        metavar="VIDEO_ID",
        default=None,
        help="remove these videos from the index in --output_dir (nothing is encoded)",
    )
    add(
        "--synthetic_dir",
        default=str(DEFAULT_SYNTHETIC_DIR),
        help="where the synthetic corpus lives",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from jobs.cli import fail

    args = parse_args(argv)
    if args.remove is not None:
        if args.append:
            return fail(PROG, "--remove and --append: one change at a time")
        return remove(
            Path(args.output_dir or Path(args.checkpoint).parent / "index").resolve(), args.remove
        )
    from models.checkpoint import read_config

    checkpoint = Path(args.checkpoint).resolve()
    try:
        saved = read_config(checkpoint)
    except FileNotFoundError as err:
        return fail(PROG, f"--checkpoint: {err} (train one first: python jobs/train.py)")
    if saved.get("model") != "retriever":
        return fail(
            PROG, f"--checkpoint: {checkpoint} holds a {saved.get('model')} model, not a retriever"
        )
    if args.features_path:
        videos_dir = Path(args.features_path)
    else:  # the corpus the main job generated (the newest, if several sizes exist)
        corpora = sorted(
            Path(args.synthetic_dir).expanduser().glob("msrvtt_*/videos"),
            key=lambda p: p.stat().st_mtime,
        )
        if not corpora:
            return fail(
                PROG, "no --features_path and no synthetic corpus yet (run: python jobs/train.py)"
            )
        videos_dir = corpora[-1]

    from ingest.clips import DecodeLog, clip_dataset
    from ingest.video import find_videos

    videos = find_videos(videos_dir) if videos_dir.is_dir() else {}
    if not videos:
        return fail(PROG, f"--features_path: no video files in {videos_dir}")
    output_dir = Path(args.output_dir or checkpoint.parent / "index").resolve()
    if args.append:
        problem = check_append(output_dir, checkpoint)
        if problem:
            return fail(PROG, problem)
    spec = clip_spec(saved, args.feature_framerate, args.slice_framepos)

    from cluster import ClusterError, connect, use_gpus
    from jobs.distributed import compute_dtype
    from models.precision import is_large

    try:
        ray = connect()
    except ClusterError as err:
        return fail(PROG, str(err))
    use_gpu = use_gpus(args.use_gpu)
    if isinstance(use_gpu, str):
        return fail(PROG, use_gpu)
    try:
        dtype = compute_dtype(args.precision, use_gpu, is_large(checkpoint))
    except ValueError as err:
        return fail(PROG, str(err))
    print(
        f"indexing {len(videos)} videos from {videos_dir} with {checkpoint} ({dtype})", flush=True
    )
    collector = DecodeLog.remote()
    manifest, _ = build_index(
        checkpoint,
        clip_dataset(videos, spec, collector),
        output_dir,
        use_gpu,
        args.rows_per_segment,
        append=args.append,
        compute_dtype=dtype,
    )
    report = ray.get(collector.report.remote())
    report.write(output_dir / "skipped.jsonl")
    change = (
        f"added {len(videos) - len(report.records) - len(manifest['replaced'])} videos, replaced "
        f"{len(manifest['replaced'])}; "
        if args.append
        else ""
    )
    print(
        f"index version {manifest['version']}: {manifest['count']} videos ({len(manifest['segments'])} "
        f"segment(s), {manifest['lists']} inverted lists) in {output_dir}; {change}{report.summary('decode')}"
    )
    return 0


def check_append(output_dir: Path, checkpoint: Path) -> str | None:
    """Why ``checkpoint``'s videos cannot be appended to the index at ``output_dir`` (None: they can)."""
    from retrieval.store import read_manifest

    try:
        manifest = read_manifest(output_dir)
    except FileNotFoundError:
        return f"--append: no index at {output_dir} to add to (build it first, without --append)"
    built, given = manifest.get("checkpoint_sha256"), checkpoint_digest(checkpoint)
    if built != given:
        return (
            f"--checkpoint: the index at {output_dir} was built with a checkpoint of sha256 {str(built)[:12]}..., "
            f"this one is {given[:12]}...; its features would not be comparable (rebuild without --append)"
        )
    if not manifest.get("centroids"):
        return f"--append: the index at {output_dir} predates live updates (no inverted lists); rebuild it"
    return None


def remove(output_dir: Path, video_ids: list[str]) -> int:
    """``--remove``: the next version without ``video_ids``."""
    from jobs.cli import fail
    from retrieval.store import read_manifest, remove_videos

    try:
        read_manifest(output_dir)
    except FileNotFoundError as err:
        return fail(PROG, f"--output_dir: {err}")
    manifest, missing = remove_videos(output_dir, video_ids)
    if len(missing) == len(set(video_ids)):
        return fail(PROG, f"--remove: the index at {output_dir} holds none of {', '.join(missing)}")
    note = f"; not in the index (nothing to remove): {', '.join(missing)}" if missing else ""
    print(
        f"index version {manifest['version']}: removed {len(set(video_ids)) - len(missing)} videos, "
        f"{manifest['count']} left in {output_dir}{note}"
    )
    return 0


if __name__ == "__main__":
    from jobs.cli import run

    run(main)
