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
    lines = [
        json.loads(line) for line in (tmp_path / "out" / "skipped.jsonl").read_text().splitlines()
    ]
    assert sorted(os.path.basename(r["path"]) for r in lines) == [
        "corrupt.mp4",
        "empty.mp4",
        "missing.mp4",
    ]

    rows = read_clips(tmp_path / "out").take_all()
    assert sorted(r["video_id"] for r in rows) == sorted(good)
    for row in rows:
        assert row["frames"].shape == (6, 32, 32, 3) and row["frames"].dtype == np.uint8
        assert row["frame_mask"].tolist() == [1, 1, 1, 1, 0, 0]  # 4 s clips at 1 fps
        assert row["frames"][:4].max() > 0  # never an all-zero clip


def test_the_cache_decodes_only_new_or_changed_videos(
    ray_local, synthetic_msrvtt, tmp_path, capsys
):
    """Keyed by each file's path, size and mtime: a second run reuses every clip; a new
    video and a changed one are decoded, and the changed one's old clip is never read."""
    from ingest.clips import MANIFEST, clip_ids, update_clips

    folder = tmp_path / "videos"
    shutil.copytree(synthetic_msrvtt / "videos", folder)
    videos = dict(sorted(find_videos(folder).items())[:4])
    spec, out = ClipSpec(image_size=16, max_frames=4), tmp_path / "cache"
    first = update_clips({**videos, "missing": folder / "missing.mp4"}, out, spec)
    assert (first.reused, first.decoded, first.report.counts()) == (0, 4, {"missing_video": 1})

    again = update_clips(videos, out, spec)
    assert (again.reused, again.decoded, again.skipped) == (
        4,
        0,
        0,
    )  # the skip was of a video not asked for now

    names = list(videos)
    new_id, changed_id = "video_new", names[0]
    shutil.copy(synthetic_msrvtt / "videos" / "video10.mp4", folder / f"{new_id}.mp4")
    shutil.copy(
        synthetic_msrvtt / "videos" / "video11.mp4", videos[changed_id]
    )  # other content, same name
    videos[new_id] = folder / f"{new_id}.mp4"
    third = update_clips(videos, out, spec)
    assert (third.reused, third.decoded) == (3, 2)
    assert "reused 3" in third.summary() and "decoded 2" in third.summary()

    rows = {r["video_id"]: r for r in read_clips(out, list(videos)).take_all()}
    assert sorted(rows) == sorted(videos) and sorted(clip_ids(out, list(videos))) == sorted(videos)
    reference = update_clips(
        {"ref": synthetic_msrvtt / "videos" / "video11.mp4"}, tmp_path / "ref", spec
    )
    assert reference.decoded == 1
    want = read_clips(tmp_path / "ref").take_all()[0]["frames"]
    np.testing.assert_array_equal(
        rows[changed_id]["frames"], want
    )  # the new content, not the old clip
    assert json.loads((out / MANIFEST).read_text())[changed_id]["file"].startswith("part00002_")


def test_an_interrupted_update_leaves_the_previous_cache(ray_local, synthetic_msrvtt, tmp_path):
    """New files are written before the manifest: files of a run that died are ignored, then
    deleted, and the clips already decoded stay reused."""
    from ingest.clips import update_clips

    videos = dict(sorted(find_videos(synthetic_msrvtt / "videos").items())[:2])
    spec, out = ClipSpec(image_size=16, max_frames=4), tmp_path / "cache"
    update_clips(videos, out, spec)
    stray = out / "clips" / "part00002_00000.parquet"
    shutil.copy(
        next((out / "clips").glob("part00001_*.parquet")), stray
    )  # as if a run died before its manifest
    assert sorted(r["video_id"] for r in read_clips(out).take_all()) == sorted(videos)
    again = update_clips(videos, out, spec)
    assert (again.reused, again.decoded) == (2, 0) and not stray.exists()
