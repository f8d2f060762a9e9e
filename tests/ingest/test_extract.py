"""PitVQA's video-to-image job on a real local Ray, over real videos."""

import numpy as np
from PIL import Image

from ingest.extract import CROP_BOX, extract_frames, preprocess_frame
from ingest.qa import read_qa
from ingest.report import Report
from ingest.synthetic import make_pit24, write_video


def test_preprocess_crops_the_box_then_resizes():
    frame = np.zeros((720, 1280, 3), np.uint8)
    left, top, right, bottom = CROP_BOX
    frame[top : top + 64, left : left + 64] = 255  # the box's top-left corner
    frame[:, :left] = 128  # outside the box: must vanish
    out = preprocess_frame(frame)
    assert out.shape == (224, 224, 3)
    assert out[:20, :20].min() > 240 and out[40:, 40:].max() < 10


def test_keeps_one_frame_per_second_with_reference_names(ray_local, tmp_path):
    # 3.2 s at 5 fps: frames 0, 5, 10, 15 are kept and named 00000..00003. Each frame's
    # brightness encodes its index, so the test can tell which frame landed where.
    frames = [np.full((720, 1280, 3), 10 * i, np.uint8) for i in range(16)]
    write_video(tmp_path / "clip.mp4", frames, fps=5)
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    report = Report()
    written = extract_frames(
        {"video_03": tmp_path / "clip.mp4", "video_04": tmp_path / "broken.mp4"},
        tmp_path / "out",
        report,
    )
    names = [p.split("/")[-2] + "/" + p.split("/")[-1] for p in written]
    assert names == [f"video_03/{i:05d}.png" for i in range(4)]
    for second, path in enumerate(written):
        assert abs(np.asarray(Image.open(path)).mean() - 50 * second) < 4
    assert report.counts() == {"bad_video": 1}


def test_synthetic_pit24_tree_reads(ray_local, tmp_path):
    root = make_pit24(tmp_path, videos=3, seconds=2, fps=4)
    assert sorted(p.name for p in (root / "images" / "video_01").iterdir()) == [
        "00000.png",
        "00001.png",
    ]
    report = Report()
    rows = read_qa("pit24", root, "train", report) + read_qa("pit24", root, "val", report)
    assert report.records == []
    assert {r["image"].split("/")[-2] for r in rows} == {"video_01", "video_02", "video_03"}
    assert {"What is the surgical phase?", "How many instruments are there?"} <= {
        r["question"] for r in rows
    }
