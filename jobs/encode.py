"""Encoding on Ray Data: ``models.encode`` or PitVQANet over a dataset, with the checkpoint
loaded once per process: on GPUs a pool of actors, one per GPU, each holding the model on
its GPU; on CPUs tasks, whose worker processes Ray keeps for the job's later tasks.

    texts  = encode(captions_ds, TextEncoder, checkpoint, use_gpu)   # row, features, weights, pooled
    videos = encode(clips_ds, ClipEncoder, checkpoint, use_gpu)      # index rows (jobs/index.py)
    answers = encode(vqa_ds, VQAPredictor, checkpoint, use_gpu)      # label, pred, confidence

Evaluation, indexing and the benchmarks all encode through here; the service encodes its
queries with the same ``models.encode`` functions.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import ray
import torch

from cluster import per_gpu
from ingest.datasets import normalize_clips
from models import load_checkpoint
from models.device import pick_device
from models.encode import encode_texts, encode_videos
from models.precision import autocast

# This process's last checkpoint: {(folder, its files, device): (model, tokenizer)}.
_LOADED: dict = {}


def loaded(checkpoint: str, device: str):
    """``load_checkpoint`` once per process and checkpoint: the video and text encoders of a
    job share the model, and a folder rewritten since (a resumed run's new best epoch) is
    loaded afresh. Only the last one is kept."""
    folder = Path(checkpoint)
    files = tuple(
        sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in folder.iterdir())
    )
    key = (str(folder.resolve()), files, device)
    if key not in _LOADED:
        _LOADED.clear()
        _LOADED[key] = load_checkpoint(folder, device=device)
    return _LOADED[key]


class CheckpointActor:
    """Holds the checkpoint's model (``loaded``), on its GPU when it has one; its models
    compute in ``compute_dtype`` (``models.precision``; the outputs are fp32)."""

    def __init__(self, checkpoint: str, compute_dtype: str = "fp32"):
        self.device = pick_device()
        self.model, self.tokenizer = loaded(checkpoint, self.device)
        self.compute_dtype = compute_dtype

    def autocast(self):
        return autocast(self.compute_dtype, self.device)


class TextEncoder(CheckpointActor):
    """Rows ``row``/``caption`` -> ``row`` and the caption's encoding."""

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self.autocast():
            encoded = encode_texts(self.model, self.tokenizer, list(batch["caption"]))
        return {"row": batch["row"], **encoded.numpy()}


def jpeg_bytes(frame: np.ndarray, quality: int = 85) -> bytes:
    """uint8 ``[H, W, 3]`` -> JPEG bytes."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


class ClipEncoder(CheckpointActor):
    """Decoded clips (``video_id``, uint8 ``frames [n,F,S,S,3]``, ``frame_mask``) -> index rows:
    ``video_id``, ``frames`` (prepared frame features, fp32; the index stores fp16), ``weights``, ``mask``, ``pooled`` and a JPEG ``thumbnail``
    of the middle real frame."""

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        middle = [
            frames[max(0, int(mask.sum()) // 2 - 1)]
            for frames, mask in zip(batch["frames"], batch["frame_mask"])
        ]
        with self.autocast():
            encoded = encode_videos(
                self.model, normalize_clips(batch)["pixel_values"], batch["frame_mask"]
            ).numpy()
        return {
            "video_id": batch["video_id"],
            "frames": encoded["features"],
            "weights": encoded["weights"],
            "mask": batch["frame_mask"].astype(np.uint8)[:, : encoded["features"].shape[1]],
            "pooled": encoded["pooled"],
            "thumbnail": np.array([jpeg_bytes(frame) for frame in middle], dtype=object),
        }


class VQAPredictor(CheckpointActor):
    """Model-ready VQA rows -> ``label``, predicted class ``pred`` and its probability."""

    @torch.no_grad()
    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self.autocast():
            logits = self.model(
                *(
                    torch.as_tensor(batch[k], device=self.device)
                    for k in ("pixel_values", "input_ids", "attention_mask")
                )
            )
        probs = logits.float().softmax(-1)
        return {
            "label": batch["label"],
            "pred": probs.argmax(-1).cpu().numpy(),
            "confidence": probs.max(-1).values.cpu().numpy(),
        }


def encode(
    ds: ray.data.Dataset,
    udf: type[CheckpointActor],
    checkpoint,
    use_gpu: bool,
    batch_size: int = 32,
    compute_dtype: str = "fp32",
) -> ray.data.Dataset:
    """``ds`` through ``udf``, lazily: a pool of ``udf`` actors, one per GPU; on CPUs one
    task at a time (as one actor would run), in a worker process that has usually loaded
    the checkpoint already. An actor is a fresh process that imports torch and transformers
    and loads the model (7 CPU-s on a 2-core machine); a job's tasks reuse its workers, so
    indexing, evaluation and the next command of a session pay that once."""
    kwargs = {"checkpoint": str(checkpoint), "compute_dtype": compute_dtype}
    if use_gpu:
        return ds.map_batches(
            udf,
            fn_constructor_kwargs=kwargs,
            batch_size=batch_size,
            compute=ray.data.ActorPoolStrategy(size=per_gpu(use_gpu)),
            num_gpus=1,
            num_cpus=0,
        )
    return ds.map_batches(
        _on_cpu,
        fn_kwargs={"udf": udf, **kwargs},
        batch_size=batch_size,
        compute=ray.data.TaskPoolStrategy(size=1),
        num_cpus=1,
    )


def _on_cpu(batch: dict[str, np.ndarray], udf: type[CheckpointActor], **kwargs) -> dict:
    return udf(**kwargs)(batch)


def collect(ds: ray.data.Dataset) -> dict[str, np.ndarray]:
    """Every row of an encoded dataset as stacked columns, in the dataset's order."""
    parts = list(ds.iter_batches(batch_size=1024, batch_format="numpy"))
    if not parts:
        return {}
    return {column: np.concatenate([part[column] for part in parts]) for column in parts[0]}
