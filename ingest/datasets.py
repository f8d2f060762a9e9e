"""Ray Datasets of training and evaluation rows.

Images and frames are normalised, and text is tokenized, here in ``map_batches`` (on the
Ray workers), never inside the models. The tokenizer comes in as a function, ``texts ->
{"input_ids", "attention_mask"}`` (``jobs.data`` passes ``models.tokenize`` bound to the
model's tokenizer), so that this layer does not depend on the models.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import ray
from PIL import Image

from .video import frame_permutation

Tokenize = Callable[
    [list[str]], dict
]  # texts -> input_ids / attention_mask [N, L] (tensors or arrays)


def _arrays(tokens: dict) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(tokens["input_ids"]), np.asarray(tokens["attention_mask"])


CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], np.float32)


def image_pixels(images: list, image_size: int, mean=None, std=None) -> np.ndarray:
    """PIL images -> ``[B, 3, S, S]`` float32: RGB, bicubic resize to ``S`` if needed, 0-1
    (the reference's ToTensor), then ``(x - mean) / std`` when given (shape ``[1,3,1,1]``).
    Training (``qa_batch``) and the VQA service both preprocess through here."""
    arrays = []
    for image in images:
        image = image.convert("RGB")
        if image.size != (image_size, image_size):
            image = image.resize((image_size, image_size), Image.BICUBIC)
        arrays.append(np.asarray(image))
    pixels = np.stack(arrays).transpose(0, 3, 1, 2).astype(np.float32) / 255.0
    return pixels if mean is None else (pixels - mean) / std


def qa_batch(
    batch: dict[str, np.ndarray], tokenize: Tokenize, image_size: int, mean=None, std=None
) -> dict[str, np.ndarray]:
    """Rows ``image``/``question``/``label`` -> ``pixel_values [B,3,S,S]`` (0-1, as the
    reference's ToTensor, or normalised by ``mean``/``std``), ``input_ids``/``attention_mask
    [B,L]``, ``label``."""
    if mean is not None:
        mean = np.asarray(mean, np.float32).reshape(1, 3, 1, 1)
        std = np.asarray(std, np.float32).reshape(1, 3, 1, 1)
    pixels = image_pixels([Image.open(path) for path in batch["image"]], image_size, mean, std)
    input_ids, attention_mask = _arrays(tokenize(list(batch["question"])))
    return {
        "pixel_values": pixels,
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "label": batch["label"].astype(np.int64),
    }


def qa_dataset(
    rows: list[dict], tokenize: Tokenize, image_size: int, mean=None, std=None, batch_size: int = 64
) -> ray.data.Dataset:
    """VQA rows (from ``ingest.qa.read_qa``) as model-ready tensors. Ray Data tasks, not an
    actor pool: nothing is worth loading once per process, and tasks run in Ray's pooled
    workers, where an actor pool starts fresh processes (two per split, each importing the
    tokenizer's libraries) for every dataset."""
    return ray.data.from_items(rows).map_batches(
        qa_batch,
        fn_kwargs=dict(tokenize=tokenize, image_size=image_size, mean=mean, std=std),
        batch_size=batch_size,
    )


def caption_dataset(pairs: list[tuple[str, str]], tokenize: Tokenize) -> ray.data.Dataset:
    """(video_id, caption) pairs -> ``video_id``, ``input_ids``/``attention_mask [L]``."""

    def encode(batch):
        input_ids, attention_mask = _arrays(tokenize(list(batch["caption"])))
        return {
            "video_id": batch["video_id"],
            "input_ids": input_ids,
            "attention_mask": attention_mask,
        }

    items = [{"video_id": v, "caption": c} for v, c in pairs]
    return ray.data.from_items(items).map_batches(encode, batch_size=256)


def normalize_clips(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """uint8 ``frames [B,F,S,S,3]`` -> CLIP-normalised ``pixel_values [B,F,3,S,S]`` float32.

    Padded frames are normalised like the rest; ``frame_mask`` tells the model to ignore them.
    The same float32 operations in the same order as ``(x / 255 - mean) / std`` in numpy (the
    results are bit-identical), in torch: ten times faster on a CPU, as it uses every core.
    """
    import torch

    with warnings.catch_warnings():  # a read-only view of Ray's object store, only read here
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        frames = torch.from_numpy(batch["frames"])
    frames = frames.permute(0, 1, 4, 2, 3).float() / 255.0
    pixels = (frames - torch.from_numpy(CLIP_MEAN).view(3, 1, 1)) / torch.from_numpy(CLIP_STD).view(
        3, 1, 1
    )
    out = {k: v for k, v in batch.items() if k != "frames"}
    out["pixel_values"] = pixels.contiguous().numpy()
    return out


def order_frames(batch: dict[str, np.ndarray], order: int, seed: int) -> dict[str, np.ndarray]:
    """``map_batches`` over decoded clips: their frames in ``order`` (``frame_permutation``);
    a shuffle is seeded by ``seed`` and the video id, so it is the same every run."""
    import zlib

    frames, masks = batch["frames"], batch["frame_mask"]
    out = dict(batch)
    out["frames"] = np.empty_like(frames)
    for row, video_id in enumerate(batch["video_id"]):
        rng = np.random.default_rng([seed, zlib.crc32(str(video_id).encode())])
        index = frame_permutation([masks[row].sum()], frames.shape[1], order, rng)[0]
        out["frames"][row] = frames[row][index]
    return out


class CaptionExpander:
    """``map_batches`` callable over decoded clips: one output row per caption of each clip
    (a broadcast join: captions are small, clips are large), tokenized here.

    ``one_row_per_video``: one row per clip instead, holding all its captions
    (``input_ids``/``attention_mask [max_captions, L]``, zero rows past ``caption_count``);
    the training step draws one (CLIP4Clip's MSR-VTT without --expand_msrvtt_sentences)."""

    def __init__(
        self, captions: dict[str, list[str]], tokenize: Tokenize, one_row_per_video: bool = False
    ):
        self.captions, self.tokenize = captions, tokenize
        self.one_row_per_video = one_row_per_video
        self.max_captions = max((len(c) for c in captions.values()), default=1)

    def __call__(self, batch: dict[str, np.ndarray]):
        # A generator: a batch of clips without captions (say, test videos while building
        # the training rows) yields no rows rather than empty arrays.
        owners = [
            i
            for i, video_id in enumerate(batch["video_id"])
            for _ in self.captions.get(video_id, [])
        ]
        if not owners:
            return
        texts = [c for video_id in batch["video_id"] for c in self.captions.get(video_id, [])]
        input_ids, attention_mask = _arrays(self.tokenize(texts))
        if self.one_row_per_video:
            yield self._per_video(batch, np.array(owners), texts, input_ids, attention_mask)
            return
        yield {
            "video_id": batch["video_id"][owners],
            "caption": np.array(texts, dtype=object),
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "frames": batch["frames"][owners],
            "frame_mask": batch["frame_mask"][owners],
        }

    def _per_video(self, batch, owners, texts, input_ids, attention_mask):
        rows = np.unique(owners)
        shape = (len(rows), self.max_captions, input_ids.shape[1])
        ids, mask = np.zeros(shape, input_ids.dtype), np.zeros(shape, attention_mask.dtype)
        counts = np.zeros(len(rows), np.int64)
        for row, owner in enumerate(rows):
            mine = np.flatnonzero(owners == owner)
            ids[row, : len(mine)], mask[row, : len(mine)] = input_ids[mine], attention_mask[mine]
            counts[row] = len(mine)
        return {
            "video_id": batch["video_id"][rows],
            "caption": np.array(
                [texts[np.flatnonzero(owners == o)[0]] for o in rows], dtype=object
            ),
            "input_ids": ids,
            "attention_mask": mask,
            "caption_count": counts,
            "frames": batch["frames"][rows],
            "frame_mask": batch["frame_mask"][rows],
        }


def caption_clip_dataset(
    pairs: list[tuple[str, str]],
    clips: ray.data.Dataset,
    tokenize: Tokenize,
    report=None,
    decoded: set[str] | None = None,
    one_row_per_video: bool = False,
) -> ray.data.Dataset:
    """One row per caption with its video's decoded clip: ``input_ids``, ``attention_mask``,
    ``pixel_values [F,3,S,S]`` (CLIP-normalised) and ``frame_mask``.

    ``clips`` is the clip job's output (``ingest.clips.read_clips``). Captions whose video
    was skipped there have no row and, when a ``report`` is given, are listed in it as
    ``caption_without_video``; ``decoded`` (the clips' video ids) saves reading them again.
    """
    captions: dict[str, list[str]] = {}
    for video_id, caption in pairs:
        captions.setdefault(video_id, []).append(caption)
    if report is not None:
        if decoded is None:
            decoded = set(clips.select_columns(["video_id"]).to_pandas()["video_id"])
        for video_id, caption in pairs:
            if video_id not in decoded:
                report.add(
                    "caption_without_video",
                    video_id,
                    f"no decoded clip for caption {caption[:60]!r}",
                )
    expand = CaptionExpander(captions, tokenize, one_row_per_video)
    return clips.map_batches(expand, batch_size=1).map_batches(normalize_clips)
