"""bench/gpu.py's dry run on the CPU (``--device cpu --small``): every step of the GPU
checklist runs or says why not, within its limit, and the report files are written. Its
training steps are bench/train.py's smoke test (the plain loop and Ray Train's, at bf16)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # Ray Train starts twice

ROOT = Path(__file__).resolve().parents[2]


def test_the_gpu_checklist_dry_run_passes_on_the_cpu(ray_cluster, tmp_path):
    # The training steps share the session's Ray (RAY_ADDRESS, as bench/full_size.py's test
    # does) rather than start two of their own.
    done = subprocess.run(
        [sys.executable, "bench/gpu.py", "--device", "cpu", "--small", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "RAY_ADDRESS": ray_cluster.address},
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "gpu.json").read_text())
    names = ["gpu_tests", "wti_5k", "search", "train_retriever", "train_pitvqa", "serve"]
    assert list(report["steps"]) == names
    for name, row in report["steps"].items():
        if row["status"] == "skipped":  # only for a checkpoint this clone lacks
            assert name in ("search", "serve") and "no checkpoint" in row["why"], row
            continue
        assert row["status"] == "ok", (name, row, (tmp_path / f"{name}.log").read_text()[-2000:])
        assert (tmp_path / f"{name}.log").is_file()
    assert report["steps"]["wti_5k"]["result"]["bench"] == "wti"
    # The training steps are bench/train.py's runs (both loops, bf16 autocast, 1 thread).
    for model in ("retriever", "pitvqa"):
        (row,) = report["steps"][f"train_{model}"]["result"]["results"]
        assert row["precision"] == "bf16"
        assert row["ray_train"]["threads"] == 1  # --threads reached the Ray Train worker
        for side in ("plain", "ray_train"):
            assert row[side]["samples_per_s"] > 0
            assert row[side]["step_ms"] > 0 and row[side]["wait_ms"] >= 0
        assert row["ray_fit_seconds"] > 0
        log = (tmp_path / f"train_{model}.log").read_text()
        assert "plain" in log and "Ray Train" in log  # the table a person reads names both
    table = (tmp_path / "gpu.md").read_text()
    assert all(f"| {name} |" in table for name in names)
