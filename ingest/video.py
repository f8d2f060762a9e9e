"""Clip sampling and decoding as CLIP4Clip / DRL do it, with decord.

Frames are taken at ``feature_framerate`` per second (every ``round(fps / rate)``-th frame
from the window's first, as DRL's decord loader ``_get_rawvideo_dec``); when there are more
than ``max_frames`` of them, ``slice_framepos`` keeps the head (0), the tail (1) or a uniform
spread (2, the default, and DRL's only). Only the kept frames are decoded (``get_batch``
seeks). Each frame then goes through CLIP's transform as torchvision computes it on a PIL
image (``Resize(S, BICUBIC)`` + ``CenterCrop(S)``, the DRL/CLIP4Clip/OpenAI preprocessing):
the pixels equal DRL's within 1e-5 after normalisation (tests/ingest/test_drl_frames.py).
Short clips are padded and the mask says so.

CLIP4Clip's own extractor (``rawvideo_util.py``, cv2) samples differently: it reads every
frame and keeps one each ``int(fps)`` frames, one second apart from the window start. The
project follows DRL's decord loader (docs/data.md says where the two differ).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v")


class BadVideo(Exception):
    """A video that cannot give the frames asked of it. ``kind`` names the problem."""

    def __init__(self, kind: str, reason: str):
        super().__init__(reason)
        self.kind = kind


@dataclass(frozen=True)
class ClipSpec:
    feature_framerate: float = 1.0
    max_frames: int = 12
    slice_framepos: int = 2  # 0 head, 1 tail, 2 uniform
    image_size: int = 224

    def __post_init__(self):
        if self.slice_framepos not in (0, 1, 2):
            raise ValueError(f"slice_framepos must be 0, 1 or 2, got {self.slice_framepos}")
        if self.feature_framerate <= 0 or self.max_frames < 1 or self.image_size < 1:
            raise ValueError(f"bad clip settings: {self}")


def sample_indices(
    num_frames: int, fps: float, spec: ClipSpec, end_seconds: float | None = None
) -> np.ndarray:
    """Frame indices to decode: one every ``round(fps / feature_framerate)`` frames of the
    window ``[0, end_seconds]`` (None: the whole video; DRL's last frame
    ``int(min(int(end) * fps, len - 1))``), then cut to ``max_frames``."""
    interval = max(1, int(round(fps / spec.feature_framerate)))
    end = end_seconds
    if end is not None:
        end = max(int(end), 1)  # DRL: an empty window [0, 0] becomes [0, 1]
    last = num_frames - 1 if end is None else int(min(end * fps, num_frames - 1))
    candidates = np.arange(0, last + 1, interval)
    if len(candidates) <= spec.max_frames:
        return candidates
    if spec.slice_framepos == 0:
        return candidates[: spec.max_frames]
    if spec.slice_framepos == 1:
        return candidates[-spec.max_frames :]
    return candidates[np.linspace(0, len(candidates) - 1, num=spec.max_frames, dtype=int)]


def frame_permutation(counts, num_frames: int, order: int, rng: np.random.Generator) -> np.ndarray:
    """``[B, num_frames]`` gather indices that reorder each clip's first ``counts[b]`` (real)
    frames, as CLIP4Clip's ``process_frame_order`` does after the cut and before padding: 0
    as they are, 1 reversed, 2 shuffled by ``rng``. Padding stays where it is."""
    index = np.tile(np.arange(num_frames), (len(counts), 1))
    for row, count in enumerate(counts):
        count = int(count)
        if order == 1:
            index[row, :count] = np.arange(count)[::-1]
        elif order == 2:
            index[row, :count] = rng.permutation(count)
    return index


def resized_size(width: int, height: int, size: int) -> tuple[int, int]:
    """torchvision's ``Resize(size)`` output ``(w, h)``: the short side becomes ``size``, the
    long side ``int(size * long / short)`` (truncated, as torchvision computes it)."""
    short, long = min(width, height), max(width, height)
    new_short, new_long = size, int(size * long / short)
    return (new_short, new_long) if width <= height else (new_long, new_short)


def resize_center_crop(frames: np.ndarray, size: int) -> np.ndarray:
    """uint8 ``[N, H, W, 3]`` -> uint8 ``[N, size, size, 3]``, as torchvision's
    ``Resize(size, BICUBIC)`` + ``CenterCrop(size)`` on a PIL image: PIL's antialiased
    bicubic resize to ``resized_size`` (none when the frame already has it), then the crop at
    ``int(round((side - size) / 2))``."""
    h, w = frames.shape[1:3]
    new_w, new_h = resized_size(w, h, size)
    left, top = int(round((new_w - size) / 2.0)), int(round((new_h - size) / 2.0))
    out = np.empty((len(frames), size, size, 3), np.uint8)
    for i, frame in enumerate(frames):
        image = Image.fromarray(frame)
        if image.size != (new_w, new_h):
            image = image.resize((new_w, new_h), Image.BICUBIC)
        out[i] = np.asarray(image.crop((left, top, left + size, top + size)).convert("RGB"))
    return out


def decode_clip(
    path: str | Path, spec: ClipSpec, end_seconds: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Decode one clip (of the window ``[0, end_seconds]`` when given): frames uint8 ``[max_frames, S, S, 3]`` (zero-padded) and mask ``[max_frames]``.

    Raises ``BadVideo`` for a missing file, one that does not open or decode, or one that
    has fewer decodable frames than its header promises. Never returns an all-padding clip.
    """
    import decord

    path = Path(path)
    if not path.is_file():
        raise BadVideo("missing_video", "no such file")
    if path.stat().st_size == 0:
        raise BadVideo("bad_video", "empty file")
    try:
        reader = decord.VideoReader(str(path), num_threads=1)
        num_frames, fps = len(reader), reader.get_avg_fps()
    except Exception as err:  # decord raises its own DECORDError and RuntimeError
        raise BadVideo("bad_video", f"cannot open: {str(err).splitlines()[0][:200]}") from None
    if num_frames == 0 or not fps or fps <= 0:
        raise BadVideo("bad_video", f"no frames (count {num_frames}, fps {fps})")
    indices = sample_indices(num_frames, fps, spec, end_seconds)
    try:
        frames = reader.get_batch(indices.tolist()).asnumpy()
    except Exception as err:
        raise BadVideo(
            "short_video",
            f"header says {num_frames} frames; decoding frames {indices.tolist()} "
            f"failed: {str(err).splitlines()[0][:160]}",
        ) from None
    finally:
        # decord's decoding thread reads ahead until its reader is freed: left alive through
        # the resize, it decodes frames nobody asked for (7% more CPU, bench/decode.py).
        del reader
    if len(frames) != len(indices):
        raise BadVideo("short_video", f"asked for {len(indices)} frames, decoded {len(frames)}")
    clip = np.zeros((spec.max_frames, spec.image_size, spec.image_size, 3), dtype=np.uint8)
    clip[: len(frames)] = resize_center_crop(frames, spec.image_size)
    mask = np.zeros(spec.max_frames, dtype=np.uint8)
    mask[: len(frames)] = 1
    return clip, mask


def find_videos(
    folder: str | Path, recursive: bool = False, with_extension: bool = False
) -> dict[str, Path]:
    """``video_id -> path`` for every video file in ``folder`` (any common extension): directly
    in it (MSR-VTT), or anywhere under it (``recursive``, as CLIP4Clip's other loaders walk
    it). The id is the file's stem, or its whole name (``with_extension``: DiDeMo's ids)."""
    files = Path(folder).rglob("*") if recursive else Path(folder).iterdir()
    return {
        (p.name if with_extension else p.stem): p
        for p in sorted(files)
        if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file()
    }
