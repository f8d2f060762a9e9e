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

COLORS = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (50, 80, 230),
    "yellow": (230, 210, 40),
}
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
        where = {"left": "to the left", "right": "to the right", "up": "up", "down": "down"}[
            self.direction
        ]
        return [
            t.format(color=self.color, shape=self.shape, size=self.size, where=where)
            for t in TEMPLATES
        ]


def draw_frame(
    clip: Clip, t: float, width: int, height: int, rng: np.random.Generator
) -> np.ndarray:
    """One RGB frame at time ``t`` in [0, 1]: grey noisy background, the shape on its path."""
    frame = np.full((height, width, 3), 90, dtype=np.int16) + rng.integers(
        -12, 13, (height, width, 1)
    )
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
        inside = (
            (yy >= cy - radius) & (yy <= cy + radius) & (abs(xx - cx) <= (yy - (cy - radius)) / 2)
        )
    frame[inside] = COLORS[clip.color]
    return frame.clip(0, 255).astype(np.uint8)


def render_clips(
    num_clips: int,
    max_frames: int,
    image_size: int,
    seed: int = 0,
    seconds: int = 4,
    fps: int = 8,
    source_size: int = 80,
) -> tuple[list[Clip], np.ndarray]:
    """Clips like ``make_msrvtt``'s, rendered straight to the frames a 1 fps clip job keeps
    (no video file): random attributes, ``uint8 [n, max_frames, S, S, 3]``. For large
    synthetic indexes (``bench/search.py``), where encoding and decoding files would dominate."""
    from .video import ClipSpec, resize_center_crop, sample_indices

    combos = list(itertools.product(COLORS, SHAPES, SIZES, DIRECTIONS))
    rng = random.Random(seed)
    n = seconds * fps
    times = sample_indices(n, fps, ClipSpec(1.0, max_frames, 2, image_size)) / (n - 1)
    clips, frames = [], np.zeros((num_clips, max_frames, image_size, image_size, 3), np.uint8)
    for i in range(num_clips):
        clip = Clip(f"synthetic{seed}_{i}", *rng.choice(combos))
        noise = np.random.default_rng(seed * 1_000_003 + i)
        drawn = np.stack([draw_frame(clip, t, source_size, source_size, noise) for t in times])
        frames[i, : len(times)] = resize_center_crop(drawn, image_size)
        clips.append(clip)
    return clips, frames


