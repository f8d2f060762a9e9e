"""The Ray Data clip job on a real local Ray, over real files decoded by decord."""
import json
import os
import shutil

import numpy as np

from ingest.clips import read_clips, write_clips
from ingest.video import ClipSpec, find_videos


def test_bad_videos_are_skipped_and_reported(ray_local, synthetic_msrvtt, tmp_path):
    folder = tmp_path / "videos"
    shutil.copytree(synthetic_msrvtt / "videos", folder)
    good = find_videos(folder)
    (folder / "corrupt.mp4").write_bytes(os.urandom(4096))
    (folder / "empty.mp4").write_bytes(b"")
    videos = {**find_videos(folder), "missing": folder / "missing.mp4"}

    written, report = write_clips(videos, tmp_path / "out", ClipSpec(image_size=32, max_frames=6))

    assert written == len(good)
    assert report.counts() == {"bad_video": 2, "missing_video": 1}
    lines = [json.loads(line) for line in (tmp_path / "out" / "skipped.jsonl").read_text().splitlines()]
    assert sorted(os.path.basename(r["path"]) for r in lines) == ["corrupt.mp4", "empty.mp4", "missing.mp4"]

    rows = read_clips(tmp_path / "out").take_all()
    assert sorted(r["video_id"] for r in rows) == sorted(good)
    for row in rows:
        assert row["frames"].shape == (6, 32, 32, 3) and row["frames"].dtype == np.uint8
        assert row["frame_mask"].tolist() == [1, 1, 1, 1, 0, 0]  # 4 s clips at 1 fps
        assert row["frames"][:4].max() > 0  # never an all-zero clip
