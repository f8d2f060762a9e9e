"""jobs/train.py and jobs/evaluate.py called as functions on the session's real local Ray:
tiny models, small synthetic datasets, real Ray Train workers, real checkpoints."""

import json

import jsonschema
import pytest
from helpers import VQA_SCHEMA, history, mlflow_runs, retriever_args

from jobs import evaluate, train
from models import load_checkpoint

RETRIEVAL_SCHEMA = {
    "type": "object",
    "required": ["t2v", "v2t", "num_texts", "num_videos"],
    "properties": {
        direction: {
            "type": "object",
            "required": ["R@1", "R@5", "R@10", "MdR", "MnR"],
            "additionalProperties": {"type": "number"},
        }
        for direction in ("t2v", "v2t")
    },
}


def test_one_worker_trains_then_resumes_at_the_next_epoch(
    ray_local, synthetic_dir, tmp_path, capsys
):
    out = tmp_path / "run"
    # CDCR variant 3 (DRL's weighted one) through the real objective, every step of both runs.
    # The first run indexes nothing (the second run's index is the one checked below).
    assert (
        train.main(retriever_args(synthetic_dir, out, "--epochs", "1", "--cdcr", "3", "--no-index"))
        == 0
    )
    first = history(out)
    assert not (out / "index").exists()
    assert [row["epoch"] for row in first] == [1]
    assert (out / "train" / "epoch_001" / "model" / "model.safetensors").is_file()
    assert (out / "train" / "epoch_001" / "train_state.pt").is_file()

    # The same command with more epochs continues after epoch 1 instead of starting over.
    assert train.main(retriever_args(synthetic_dir, out, "--epochs", "2", "--cdcr", "3")) == 0
    rows = history(out)
    assert [row["epoch"] for row in rows] == [1, 2]
    assert rows[0] == first[0]  # epoch 1 was not trained again
    assert rows[1]["steps"] == 80 // 8  # 16 videos x 5 captions, batch 8, the full second epoch
    # The run folder records what it trained with (the second command's settings).
    settings = json.loads((out / "train_config.json").read_text())
    assert (settings["model"], settings["epochs"], settings["cdcr"]) == ("retriever", 2, 3)
    assert settings["num_train_rows"] == 80 and settings["model_config"]["interaction"] == "wti"

    # The best epoch was copied out, rebuilds from the folder alone, and was evaluated.
    model, tokenizer = load_checkpoint(out / "checkpoint")
    assert model.config.interaction == "wti" and tokenizer is not None
    metrics = json.loads((out / "metrics.json").read_text())
    jsonschema.validate(metrics, RETRIEVAL_SCHEMA)
    assert (
        metrics["num_texts"] == 8 and metrics["num_videos"] == 8 and metrics["chance_R@1"] == 12.5
    )
    for plot in ("loss.png", "recall.png"):
        assert (out / plot).stat().st_size > 1000
    assert "results in" in capsys.readouterr().out
    # ... and the main job indexed every decoded video (16 train + 8 test) for serving.
    from retrieval.store import read_manifest

    index = read_manifest(out / "index")
    assert index["count"] == 24 and index["checkpoint"] == str(out / "checkpoint")
    # The checkpoint says how it was made, and a resume must train the same model on the
    # same data: another interaction is one line naming it, exit 2, nothing trained.
    assert json.loads((out / "checkpoint" / "train_config.json").read_text()) == settings
    argv = retriever_args(synthetic_dir, out, "--epochs", "3", "--cdcr", "3", "--interaction", "ti")
    assert train.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "interaction wti -> ti" in err[0] and "--fresh" in err[0], err
    assert [row["epoch"] for row in history(out)] == [1, 2]

    # MLflow (the local store beside the run folder): one run for the two commands, the
    # first command's flags as parameters and what the second changed as tags, each
    # epoch's metrics once, the final figures, and the run folder's files as artifacts.
    (run, steps, artifacts), *others = mlflow_runs(out, job="train")
    assert not others and run.info.status == "FINISHED"
    assert run.info.run_id == settings["mlflow_run_id"]
    assert run.data.params["epochs"] == "1" and run.data.params["cdcr"] == "3"
    assert run.data.tags["resumed_with.epochs"] == "2"
    assert [step for step, _ in steps["val_score"]] == [1, 2]
    assert [step for step, _ in steps["train_loss"]] == [1, 2]
    assert steps["final.t2v.R_at_1"][-1] == (2, metrics["t2v"]["R@1"])
    assert steps["best_val_score"][-1] == (2, max(row["val_score"] for row in rows))
    assert {
        "metrics.json",
        "history.jsonl",
        "loss.png",
        "recall.png",
        "checkpoint/model.safetensors",
        "checkpoint/train_config.json",
        "index",
    } <= artifacts


