import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ingest.synthetic import Clip, draw_frame, write_video
from ingest.video import BadVideo, ClipSpec, decode_clip, resize_center_crop, sample_indices

ROOT = Path(__file__).resolve().parents[2]


def test_sampling_one_per_second_then_uniform():
    # 20 s at 10 fps: 20 candidates at 1 fps (0, 10, ..., 190), cut to 12.
    spec = ClipSpec(max_frames=12, slice_framepos=2)
    got = sample_indices(200, 10.0, spec)
    candidates = np.arange(0, 200, 10)
    assert got.tolist() == candidates[np.linspace(0, 19, 12, dtype=int)].tolist()
    assert got[0] == 0 and got[-1] == 190


def test_sampling_head_and_tail():
    assert sample_indices(200, 10.0, ClipSpec(max_frames=3, slice_framepos=0)).tolist() == [
        0,
        10,
        20,
    ]
    assert sample_indices(200, 10.0, ClipSpec(max_frames=3, slice_framepos=1)).tolist() == [
        170,
        180,
        190,
    ]


def test_sampling_short_video_keeps_every_candidate_and_other_rates():
    assert sample_indices(35, 10.0, ClipSpec(max_frames=12)).tolist() == [0, 10, 20, 30]
    assert sample_indices(30, 30.0, ClipSpec(feature_framerate=3, max_frames=12)).tolist() == list(
        range(0, 30, 10)
    )
    assert sample_indices(5, 29.97, ClipSpec()).tolist() == [0]


def test_bad_spec_is_rejected():
    with pytest.raises(ValueError, match="slice_framepos"):
        ClipSpec(slice_framepos=3)


def test_resize_short_side_and_centre_crop():
    frames = np.zeros((1, 60, 120, 3), np.uint8)
    frames[:, :, 55:65] = 255  # a bright vertical bar in the middle
    out = resize_center_crop(frames, 30)
    assert out.shape == (1, 30, 30, 3) and out.dtype == np.uint8
    column = out[0, 15, :, 0]
    assert column[13:17].min() > 200 and column[:8].max() < 10  # bar centred, edges cropped away


@pytest.fixture
def moving_video(tmp_path):
    clip = Clip("v", "red", "square", "big", "right")
    rng = np.random.default_rng(0)
    frames = [draw_frame(clip, k / 39, 80, 80, rng) for k in range(40)]  # 5 s at 8 fps
    path = tmp_path / "v.mp4"
    write_video(path, frames, fps=8)
    return path


def test_decode_real_video_pads_with_mask(moving_video):
    clip, mask = decode_clip(moving_video, ClipSpec(max_frames=12, image_size=32))
    assert clip.shape == (12, 32, 32, 3) and clip.dtype == np.uint8
    assert mask.tolist() == [1] * 5 + [0] * 7  # 5 s at 1 fps
    assert clip[5:].max() == 0 and clip[:5].max() > 0
    # The square moves right: the red mass's centre moves right frame by frame.
    red = (clip[:5, ..., 0].astype(int) - clip[:5, ..., 2]) > 80
    centres = [np.nonzero(r)[1].mean() for r in red]
    assert all(a < b for a, b in zip(centres, centres[1:]))


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads through /proc")
def test_decoder_threads_are_gone_before_the_resize(moving_video):
    """decord decodes ahead on a thread of its own until its reader is freed; alive through
    the resize, it costs every decoding actor 7% more CPU (BENCHMARKS.md, decoding). Counted
    in a fresh process: in the test session other libraries' threads come and go."""
    script = f"""
import os, sys
sys.path.insert(0, {str(ROOT)!r})
import ingest.video
from ingest.video import ClipSpec, decode_clip

threads = lambda: len(os.listdir("/proc/self/task"))
during, resize = [], ingest.video.resize_center_crop
ingest.video.resize_center_crop = lambda *a: during.append(threads()) or resize(*a)
before = threads()
decode_clip({str(moving_video)!r}, ClipSpec(max_frames=4, image_size=32))
print(during, before)
assert during == [before], (during, before)
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_decode_uniform_cut(moving_video):
    _, mask = decode_clip(moving_video, ClipSpec(max_frames=3, image_size=32))
    assert mask.tolist() == [1, 1, 1]


@pytest.mark.parametrize(
    "content,kind", [(None, "missing_video"), (b"", "bad_video"), (b"\x00junk" * 500, "bad_video")]
)
def test_bad_videos_raise_with_kind(tmp_path, content, kind):
    path = tmp_path / "bad.mp4"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(BadVideo) as err:
        decode_clip(path, ClipSpec())
    assert err.value.kind == kind


def test_truncated_video_is_bad(moving_video, tmp_path):
    data = moving_video.read_bytes()
    path = tmp_path / "trunc.mp4"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(BadVideo):
        decode_clip(path, ClipSpec())
