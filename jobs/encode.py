"""Encoding on Ray Data: actor pools that load a checkpoint once each (on its own GPU
when the cluster has GPUs) and run ``models.encode`` or PitVQANet over a dataset.

    texts  = encode(captions_ds, TextEncoder, checkpoint, use_gpu)   # row, features, weights, pooled
    videos = encode(clips_ds, ClipEncoder, checkpoint, use_gpu)      # index rows (jobs/index.py)
    answers = encode(vqa_ds, VQAPredictor, checkpoint, use_gpu)      # label, pred, confidence

Evaluation, indexing and the benchmarks all encode through here; the service encodes its
queries with the same ``models.encode`` functions.
"""

from __future__ import annotations

import io

import numpy as np
import ray
import torch

from cluster import per_gpu
from ingest.datasets import normalize_clips
from models import load_checkpoint
from models.device import pick_device
from models.encode import encode_texts, encode_videos
from models.precision import autocast


class CheckpointActor:
    """Loads the checkpoint once per actor, on its GPU when it has one; its models compute
    in ``compute_dtype`` (``models.precision``; the outputs are fp32)."""

    def __init__(self, checkpoint: str, compute_dtype: str = "fp32"):
        self.device = pick_device()
        self.model, self.tokenizer = load_checkpoint(checkpoint, device=self.device)
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
    """``ds`` through a pool of ``udf`` actors (one per GPU, or one on CPUs), lazily."""
    return ds.map_batches(
        udf,
        fn_constructor_kwargs={"checkpoint": str(checkpoint), "compute_dtype": compute_dtype},
        batch_size=batch_size,
        compute=ray.data.ActorPoolStrategy(size=per_gpu(use_gpu)),
        num_gpus=1 if use_gpu else 0,
        num_cpus=0 if use_gpu else 1,
    )


def collect(ds: ray.data.Dataset) -> dict[str, np.ndarray]:
    """Every row of an encoded dataset as stacked columns, in the dataset's order."""
    parts = list(ds.iter_batches(batch_size=1024, batch_format="numpy"))
    if not parts:
        return {}
    return {column: np.concatenate([part[column] for part in parts]) for column in parts[0]}
