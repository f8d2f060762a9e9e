"""bench/full_size.py's build and training stages at a small width (the full-size run is
the bench's own; its figures are in BENCHMARKS.md). It runs as a user runs it on a cluster,
in its own process with ``RAY_ADDRESS`` naming the test session's Ray, which its stages
share (without one, the bench starts a local Ray for them). The evaluation, index and service stages are left out: their entry points have
end-to-end tests of their own (tests/test_train_job.py, tests/test_evaluate_job.py,
tests/test_index_job.py, tests/serve/)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # a whole job (or cluster) per test: the full suite only

ROOT = Path(__file__).resolve().parents[2]
# Indexing and the service have end-to-end tests of their own (tests/test_index_job.py,
# tests/serve/): the dry run here is the bench's build and its two training runs.
STAGES = {"build", "train_retriever", "train_pitvqa"}


def test_the_training_stages_run_through_the_real_entry_points_in_bf16(ray_cluster, tmp_path):
    """The bench's build and training stages at bf16 (fp32 is every other test's
    precision), then the bench's feature
    cosine of the trained models, bf16 against fp32, here in-process (the bench computes it
    when given two precisions: ``--precision fp32,bf16``)."""
    from bench.full_size import feature_cosines

    done = subprocess.run(
        [
            sys.executable,
            "bench/full_size.py",
            "--size",
            "small",
            "--work_dir",
            str(tmp_path),
            "--train_videos",
            "4",
            "--test_videos",
            "2",
            "--batch_size",
            "4",
            "--stages",
            ",".join(sorted(STAGES)),
            "--precision",
            "bf16",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "RAY_ADDRESS": ray_cluster.address},
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    # The JSON line is the last of its own; a Ray message may follow it under load.
    summary = json.loads([line for line in done.stdout.splitlines() if line.startswith("{")][-1])
    assert list(summary["precisions"]) == ["bf16"]
    for precision, stages in summary["precisions"].items():
        assert set(stages) == STAGES
        assert stages["train_retriever"]["samples_per_second"] > 0
        assert stages["train_pitvqa"]["samples_per_second"] > 0
        # Each training run ends with its evaluation (what the evaluate stages re-run), in
        # the precision asked for, recorded as compute_dtype (run config and metrics).
        for model in ("wti", "pitvqa"):
            metrics = json.loads((tmp_path / precision / model / "metrics.json").read_text())
            assert metrics["compute_dtype"] == precision
            config = json.loads((tmp_path / precision / model / "train_config.json").read_text())
            assert config["compute_dtype"] == precision and config["precision"] == precision
    trained = {m: tmp_path / "bf16" / m / "checkpoint" for m in ("wti", "pitvqa")}
    cosine = feature_cosines(trained, ["fp32", "bf16"], 64)["bf16"]
    for output in ("video", "text", "vqa_logits"):
        assert 0.9 < cosine[output]["min"] <= cosine[output]["mean"] <= 1.0 + 1e-6, cosine
    assert 0 <= cosine["vqa_same_answer"] <= 1
