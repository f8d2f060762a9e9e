"""bench/gpu.py's dry run on the CPU (``--device cpu --small``): every step of the GPU
checklist runs or says why not, within its limit, and the report files are written."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # Ray Train starts twice

ROOT = Path(__file__).resolve().parents[2]


def test_the_gpu_checklist_dry_run_passes_on_the_cpu(tmp_path):
    done = subprocess.run(
        [sys.executable, "bench/gpu.py", "--device", "cpu", "--small", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
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
    for model in ("retriever", "pitvqa"):
        (row,) = report["steps"][f"train_{model}"]["result"]["results"]
        assert row["precision"] == "bf16" and row["ray_train"]["samples_per_s"] > 0
    table = (tmp_path / "gpu.md").read_text()
    assert all(f"| {name} |" in table for name in names)
