"""Small, learnable datasets generated from a seed, in the real on-disk layouts.

MSR-VTT layout: short real video files (PyAV, MPEG-4 Part 2: byte-for-byte reproducible, unlike x264 here) of one coloured shape moving in one
direction, with several captions per video that say which shape, colour, size and
direction. A retriever that reads both the frames (colour, shape, size) and their order
(direction) can find the right clip; one that ignores the video cannot.
"""
from __future__ import annotations

import csv
import itertools
import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

COLORS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (50, 80, 230), "yellow": (230, 210, 40)}
SHAPES = ("circle", "square", "triangle")
SIZES = ("small", "big")
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
TEMPLATES = (
    "a {color} {shape} moves {where}",
    "a {size} {color} {shape} is moving {where}",
    "the {color} {shape} slides {where}",
    "{size} {color} {shape} going {where}",
    "a {shape} in {color} travels {where}",
)


@dataclass(frozen=True)
class Clip:
    video_id: str
    color: str
    shape: str
    size: str
    direction: str

    def captions(self) -> list[str]:
        where = {"left": "to the left", "right": "to the right", "up": "up", "down": "down"}[self.direction]
        return [t.format(color=self.color, shape=self.shape, size=self.size, where=where) for t in TEMPLATES]


def draw_frame(clip: Clip, t: float, width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """One RGB frame at time ``t`` in [0, 1]: grey noisy background, the shape on its path."""
    frame = np.full((height, width, 3), 90, dtype=np.int16) + rng.integers(-12, 13, (height, width, 1))
    radius = (0.16 if clip.size == "big" else 0.09) * min(width, height)
    dx, dy = DIRECTIONS[clip.direction]
    cx = width / 2 + dx * (t - 0.5) * (width - 2.5 * radius)
    cy = height / 2 + dy * (t - 0.5) * (height - 2.5 * radius)
    yy, xx = np.mgrid[0:height, 0:width]
    if clip.shape == "circle":
        inside = (xx - cx) ** 2 + (yy - cy) ** 2 <= radius**2
    elif clip.shape == "square":
        inside = (abs(xx - cx) <= radius * 0.85) & (abs(yy - cy) <= radius * 0.85)
    else:  # triangle pointing up
        inside = (yy >= cy - radius) & (yy <= cy + radius) & (abs(xx - cx) <= (yy - (cy - radius)) / 2)
    frame[inside] = COLORS[clip.color]
    return frame.clip(0, 255).astype(np.uint8)


def write_video(path: Path, frames: list[np.ndarray], fps: int, codec: str = "mpeg4") -> None:
    import av

    height, width = frames[0].shape[:2]
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index, frame in enumerate(frames):
            picture = av.VideoFrame.from_ndarray(frame, format="rgb24")
            picture.pts = index  # explicit timestamps: without them the output varies run to run
            container.mux(stream.encode(picture))
        container.mux(stream.encode())


def make_msrvtt(root: str | Path, num_train: int = 240, num_test: int = 48, seconds: int = 4, fps: int = 8,
                width: int = 80, height: int = 80, seed: int = 0) -> Path:
    """Write an MSR-VTT-layout corpus under ``root``; returns ``root``.

    ``videos/videoN.mp4``, ``MSRVTT_train.9k.csv``, ``MSRVTT_JSFUSION_test.csv`` and
    ``MSRVTT_data.json`` (CLIP4Clip's layout). Test videos have distinct attribute
    combinations, so each test caption has exactly one right answer.
    """
    root = Path(root)
    combos = list(itertools.product(COLORS, SHAPES, SIZES, DIRECTIONS))
    if num_test > len(combos):
        raise ValueError(f"num_test is at most {len(combos)} (one per attribute combination)")
    rng = random.Random(seed)
    test_combos = rng.sample(combos, num_test)
    train_combos = [rng.choice(combos) for _ in range(num_train)]
    clips = [Clip(f"video{i}", *c) for i, c in enumerate(train_combos + test_combos)]
    (root / "videos").mkdir(parents=True, exist_ok=True)
    for i, clip in enumerate(clips):
        noise = np.random.default_rng(seed * 100003 + i)
        n = seconds * fps
        write_video(root / "videos" / f"{clip.video_id}.mp4",
                    [draw_frame(clip, k / (n - 1), width, height, noise) for k in range(n)], fps)
    train, test = clips[:num_train], clips[num_train:]
    with (root / "MSRVTT_train.9k.csv").open("w", newline="") as f:
        csv.writer(f).writerows([["video_id"]] + [[c.video_id] for c in train])
    with (root / "MSRVTT_JSFUSION_test.csv").open("w", newline="") as f:
        rows = [["key", "vid_key", "video_id", "sentence"]]
        rows += [[f"ret{i}", f"msr{c.video_id[5:]}", c.video_id, rng.choice(c.captions())] for i, c in enumerate(test)]
        csv.writer(f).writerows(rows)
    sentences = [{"video_id": c.video_id, "caption": cap, "sen_id": k}
                 for k, (c, cap) in enumerate((c, cap) for c in train for cap in c.captions())]
    videos = [{"video_id": c.video_id, "split": "train" if i < num_train else "test", "id": i} for i, c in enumerate(clips)]
    (root / "MSRVTT_data.json").write_text(json.dumps({"sentences": sentences, "videos": videos}))
    (root / "attributes.json").write_text(json.dumps({c.video_id: c.__dict__ for c in clips}))
    return root
