"""bench/train.py runs end to end at a small size (a smoke test, never a speed assertion)."""
import json

from bench.train import main


def test_train_bench_runs_both_loops(ray_local, capsys):
    assert main(["--steps", "3", "--epochs", "2", "--batch", "4", "--frames", "2", "--size", "32", "--threads", "1"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["ray_worker_threads"] == 1
    assert summary["samples_per_s"]["plain"] > 0 and summary["samples_per_s"]["ray_train"] > 0
    assert summary["ratio"] == summary["samples_per_s"]["ray_train"] / summary["samples_per_s"]["plain"]