@pytest.mark.slow
def test_a_worker_that_dies_is_recovered_and_the_evaluate_cli_agrees(
    packed_run, synthetic_dir, tmp_path
):
    """One run, two checks: Ray Train recovers a worker lost at step 15 (every epoch is
    recorded), and ``jobs/evaluate.py`` rebuilds the best checkpoint from its folder alone
    and gives the training run's own numbers (sharded evaluation: tests/test_similarity.py)."""
    code, out = packed_run  # 2 workers, --inject_failure 15 --max_failures 1 --no-index
    assert code == 0
    assert (
        out / ".injected_failure"
    ).exists()  # the failure really happened (step 15 is in epoch 2)
    assert [row["epoch"] for row in history(out)] == [1, 2]
    assert not (out / "index").exists()
    trained = json.loads((out / "metrics.json").read_text())
    again = tmp_path / "again"
    code = evaluate.main(
        [
            "--checkpoint",
            str(out / "checkpoint"),
            "--synthetic_dir",
            str(synthetic_dir),
            "--synthetic_train",
            "16",
            "--synthetic_test",
            "8",
            "--output_dir",
            str(again),
            "--num_shards",
            "3",
        ]
    )
    assert code == 0
    metrics = json.loads((again / "metrics.json").read_text())
    # Shards are cut on the kernel's column-block grid (hundreds of videos a block): 8 test
    # videos are one shard whatever is asked, and metrics.json says what ran.
    assert metrics["num_shards"] == 1
    assert metrics["t2v"] == trained["t2v"] and metrics["v2t"] == trained["v2t"]
    # Only rank 0 logged, and the recovered worker group went on logging into the same
    # MLflow run: each epoch once. The evaluation is a run of its own.
    (run, steps, _), *others = mlflow_runs(out, job="train")
    assert not others and run.info.status == "FINISHED"
    assert [step for step, _ in steps["val_score"]] == [1, 2]
    (evaluation, figures, files), *others = mlflow_runs(again, job="evaluate")
    assert not others and evaluation.info.status == "FINISHED"
    assert figures["final.t2v.R_at_1"] == [(0, metrics["t2v"]["R@1"])]  # no epochs: step 0
    assert {"metrics.json", "recall.png"} <= files


