"""PitVQA's "video to images, then preprocess images", as one Ray Data job over all videos.

1. keep one frame per second (frame index divisible by ``ceil(fps)``), named
   ``{index // fps:05d}.png`` under ``images/video_XX/``;
2. crop the box (295, 50, 935, 690) out of the 1280x720 frame and resize it to 224x224
   (bicubic).
Videos that do not open are skipped and reported before the job starts, so one bad file
never stops the others.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import ray
from PIL import Image

from .report import Report

CROP_BOX = (295, 50, 935, 690)  # left, top, right, bottom: a 640x640 square
IMAGE_SIZE = 224


def preprocess_frame(frame: np.ndarray) -> np.ndarray:
    """uint8 ``[720, 1280, 3]`` -> uint8 ``[224, 224, 3]``: the crop, then bicubic resize."""
    image = Image.fromarray(frame).crop(CROP_BOX).resize((IMAGE_SIZE, IMAGE_SIZE), Image.BICUBIC)
    return np.asarray(image)


def probe_fps(videos: dict[str, Path], report: Report) -> dict[str, float]:
    """``path -> fps`` for the videos that open; the others go to the report."""
    import decord

    fps = {}
    for path in videos.values():
        try:
            reader = decord.VideoReader(str(path), num_threads=1)
            if len(reader) == 0 or reader.get_avg_fps() <= 0:
                raise ValueError("no frames")
            fps[str(Path(path))] = reader.get_avg_fps()
        except Exception as err:
            kind = "missing_video" if not Path(path).is_file() else "bad_video"
            report.add(
                kind, str(path), str(err).splitlines()[0][:200] if str(err) else "cannot open"
            )
    return fps


class FrameWriter:
    """``map_batches`` callable: keep 1 fps, crop, resize, write PNG files."""

    def __init__(self, out_root: str, folder_of: dict[str, str], fps_of: dict[str, float]):
        self.out_root, self.folder_of, self.fps_of = Path(out_root), folder_of, fps_of

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        written = []
        for frame, index, path in zip(batch["frame"], batch["frame_index"], batch["path"]):
            fps = self.fps_of[path]
            if index % math.ceil(fps):
                continue  # keep one frame per second
            folder = self.out_root / "images" / self.folder_of[path]
            folder.mkdir(parents=True, exist_ok=True)
            target = folder / f"{int(index // fps):05d}.png"
            Image.fromarray(preprocess_frame(frame)).save(target)
            written.append(str(target))
        return {"image": np.array(written, dtype=object)}


def extract_frames(
    videos: dict[str, str | Path], out_root: str | Path, report: Report
) -> list[str]:
    """Write the 1 fps, preprocessed frames of ``videos`` (``"video_01" -> path``) under ``out_root``.

    Returns the written image paths. Uses ``ray.data.read_videos`` (one row per frame).
    """
    videos = {name: Path(path).resolve() for name, path in videos.items()}
    fps_of = probe_fps(videos, report)
    if not fps_of:
        return []
    folder_of = {
        str(Path(path)): name for name, path in videos.items() if str(Path(path)) in fps_of
    }
    ds = ray.data.read_videos(list(fps_of), include_paths=True)
    ds = ds.map_batches(
        FrameWriter,
        fn_constructor_kwargs={"out_root": str(out_root), "folder_of": folder_of, "fps_of": fps_of},
        batch_size=16,
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=2),
    )
    return sorted(row["image"] for row in ds.take_all())
