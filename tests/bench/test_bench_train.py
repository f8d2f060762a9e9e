"""bench/train.py runs end to end at a small size (a smoke test, never a speed assertion).

It runs as a user runs it, in its own process with its own Ray: Ray Train's detached
helpers from a fit() inside the shared test Ray were seen to stall later Ray Data jobs of
the same session (see docs/decisions.md)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # a whole job (or cluster) per test: the full suite only

ROOT = Path(__file__).resolve().parents[2]


def test_train_bench_runs_both_loops_at_each_precision():
    done = subprocess.run(
        [
            sys.executable,
            "bench/train.py",
            "--steps",
            "3",
            "--epochs",
            "2",
            "--batch",
            "4",
            "--frames",
            "2",
            "--size",
            "32",
            "--threads",
            "1",
            "--precision",
            "fp32,bf16",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert [row["precision"] for row in summary["results"]] == ["fp32", "bf16"]
    for row in summary["results"]:
        assert row["ray_train"]["threads"] == 1  # --threads reached the Ray Train worker
        for side in ("plain", "ray_train"):
            assert row[side]["samples_per_s"] > 0
            assert row[side]["step_ms"] > 0 and row[side]["wait_ms"] >= 0
        assert row["ray_fit_seconds"] > 0
    # The table a person reads names both loops.
    assert "plain" in done.stdout and "Ray Train" in done.stdout