@pytest.mark.slow
def test_endo18_trains_and_evaluates_end_to_end(endo18_run):
    """The EndoVis18-VQA layout from disk (``seq_N/left_fr`` + ``vqa/Classification``) through
    training on 2 workers, the 18 classes, and the per-type metrics of its three question
    types (conftest's run, which tests/test_reproducible.py runs again)."""
    code, out, _, root = endo18_run
    assert code == 0
    assert not (out.parent / "mlflow.db").exists()  # --no-mlflow: nothing tracked
    metrics = json.loads((out / "metrics.json").read_text())
    jsonschema.validate(metrics, VQA_SCHEMA)
    assert metrics["num_classes"] == 18
    assert set(metrics["per_type"]) == {"organ", "action", "position"}
    val_files = sum(
        1
        for seq in (1, 5, 16)
        for _ in (root / f"seq_{seq}" / "vqa" / "Classification").glob("*_QA.txt")
    )
    assert (
        metrics["per_type"]["organ"]["num_questions"] == val_files
    )  # one organ question per frame
    assert load_checkpoint(out / "checkpoint")[0].config.num_classes == 18


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["--epochs", "0"], "--epochs: must be at least 1"),
        (["--lr", "fast"], "invalid positive_float value"),
        (["--model", "pitvqa", "--dataset", "msrvtt"], "not a pitvqa dataset"),
        (["--preset", "base"], "needs the local weight folder(s) --clip_path"),
        (["--clip_path", "/no/such/folder"], "no such folder"),
        (["--interaction", "dp", "--cdcr", "2"], "--cdcr needs token-wise features"),
        (["--model", "pitvqa", "--dataset", "endo18"], "needs --data_root"),
        (["--train_csv", "a.csv"], "needs all of --train_csv"),
    ],
)
def test_bad_flags_exit_2_with_one_line(ray_local, tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        code = train.main(argv + ["--output_dir", str(tmp_path)])
        raise SystemExit(code)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_both_spellings_and_the_seed_command_parse():
    args = train.parse_args(
        [
            "--dataset=pit24",
            "--data_root=/d",
            "--epochs=60",
            "--batch_size=64",
            "--lr=0.00002",
            "--model",
            "pitvqa",
        ]
    )
    assert (args.dataset, args.epochs, args.batch_size, args.lr) == ("pit24", 60, 64, 2e-5)
    args = train.parse_args(
        [
            "--batch-size",
            "7",
            "--max-frames",
            "3",
            "--agg_module",
            "meanP",
            "--video_framerate",
            "2",
        ]
    )
    assert (args.batch_size, args.max_frames, args.sim_header, args.feature_framerate) == (
        7,
        3,
        "meanP",
        2.0,
    )


def test_fresh_forgets_the_earlier_run_in_its_storage(tmp_path):
    out, storage = tmp_path / "run", tmp_path / "storage"
    for path in (
        storage / "train" / "epoch_003" / "model" / "config.json",
        out / "checkpoint" / "config.json",
        out / "history.jsonl",
        out / "metrics.json",
    ):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}")
    args = train.parse_args(["--output_dir", str(out), "--storage_path", str(storage), "--fresh"])
    assert args.storage_path == str(storage)
    train.forget_run(args)
    assert not (storage / "train").exists() and not (out / "checkpoint").exists()
    assert not (out / "history.jsonl").exists()
    assert (
        out / "metrics.json"
    ).exists()  # replaced by the new run's evaluation, not deleted up front
    assert train.parse_args(["--output_dir", str(out)]).storage_path == str(out)  # the default
    assert (
        train.parse_args(["--storage_path", "s3://bucket/runs"]).storage_path == "s3://bucket/runs"
    )


def test_a_run_that_stops_reporting_fails_with_one_line_in_bounded_time(tmp_path):
    """``--stall_timeout_s``: Ray Train that reported an epoch and then nothing (the lost-node
    run that hung) stops the job with ``Stalled`` within the bound, not never."""
    import argparse
    import time

    from jobs.train import RUN_NAME, Stalled, _fit_watched

    snapshot = tmp_path / RUN_NAME / "checkpoint_manager_snapshot.json"

    class ReportsOnceThenHangs:
        def fit(self):
            snapshot.parent.mkdir(parents=True)
            snapshot.write_text("{}")  # the first epoch's report
            time.sleep(3600)

    started = time.time()
    args = argparse.Namespace(storage_path=str(tmp_path), stall_timeout_s=3.0)
    with pytest.raises(Stalled, match="reported no epoch for"):
        _fit_watched(ReportsOnceThenHangs(), args)
    assert 3.0 < time.time() - started < 10
