"""bench/decode.py runs end to end on a small folder (a smoke test, never a speed assertion).

It runs as a user runs it, in its own process with its own Ray."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ingest.synthetic import make_msrvtt
from ingest.video import ClipSpec, decode_clip, find_videos

pytestmark = pytest.mark.slow  # a whole job (or cluster) per test: the full suite only

ROOT = Path(__file__).resolve().parents[2]


def test_decode_bench_counts_the_same_frames_on_both_sides(tmp_path):
    root = make_msrvtt(tmp_path, num_train=3, num_test=0, seconds=3, fps=4)
    files = list(find_videos(root / "videos").values())
    done = subprocess.run(
        [
            sys.executable,
            "bench/decode.py",
            "--data",
            str(root / "videos"),
            "--videos",
            "5",
            "--workers",
            "1",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    # 5 clips cycle through the 3 files: the first two are decoded twice.
    expected = sum(int(decode_clip(files[i % 3], ClipSpec())[1].sum()) for i in range(5))
    assert (summary["clips"], summary["files"], summary["frames"]) == (5, 3, expected)
    assert summary["speedup"] > 0 and summary["first_ray_data_job_s"] > 0
