"""Clip sampling and decoding as CLIP4Clip / DRL do it, with decord.

Frames are taken at ``feature_framerate`` per second; when there are more than
``max_frames`` of them, ``slice_framepos`` keeps the head (0), the tail (1) or a uniform
spread (2, the default). Only the kept frames are decoded (``get_batch`` seeks). The short
side is resized and the centre cropped; short clips are padded and the mask says so.
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


def sample_indices(num_frames: int, fps: float, spec: ClipSpec) -> np.ndarray:
    """Frame indices to decode: one every ``fps / feature_framerate`` frames, then cut."""
    interval = max(1, int(round(fps / spec.feature_framerate)))
    candidates = np.arange(0, num_frames, interval)
    if len(candidates) <= spec.max_frames:
        return candidates
    if spec.slice_framepos == 0:
        return candidates[: spec.max_frames]
    if spec.slice_framepos == 1:
        return candidates[-spec.max_frames :]
    return candidates[np.linspace(0, len(candidates) - 1, num=spec.max_frames, dtype=int)]


def resize_center_crop(frames: np.ndarray, size: int) -> np.ndarray:
    """uint8 ``[N, H, W, 3]`` -> uint8 ``[N, size, size, 3]``: short side to ``size``, centre crop.

    PIL's antialiased bilinear resize: single-threaded and about 2.5x faster than torch's
    here, which matters when every decoding actor owns one core.
    """
    h, w = frames.shape[1:3]
    scale = size / min(h, w)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    left, top = (new_w - size) // 2, (new_h - size) // 2
    out = np.empty((len(frames), size, size, 3), np.uint8)
    for i, frame in enumerate(frames):
        image = Image.fromarray(frame).resize((new_w, new_h), Image.BILINEAR)
        out[i] = np.asarray(image.crop((left, top, left + size, top + size)))
    return out


def decode_clip(path: str | Path, spec: ClipSpec) -> tuple[np.ndarray, np.ndarray]:
    """Decode one clip: frames uint8 ``[max_frames, S, S, 3]`` (zero-padded) and mask ``[max_frames]``.

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
    indices = sample_indices(num_frames, fps, spec)
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


def find_videos(folder: str | Path) -> dict[str, Path]:
    """``video_id -> path`` for every video file directly in ``folder`` (any common extension)."""
    return {
        p.stem: p for p in sorted(Path(folder).iterdir()) if p.suffix.lower() in VIDEO_EXTENSIONS
    }
