"""The retriever's frames equal DRL's: the same frame positions and, after CLIP's
normalisation, the same pixels as DRL's decord loader with its torchvision transform, within
1e-5. The expected frames were computed once by DRL's code path in a torchvision venv
(tests/fixtures/drl_frames/make.py says how) on the encoded videos kept beside them: odd
sizes, portrait, 4:3, square, one already at the crop size, a 29.97 fps one, a window."""

import importlib.util
import json
from pathlib import Path

import decord
import numpy as np
import pytest

from ingest.datasets import normalize_clips
from ingest.video import ClipSpec, decode_clip, sample_indices

FIXTURE = Path(__file__).parents[1] / "fixtures" / "drl_frames"


def _fixture_cases():
    """The cases as make.py, which computed the reference frames, lists them."""
    spec = importlib.util.spec_from_file_location("drl_frames_make", FIXTURE / "make.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.CASES


CASES = _fixture_cases()


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
