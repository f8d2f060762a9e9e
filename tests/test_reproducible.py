"""The same command with the same seed, on the same machine and worker count, gives the same
numbers: per-epoch losses and validation metrics (``history.jsonl``) and ``metrics.json``,
bit for bit, for both models (two Ray Train workers, so that the split between them counts).
The retriever's first run is conftest's packed run, which loses a worker in epoch 2 and
resumes from epoch 1's checkpoint: the recovery changes nothing either."""

import json

import pytest
from helpers import history, packed_args

from jobs import train

pytestmark = pytest.mark.slow


def outcome(output_dir) -> tuple[list[dict], dict]:
    """What a run computed: its history without the timings, and its metrics."""
    timings = ("seconds", "time")
    rows = [{k: v for k, v in row.items() if k not in timings} for row in history(output_dir)]
    metrics = json.loads((output_dir / "metrics.json").read_text())
    metrics.pop("checkpoint")  # where it was evaluated from: the run's own folder
    return rows, metrics


def twice(tmp_path, argv) -> list[tuple[list[dict], dict]]:
    runs = []
    for name in ("first", "second"):
        out = tmp_path / name
        assert train.main([*argv, "--output_dir", str(out)]) == 0
        runs.append(outcome(out))
    return runs


def test_the_retriever_trained_twice_with_one_seed_gives_identical_numbers(
    packed_run, synthetic_dir, tmp_path
):
    code, recovered = packed_run  # the same command with --inject_failure 15 --max_failures 1
    assert code == 0 and (recovered / ".injected_failure").exists()
    assert train.main(packed_args(synthetic_dir, tmp_path / "unbroken")) == 0
    first, second = outcome(recovered), outcome(tmp_path / "unbroken")
    assert len(first[0]) == 2 and first[0][0]["steps"] == 80 // 8  # 16 videos x 5 captions
    assert first == second


def test_pitvqa_trained_twice_with_one_seed_gives_identical_numbers(
    ray_local, synthetic_dir, tmp_path
):
    argv = [
        "--model",
        "pitvqa",
        "--synthetic_dir",
        str(synthetic_dir),
        "--epochs",
        "1",  # 2841 questions (11 blocks): the epoch's shuffle, the split over 2 workers
        "--batch_size",
        "64",
        "--image_size",
        "32",
        "--n_display",
        "0",
        "--num_workers",
        "2",
        "--seed",
        "7",
    ]
    first, second = twice(tmp_path, argv)
    assert len(first[0]) == 1 and first[1]["num_questions"] > 256  # more than one block of rows
    assert first == second
