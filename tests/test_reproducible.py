"""The same command with the same seed, on the same machine and worker count, gives the same
numbers: per-epoch losses and validation metrics (``history.jsonl``) and ``metrics.json``,
bit for bit, for both models (two Ray Train workers, so that the split between them counts).
Each model's first run is one conftest makes for other tests too: the retriever's is the
packed run, which loses a worker in epoch 2 and resumes from epoch 1's checkpoint (the
recovery changes nothing either); PitVQANet's is the EndoVis18 run."""

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


def test_the_retriever_trained_twice_with_one_seed_gives_identical_numbers(
    packed_run, synthetic_dir, tmp_path
):
    code, recovered = packed_run  # the same command with --inject_failure 15 --max_failures 1
    assert code == 0 and (recovered / ".injected_failure").exists()
    assert train.main(packed_args(synthetic_dir, tmp_path / "unbroken")) == 0
    first, second = outcome(recovered), outcome(tmp_path / "unbroken")
    assert len(first[0]) == 2 and first[0][0]["steps"] == 80 // 8  # 16 videos x 5 captions
    assert first == second


def test_pitvqa_trained_twice_with_one_seed_gives_identical_numbers(endo18_run, tmp_path):
    from jobs.data import ROWS_PER_BLOCK

    code, first_out, argv, _ = endo18_run  # conftest's run: 2 workers, seed 7, endo18
    assert code == 0
    assert train.main([*argv, "--output_dir", str(tmp_path / "second")]) == 0
    first, second = outcome(first_out), outcome(tmp_path / "second")
    settings = json.loads((first_out / "train_config.json").read_text())
    # More than one block of rows: the epoch's shuffle and the split over 2 workers count.
    assert settings["num_train_rows"] > ROWS_PER_BLOCK and len(first[0][0]["worker_nodes"]) == 2
    assert len(first[0]) == 1 and first[1]["num_questions"] > 0
    assert first == second
