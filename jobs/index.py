"""Encode a video collection with a trained retriever into a sharded retrieval index.

    python jobs/index.py                                          # runs/wti/checkpoint over its synthetic corpus
    python jobs/index.py --checkpoint DIR --features_path VIDEOS --output_dir DIR/index

Ray Data decodes the videos (the clip job, streamed: nothing but the index is written), an
actor pool encodes them (one GPU per actor when the cluster has GPUs), and the driver
writes the rows into storage shards (``serve.index``): per video its id, prepared frame
features (fp16), frame mask, video-side WTI weights, pooled vector and a thumbnail. The
manifest records the checkpoint, the count, the dimensions and the shard layout.
``serve run serve.app`` serves ``runs/wti/index`` by default. Ray comes from RAY_ADDRESS or
starts locally.
"""
from __future__ import annotations

import hashlib
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import ray  # noqa: E402
import torch  # noqa: E402

from cluster import per_gpu  # noqa: E402
from ingest.datasets import normalize_clips  # noqa: E402
from jobs.evaluate import CheckpointModel  # noqa: E402
from serve.index import IndexRows, IndexWriter, jpeg_bytes  # noqa: E402
from serve.search import pooled  # noqa: E402

PROG = "jobs/index.py"


def index_rows(model, device: str, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Decoded clips (``video_id``, uint8 ``frames [n,F,S,S,3]``, ``frame_mask``) -> index columns."""
    middle = [frames[max(0, int(mask.sum()) // 2 - 1)] for frames, mask in zip(batch["frames"], batch["frame_mask"])]
    pixels = torch.tensor(normalize_clips(batch)["pixel_values"], device=device)
    with torch.no_grad():
        feat, mask = model.encode_video(pixels, torch.tensor(batch["frame_mask"], device=device))
        frames, weights = model.prepare_video(feat, mask)
        vectors = pooled(frames, weights)
    return {
        "video_id": batch["video_id"],
        "frames": frames.half().cpu().numpy(),
        "weights": weights.float().cpu().numpy(),
        "mask": batch["frame_mask"].astype(np.uint8)[:, : frames.shape[1]],
        "pooled": vectors.cpu().numpy(),
        "thumbnail": np.array([jpeg_bytes(frame) for frame in middle], dtype=object),
    }


def add_rows(writer: IndexWriter, batch: dict[str, np.ndarray]) -> None:
    writer.add(IndexRows(list(batch["video_id"]), batch["frames"], batch["weights"], batch["mask"], batch["pooled"]),
               list(batch["thumbnail"]))


class IndexEncoder(CheckpointModel):
    """``map_batches`` callable: decoded clips -> index rows (``index_rows``)."""

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return index_rows(self.model, self.device, batch)


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
    return {"checkpoint": str(checkpoint), "checkpoint_sha256": checkpoint_digest(checkpoint),
            "interaction": config["interaction"], "sim_header": config["sim_header"],
            "pooled": "normalised mean of the prepared frames weighted by the video-side WTI weights"}


def build_index(checkpoint: Path, clips: ray.data.Dataset, output_dir: Path, use_gpu: bool = False,
                rows_per_shard: int = 50_000, batch_size: int = 16) -> dict:
    """Encode ``clips`` (the clip job's rows) into an index under ``output_dir``; returns the manifest."""
    rows = clips.map_batches(
        IndexEncoder, fn_constructor_kwargs={"checkpoint": str(checkpoint)}, batch_size=batch_size,
        compute=ray.data.ActorPoolStrategy(size=per_gpu(use_gpu)), num_gpus=1 if use_gpu else 0,
    )
    writer = IndexWriter(output_dir, rows_per_shard, info=index_info(checkpoint))
    started, done = time.time(), 0
    for batch in rows.iter_batches(batch_size=1024, batch_format="numpy"):
        add_rows(writer, batch)
        done += len(batch["video_id"])
        print(f"indexed {done} videos ({done / (time.time() - started):.0f}/s)", flush=True)
    return writer.close()


def parse_args(argv):
    from jobs.cli import Parser, positive_int

    parser = Parser(prog=PROG, description=__doc__)
    add = parser.add_argument
    add("--checkpoint", default="runs/wti/checkpoint", help="retriever checkpoint folder")
    add("--features_path", default=None, help="folder of videos (default: the synthetic corpus the main job made)")
    add("--output_dir", default=None, help="index folder (default: the checkpoint's sibling index/)")
    add("--feature_framerate", type=float, default=1.0, help="frames per second sampled")
    add("--slice_framepos", type=int, choices=(0, 1, 2), default=2, help="0 head, 1 tail, 2 uniform")
    add("--rows_per_shard", type=positive_int, default=50_000, help="videos per storage shard")
    add("--use_gpu", type=int, choices=(0, 1), default=None, help="default: 1 when the cluster has GPUs")
    add("--synthetic_dir", default=None, help="where the synthetic corpus lives (default: ~/.cache/vqa-wti-ray/synthetic)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from ingest.clips import DecodeLog, clip_dataset
    from ingest.report import Report
    from ingest.video import ClipSpec, find_videos
    from cluster import connect, use_gpus
    from jobs.cli import fail
    from jobs.data import DEFAULT_SYNTHETIC_DIR
    from models.checkpoint import read_config

    args = parse_args(argv)
    checkpoint = Path(args.checkpoint).resolve()
    try:
        saved = read_config(checkpoint)
    except FileNotFoundError as err:
        return fail(PROG, f"--checkpoint: {err} (train one first: python jobs/train.py)")
    if saved.get("model") != "retriever":
        return fail(PROG, f"--checkpoint: {checkpoint} holds a {saved.get('model')} model, not a retriever")
    if args.features_path:
        videos_dir = Path(args.features_path)
    else:  # the corpus the main job generated (the newest, if several sizes exist)
        corpora = sorted(Path(args.synthetic_dir or DEFAULT_SYNTHETIC_DIR).glob("msrvtt_*/videos"),
                         key=lambda p: p.stat().st_mtime)
        if not corpora:
            return fail(PROG, "no --features_path and no synthetic corpus yet (run: python jobs/train.py)")
        videos_dir = corpora[-1]
    videos = find_videos(videos_dir) if videos_dir.is_dir() else {}
    if not videos:
        return fail(PROG, f"--features_path: no video files in {videos_dir}")
    output_dir = Path(args.output_dir or checkpoint.parent / "index").resolve()
    config = saved["config"]
    spec = ClipSpec(args.feature_framerate, config["max_frames"], args.slice_framepos,
                    config["clip_config"]["vision_config"]["image_size"])
    ray = connect()
    use_gpu = use_gpus(None if args.use_gpu is None else bool(args.use_gpu))
    if isinstance(use_gpu, str):
        return fail(PROG, use_gpu)
    print(f"indexing {len(videos)} videos from {videos_dir} with {checkpoint}", flush=True)
    collector = DecodeLog.remote()
    manifest = build_index(checkpoint, clip_dataset(videos, spec, collector), output_dir, use_gpu,
                           args.rows_per_shard)
    report = ray.get(collector.report.remote())
    report.write(output_dir / "skipped.jsonl")
    print(f"index of {manifest['count']} videos ({len(manifest['shards'])} storage shard(s)) in {output_dir}; "
          f"{report.summary('decode')}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
