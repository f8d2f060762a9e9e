"""cluster/tracking.py on a local store, without Ray: a run opened, continued and closed as the
jobs do it, the run a service is pointed at, and what happens when tracking cannot work."""

import argparse

import pytest

from cluster import tracking


def args_for(output_dir, **extra):
    return argparse.Namespace(
        output_dir=str(output_dir),
        mlflow=True,
        mlflow_tracking_uri=None,
        experiment_name=None,
        **extra,
    )


def test_a_resumed_run_continues_and_best_picks_the_highest_score(tmp_path, capsys):
    uri = tracking.local_store(tmp_path)
    first = tracking.start(args_for(tmp_path / "a", epochs=1, lr=0.1), "retriever", "train")
    assert f"MLflow run {first} in {uri}" in capsys.readouterr().out
    tracking.log_epoch(uri, first, {"epoch": 1, "val_score": 10.0, "R@1": 9.0, "train_loss": 2.0})
    # The same output folder again: the same run; a changed flag becomes a tag.
    again = tracking.start(args_for(tmp_path / "a", epochs=3, lr=0.1), "retriever", "train", first)
    assert again == first
    history = [{"epoch": e, "val_score": 10.0 + e, "train_loss": 1.0 / e} for e in (1, 2, 3)]
    tracking.finish(uri, first, tmp_path / "a", {"t2v": {"R@1": 12.5}}, history, files=())
    other = tracking.start(args_for(tmp_path / "b", epochs=1, lr=0.1), "retriever", "train")
    tracking.finish(uri, other, tmp_path / "b", {}, [{"epoch": 1, "val_score": 5.0}], files=())

    store = tracking.client(uri)
    run = store.get_run(first)
    assert run.info.status == "FINISHED" and run.data.params["epochs"] == "1"
    assert run.data.tags["resumed_with.epochs"] == "3" and "resumed_with.lr" not in run.data.tags
    # Epoch 1 came from rank 0; the driver added the two it had not logged, once each.
    assert [m.step for m in store.get_metric_history(first, "val_score")] == [1, 2, 3]
    assert [m.value for m in store.get_metric_history(first, "R_at_1")] == [9.0]
    assert run.data.metrics["best_val_score"] == 13.0
    assert run.data.metrics["final.t2v.R_at_1"] == 12.5
    assert tracking.find_run(uri, "best", "wti")["run_id"] == first
    assert tracking.find_run(uri, other, "wti")["output_dir"] == str(tmp_path / "b")


def test_tracking_off_or_unreachable_stops_nothing(tmp_path, capsys):
    off = argparse.Namespace(output_dir=str(tmp_path / "r"), mlflow=False, mlflow_tracking_uri=None)
    assert tracking.tracking_uri(off) is None and tracking.start(off, "pitvqa", "train") is None
    assert not (tmp_path / "mlflow.db").exists()
    unreachable = args_for(tmp_path / "r")
    unreachable.mlflow_tracking_uri = "http://127.0.0.1:9/"  # nothing listens on port 9
    import os

    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    try:
        assert tracking.start(unreachable, "pitvqa", "train") is None
    finally:
        del os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("MLflow: not tracking this run"), out


@pytest.mark.parametrize("run, message", [("best", "no MLflow store"), ("0123abc", "no such run")])
def test_serving_a_run_that_is_not_there_is_one_line(tmp_path, monkeypatch, run, message):
    from serve.app import from_run
    from serve.schemas import AppArgs

    if message == "no such run":
        tracking.start(args_for(tmp_path / "x"), "retriever", "train")
    with pytest.raises(ValueError, match=message):
        from_run(AppArgs(run=run, mlflow_tracking_uri=tracking.local_store(tmp_path)))