def write_video(
    path: Path, frames: list[np.ndarray], fps: int, codec: str = "mpeg4", gop: int | None = None
) -> None:
    """Encode RGB frames; a key frame every ``gop`` frames (default: every second)."""
    import av

    height, width = frames[0].shape[:2]
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        # By default a key frame every second (the frames 1 fps sampling keeps) and enough
        # bits that shapes leaving the picture leave no ghosts behind.
        stream.codec_context.gop_size = gop or fps
        stream.bit_rate = max(400_000, width * height * fps // 4)
        for index, frame in enumerate(frames):
            picture = av.VideoFrame.from_ndarray(frame, format="rgb24")
            picture.pts = index  # explicit timestamps: without them the output varies run to run
            container.mux(stream.encode(picture))
        container.mux(stream.encode())


def sample_clips(rng: random.Random, num_train: int, num_test: int, name) -> list[Clip]:
    """Training clips (any attributes) then test clips (distinct attribute combinations, so
    that each test caption has one right answer); ``name(i)`` is the i-th clip's id."""
    combos = list(itertools.product(COLORS, SHAPES, SIZES, DIRECTIONS))
    if num_test > len(combos):
        raise ValueError(f"num_test is at most {len(combos)} (one per attribute combination)")
    test_combos = rng.sample(combos, num_test)
    train_combos = [rng.choice(combos) for _ in range(num_train)]
    return [Clip(name(i), *c) for i, c in enumerate(train_combos + test_combos)]


def write_clip_videos(
    clips: list[Clip],
    paths: dict[str, Path],
    seconds: int,
    fps: int,
    width: int,
    height: int,
    seed: int,
    codec: str = "mpeg4",
    gop: int | None = None,
) -> None:
    """Each clip's video at ``paths[clip.video_id]`` (its folder made)."""
    for i, clip in enumerate(clips):
        noise = np.random.default_rng(seed * 100003 + i)
        n = seconds * fps
        paths[clip.video_id].parent.mkdir(parents=True, exist_ok=True)
        write_video(
            paths[clip.video_id],
            [draw_frame(clip, k / (n - 1), width, height, noise) for k in range(n)],
            fps,
            codec=codec,
            gop=gop,
        )


def make_msrvtt(
    root: str | Path,
    num_train: int = 240,
    num_test: int = 48,
    seconds: int = 4,
    fps: int = 8,
    width: int = 80,
    height: int = 80,
    seed: int = 0,
    gop: int | None = None,
    codec: str = "mpeg4",
) -> Path:
    """Write an MSR-VTT-layout corpus under ``root``; returns ``root``.

    ``videos/videoN.mp4``, ``MSRVTT_train.9k.csv``, ``MSRVTT_JSFUSION_test.csv`` and
    ``MSRVTT_data.json`` (CLIP4Clip's layout). Test videos have distinct attribute
    combinations, so each test caption has exactly one right answer.
    """
    root = Path(root)
    rng = random.Random(seed)
    clips = sample_clips(rng, num_train, num_test, lambda i: f"video{i}")
    paths = {clip.video_id: root / "videos" / f"{clip.video_id}.mp4" for clip in clips}
    write_clip_videos(clips, paths, seconds, fps, width, height, seed, codec, gop)
    train, test = clips[:num_train], clips[num_train:]
    with (root / "MSRVTT_train.9k.csv").open("w", newline="") as f:
        csv.writer(f).writerows([["video_id"]] + [[c.video_id] for c in train])
    with (root / "MSRVTT_JSFUSION_test.csv").open("w", newline="") as f:
        rows = [["key", "vid_key", "video_id", "sentence"]]
        rows += [
            [f"ret{i}", f"msr{c.video_id[5:]}", c.video_id, rng.choice(c.captions())]
            for i, c in enumerate(test)
        ]
        csv.writer(f).writerows(rows)
    sentences = [
        {"video_id": c.video_id, "caption": cap, "sen_id": k}
        for k, (c, cap) in enumerate((c, cap) for c in train for cap in c.captions())
    ]
    videos = [
        {"video_id": c.video_id, "split": "train" if i < num_train else "test", "id": i}
        for i, c in enumerate(clips)
    ]
    (root / "MSRVTT_data.json").write_text(json.dumps({"sentences": sentences, "videos": videos}))
    (root / "attributes.json").write_text(json.dumps({c.video_id: c.__dict__ for c in clips}))
    return root


# --- CLIP4Clip's other benchmarks, in their layouts -----------------------------------
# The same clips as the MSR-VTT-layout corpus; each layout's annotation files, names and
# quirks (MSVD's pickle of word lists and .avi files, LSMDC's tab-separated lines, the
# ``v_`` ids of ActivityNet and DiDeMo's file names with extensions as ids, the paragraph
# protocols), so that the readers run on them as on the real downloads.

BENCHMARK_VIDEOS = {  # the video folder under the root, as CLIP4Clip's README names it
    "msvd": "MSVD_Videos",
    "lsmdc": "LSMDC_Videos",
    "activity": "Activity_Videos",
    "didemo": "DiDeMo_Videos",
}


def make_benchmark(
    datatype: str,
    root: str | Path,
    num_train: int = 240,
    num_test: int = 48,
    seconds: int = 4,
    fps: int = 8,
    size: int = 80,
    seed: int = 0,
) -> Path:
    """Write a ``datatype``-layout corpus under ``root`` (annotations at the root, videos
    under ``root / BENCHMARK_VIDEOS[datatype]``); returns ``root``."""
    import pickle

    root = Path(root)
    rng = random.Random(seed)
    videos = root / BENCHMARK_VIDEOS[datatype]
    names = {
        "msvd": lambda i: f"syn{i:04d}_{i % 7}_{i % 7 + 4}",
        "lsmdc": lambda i: f"0001_Synthetic_Movie_00.00.{i:04d}.000-00.00.{i + 4:04d}.000",
        "activity": lambda i: f"syn{i:04d}",  # the annotations say v_syn0000
        "didemo": lambda i: f"{i:08d}_synthetic" + (".mp4", ".mov", ".avi")[i % 3],
    }[datatype]
    clips = sample_clips(rng, num_train, num_test, names)
    train, test = clips[:num_train], clips[num_train:]
    if datatype == "msvd":
        paths = {c.video_id: videos / "YouTubeClips" / f"{c.video_id}.avi" for c in clips}
    elif datatype == "lsmdc":
        paths = {c.video_id: videos / "0001_Synthetic_Movie" / f"{c.video_id}.avi" for c in clips}
    elif datatype == "activity":
        paths = {c.video_id: videos / f"{c.video_id}.mp4" for c in clips}
    else:
        paths = {c.video_id: videos / c.video_id for c in clips}
    write_clip_videos(clips, paths, seconds, fps, size, size, seed)

    def write(name: str, text: str) -> None:
        (root / name).write_text(text)

    if datatype == "msvd":
        for split, part in (("train", train), ("val", test), ("test", test)):
            write(f"{split}_list.txt", "".join(f"{c.video_id}\n" for c in part))
        captions = {c.video_id: [cap.split() for cap in c.captions()] for c in clips}
        (root / "raw-captions.pkl").write_bytes(pickle.dumps(captions, protocol=4))
    elif datatype == "lsmdc":

        def line(clip: Clip, caption: str) -> str:
            return f"{clip.video_id}\t00.00.00.000\t00.00.04.000\t00.00.00.000\t00.00.04.000\t{caption}\n"

        write(
            "LSMDC16_annos_training.csv",
            "".join(line(c, cap) for c in train for cap in c.captions()[:2]),
        )
        write("LSMDC16_annos_val.csv", "".join(line(c, c.captions()[0]) for c in test))
        write(
            "LSMDC16_challenge_1000_publictect.csv",
            "".join(line(c, rng.choice(c.captions())) for c in test),
        )
    elif datatype == "activity":

        def annotations(part: list[Clip]) -> dict:
            return {
                f"v_{c.video_id}": {
                    "duration": seconds - 0.4,
                    "timestamps": [[0.0, seconds / 2], [seconds / 2, seconds - 0.4]],
                    "sentences": c.captions()[:2],
                }
                for c in part
            }

        for ids, captions, part in (
            ("train_ids.json", "train.json", train),
            ("val_ids.json", "val_1.json", test),
        ):
            write(ids, json.dumps([f"v_{c.video_id}" for c in part]))
            write(captions, json.dumps(annotations(part)))
    else:
        for split, part in (("train", train), ("val", test), ("test", test)):
            write(f"{split}_list.txt", "".join(f"{c.video_id}\n" for c in part))
            items = [
                {"video": c.video_id, "times": [[k, k]] * 4, "description": cap, "annotation_id": n}
                for n, (c, k, cap) in enumerate(
                    (c, k, cap) for c in part for k, cap in enumerate(c.captions()[:2])
                )
            ]
            write(f"{split}_data.json", json.dumps(items))
    (root / "attributes.json").write_text(json.dumps({c.video_id: c.__dict__ for c in clips}))
    return root


# --- PitVQA layout ---------------------------------------------------------------------
# Each second of a raw 1280x720 "surgical" video shows a step (the background colour,
# which also fixes the phase) and zero to two instruments (shape + colour) at two of five
# places inside the crop box that extraction keeps. The first instrument is the one in use,
# drawn large; the second is drawn small, as the annotators of PitVQA name the primary and
# the secondary instrument. Every answer follows from the frame.

STEPS = {  # step -> (phase, background colour); two steps per phase, so no phase dominates
    "nasal_corridor_creation": ("nasal_sphenoid", (120, 40, 40)),
    "anterior_sphenoidotomy": ("nasal_sphenoid", (150, 90, 60)),
    "sellotomy": ("sellar", (60, 60, 130)),
    "tumour_excision": ("sellar", (50, 120, 120)),
    "fat_graft_placement": ("closure", (130, 130, 40)),
    "nasal_packing": ("closure", (90, 110, 50)),
}
INSTRUMENTS = {  # instrument -> (shape, colour)
    "suction": ("circle", (240, 240, 240)),
    "freer_elevator": ("square", (240, 220, 40)),
    "pituitary_rongeurs": ("triangle", (40, 230, 230)),
    "spatula_dissector": ("circle", (230, 40, 230)),
    "kerrisons": ("square", (250, 140, 20)),
    "cottle": ("triangle", (30, 200, 60)),
}
PLACES = {
    "top-left": (455, 210),
    "top-right": (775, 210),
    "centre": (615, 370),
    "bottom-left": (455, 530),
    "bottom-right": (775, 530),
}
COUNTS = ("zero", "one", "two")
RADII = (90, 50)  # the first instrument (in use), the second


def _scene(video: int, second: int, seed: int) -> dict:
    rng = random.Random(seed * 7919 + video * 101 + second)
    steps = list(STEPS)
    step = steps[(video + second // 2) % len(steps)]  # a video moves through steps, one every 2 s
    count = rng.choice((0, 1, 2))
    tools = rng.sample(list(INSTRUMENTS), count)
    places = rng.sample(list(PLACES), count)
    return {"step": step, "tools": list(zip(tools, places))}


def _draw_scene(scene: dict, rng: np.random.Generator) -> np.ndarray:
    frame = np.zeros((720, 1280, 3), np.int16)
    frame[:] = STEPS[scene["step"]][1]
    frame += rng.integers(-10, 11, (720, 1280, 1))
    for (tool, place), radius in zip(scene["tools"], RADII):
        yy, xx = np.mgrid[-radius:radius, -radius:radius]
        shape, colour = INSTRUMENTS[tool]
        if shape == "circle":
            inside = xx**2 + yy**2 <= radius**2
        elif shape == "square":
            inside = (abs(xx) <= radius * 0.8) & (abs(yy) <= radius * 0.8)
        else:
            inside = abs(xx) <= (yy + radius) / 2
        cx, cy = PLACES[place]
        patch = frame[cy - radius : cy + radius, cx - radius : cx + radius]
        patch[inside] = colour
    return frame.clip(0, 255).astype(np.uint8)


def scene_qa(scene: dict) -> list[tuple[str, str]]:
    """The question/answer pairs a frame supports (PitVQA-style templates). The first
    instrument is the large one (in use), the second the small one."""
    phase = STEPS[scene["step"]][0]
    tools = scene["tools"]
    qa = [
        ("What is the surgical phase?", phase),
        ("What is the surgical step?", scene["step"]),
        ("How many instruments are there?", COUNTS[len(tools)]),
        ("What is the first instrument?", tools[0][0] if tools else "no_visible_instrument"),
        (
            "What is the second instrument?",
            tools[1][0] if len(tools) > 1 else "no_secondary_instrument",
        ),
    ]
    for ordinal, (tool, place) in zip(("first", "second"), tools):
        qa.append((f"Where is the {ordinal} instrument?", place))
        qa.append((f"Where is the {tool.replace('_', ' ')}?", place))
    return qa


def make_pit24_raw(
    root: str | Path, videos: int = 25, seconds: int = 24, fps: int = 2, seed: int = 0
) -> dict[str, Path]:
    """Raw 1280x720 videos ``root/raw/video_XX.mp4``; returns ``{"video_XX": path}``."""
    raw = Path(root) / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    out = {}
    for number in range(1, videos + 1):
        noise = np.random.default_rng(seed * 1000 + number)
        frames = [_draw_scene(_scene(number, k // fps, seed), noise) for k in range(seconds * fps)]
        out[f"video_{number:02d}"] = raw / f"video_{number:02d}.mp4"
        write_video(out[f"video_{number:02d}"], frames, fps)
    return out


def write_pit24_qa(root: str | Path, seed: int = 0) -> int:
    """One QA file per extracted frame: ``QA/video_XX/NNNNN.txt``. Returns the file count."""
    root = Path(root)
    written = 0
    for image in sorted((root / "images").glob("video_*/*.png")):
        number, second = int(image.parent.name.split("_")[1]), int(image.stem)
        folder = root / "QA" / image.parent.name
        folder.mkdir(parents=True, exist_ok=True)
        lines = [f"{q}|{a}" for q, a in scene_qa(_scene(number, second, seed))]
        (folder / f"{image.stem}.txt").write_text("\n".join(lines) + "\n")
        written += 1
    return written


def make_pit24(
    root: str | Path, videos: int = 25, seconds: int = 24, fps: int = 2, seed: int = 0
) -> Path:
    """A PitVQA-layout tree under ``root``: raw videos, then the Ray Data extraction job
    (``ingest.extract``) writes ``images/``, then one QA file per image. Needs Ray."""
    from .extract import extract_frames
    from .report import Report

    root = Path(root)
    report = Report()
    extract_frames(make_pit24_raw(root, videos, seconds, fps, seed), root, report)
    if report.records:  # our own videos: a skip here is a bug, not bad input
        raise RuntimeError(report.summary("synthetic extraction"))
    write_pit24_qa(root, seed)
    return root


# --- EndoVis18-VQA layout ----------------------------------------------------------------
# Frames of a "robotic nephrectomy": up to two tools, each a shape (which tool) in a colour
# (what it is doing) in one quadrant (where it is). The organ is always the kidney.

ENDO18_TOOLS = {
    "bipolar_forceps": "circle",
    "prograsp_forceps": "square",
    "monopolar_curved_scissors": "triangle",
}
ENDO18_ACTIONS = {
    "Idle": (230, 230, 230),
    "Grasping": (230, 200, 30),
    "Retraction": (40, 200, 230),
    "Cutting": (230, 40, 40),
    "Suction": (60, 210, 80),
}
ENDO18_PLACES = {
    "left-top": (40, 40),
    "right-top": (120, 40),
    "left-bottom": (40, 120),
    "right-bottom": (120, 120),
}
ENDO18_SEQUENCES = (1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 14, 15, 16)


def make_endo18(root: str | Path, frames: int = 6, size: int = 160, seed: int = 0) -> Path:
    """An EndoVis18-VQA-layout tree: ``seq_N/left_fr/frameNNN.png`` and
    ``seq_N/vqa/Classification/frameNNN_QA.txt`` for every sequence the split names."""
    from PIL import Image

    root = Path(root)
    for seq in ENDO18_SEQUENCES:
        (root / f"seq_{seq}" / "left_fr").mkdir(parents=True, exist_ok=True)
        (root / f"seq_{seq}" / "vqa" / "Classification").mkdir(parents=True, exist_ok=True)
        for k in range(frames):
            rng = random.Random(seed * 7919 + seq * 101 + k)
            noise = np.random.default_rng(seed * 7919 + seq * 101 + k)
            frame = np.full((size, size, 3), (150, 60, 60), np.int16) + noise.integers(
                -10, 11, (size, size, 1)
            )
            tools = rng.sample(list(ENDO18_TOOLS), rng.choice((1, 2)))
            lines = ["What organ is being operated?|kidney"]
            for tool, place in zip(tools, rng.sample(list(ENDO18_PLACES), len(tools))):
                action = rng.choice(list(ENDO18_ACTIONS))
                cx, cy = ENDO18_PLACES[place]
                yy, xx = np.mgrid[0:size, 0:size]
                shape = ENDO18_TOOLS[tool]
                if shape == "circle":
                    inside = (xx - cx) ** 2 + (yy - cy) ** 2 <= 28**2
                elif shape == "square":
                    inside = (abs(xx - cx) <= 24) & (abs(yy - cy) <= 24)
                else:
                    inside = (
                        (yy >= cy - 28) & (yy <= cy + 28) & (abs(xx - cx) <= (yy - (cy - 28)) / 2)
                    )
                frame[inside] = ENDO18_ACTIONS[action]
                lines += [
                    f"What is the state of {tool}?|{action}",
                    f"Where is {tool} located?|{place}",
                ]
            name = f"frame{k:03d}"
            Image.fromarray(frame.clip(0, 255).astype(np.uint8)).save(
                root / f"seq_{seq}" / "left_fr" / f"{name}.png"
            )
            (root / f"seq_{seq}" / "vqa" / "Classification" / f"{name}_QA.txt").write_text(
                "\n".join(lines) + "\n"
            )
    return root
