"""bench/evaluate.py runs end to end at a small size (a smoke test, never a speed assertion)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # a whole job per test: the full suite only

ROOT = Path(__file__).resolve().parents[2]


def test_evaluate_bench_compares_both_paths():
    done = subprocess.run(
        [sys.executable, "bench/evaluate.py", "--sizes", "400,1300", "--full_up_to", "1300"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    runs = json.loads(done.stdout.strip().splitlines()[-1])["runs"]
    assert [r["size"] for r in runs] == [400, 1300]
    assert all(
        r["metrics_equal"] is True for r in runs
    )  # the sharded ranks equal the full matrix's
    assert runs[1]["shards"] == 2  # 1300 videos span several column blocks: really sharded
    # (a shard task of a small size may end between two memory samples: its peak may read 0)
    assert all(
        r["peak_driver_mb"] > 0 and r["peak_shard_mb"] >= 0 and r["seconds"] > 0 for r in runs
    )
    assert "sharded s" in done.stdout and "full MB" in done.stdout  # the table a person reads


def test_evaluate_bench_rejects_bad_sizes():
    done = subprocess.run(
        [sys.executable, "bench/evaluate.py", "--sizes", "5k"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "--sizes" in done.stderr and "Traceback" not in done.stderr
