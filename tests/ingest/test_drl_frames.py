"""The retriever's frames equal DRL's: the same frame positions and, after CLIP's
normalisation, the same pixels as DRL's decord loader with its torchvision transform, within
1e-5. The expected frames were computed once by DRL's code path in a torchvision venv
(tests/fixtures/drl_frames/make.py says how) on the encoded videos kept beside them: odd
sizes, portrait, 4:3, square, one already at the crop size, a 29.97 fps one, a window."""

import json
from pathlib import Path

import decord
import numpy as np
import pytest

from ingest.datasets import normalize_clips
from ingest.video import ClipSpec, decode_clip, sample_indices

FIXTURE = Path(__file__).parents[1] / "fixtures" / "drl_frames"
CASES = [  # the fixture's cases, as make.py lists them
    ("wide", "wide_57x43.mp4", 40, 1, 12, None),
    ("wide_3fps", "wide_57x43.mp4", 32, 3, 5, None),
    ("portrait", "portrait_43x77.mp4", 40, 2, 4, None),
    ("exact_no_resize", "exact_40x56.avi", 40, 1, 12, None),
    ("square", "square_100.mp4", 40, 2, 3, None),
    ("ntsc_window", "ntsc_64x48.mp4", 40, 1, 12, 3),
    ("ntsc_uniform", "ntsc_64x48.mp4", 36, 2, 5, None),
]


@pytest.fixture(scope="module")
def reference():
    return np.load(FIXTURE / "reference.npz"), json.loads((FIXTURE / "reference.json").read_text())


@pytest.mark.parametrize(
    "case,file,size,framerate,max_frames,end", CASES, ids=[c[0] for c in CASES]
)
def test_frames_equal_drls_transform(reference, case, file, size, framerate, max_frames, end):
    frames, meta = reference
    spec = ClipSpec(framerate, max_frames, 2, size)
    reader = decord.VideoReader(str(FIXTURE / file), num_threads=1)
    positions = sample_indices(len(reader), reader.get_avg_fps(), spec, end)
    assert positions.tolist() == meta[case]["positions"]

    clip, mask = decode_clip(FIXTURE / file, spec, end_seconds=end)
    pixels = normalize_clips({"frames": clip[None]})["pixel_values"][0]
    expected = frames[case]
    assert mask.sum() == len(expected)
    assert pixels[: len(expected)].shape == expected.shape
    np.testing.assert_allclose(pixels[: len(expected)], expected, atol=1e-5, rtol=0)
