"""Experiment tracking with MLflow: one run per ``jobs/train.py`` / ``jobs/evaluate.py``.

The driver opens the run (the resolved flags as parameters), Ray Train's rank 0 logs each
epoch's row as it ends (``log_epoch``), and the driver closes it with the final figures of
``metrics.json`` and the run folder's files as artifacts (``finish``). A resumed run (the
same ``--output_dir``, or Ray Train restarting a lost worker group) continues the same
MLflow run: its id is kept in ``train_config.json``.

The store is ``--mlflow_tracking_uri``, else ``MLFLOW_TRACKING_URI``, else a local SQLite
store beside the run folders (``runs/mlflow.db``, artifacts in ``runs/mlartifacts``): no
server to start; ``mlflow ui --backend-store-uri sqlite:///runs/mlflow.db`` shows it. On a
cluster whose workers do not share the driver's disk, give a server's URI; an epoch that
rank 0 could not log is logged by the driver at the end from ``history.jsonl``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from pathlib import Path

STORE = "mlflow.db"  # the local store, in the parent of --output_dir (runs/ by default)
ARTIFACTS = "mlartifacts"
EXPERIMENTS = {"retriever": "wti", "pitvqa": "pitvqa"}  # by model kind (``jobs.args.MODELS``)
BEST = "best_val_score"  # the checkpoint's validation score: what ``run=best`` ranks by
FINAL = "final."  # metrics.json's figures, beside the epochs' metrics of the same names
# The run folder's files logged as artifacts (folders whole), when present.
OUTPUTS = (
    "metrics.json",
    "history.jsonl",
    "train_config.json",
    "skipped.jsonl",
    "loss.png",
    "recall.png",
    "confusion.png",
    "checkpoint",
    "index",
)
EVALUATION = ("metrics.json", "recall.png", "confusion.png")  # an evaluation's files
_MAX_PARAMS = 100  # per log_batch call (MLflow's limit)
_MAX_VALUE = 6000  # characters of a parameter value (MLflow's limit)


def local_store(folder: str | Path) -> str:
    """The embedded store for run folders inside ``folder``."""
    return f"sqlite:///{Path(folder).resolve() / STORE}"


def tracking_uri(args) -> str | None:
    """Where this job's run goes, or None with ``--no-mlflow``."""
    if not getattr(args, "mlflow", True):
        return None
    return (
        args.mlflow_tracking_uri
        or os.environ.get("MLFLOW_TRACKING_URI")
        or local_store(Path(args.output_dir).parent)
    )


def client(uri: str):
    """An ``MlflowClient`` for ``uri``, with MLflow's own INFO lines (database migrations,
    experiment creation) kept off the job's output."""
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _experiment_id(mlflow, uri: str, name: str) -> str:
    found = mlflow.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = None
    if uri.startswith("sqlite:///"):  # artifacts beside the store, not in the working directory
        location = (Path(uri.removeprefix("sqlite:///")).parent / ARTIFACTS / name).as_uri()
    return mlflow.create_experiment(name, artifact_location=location)


def _params(args) -> dict[str, str]:
    """The resolved flags as strings (MLflow's parameter values)."""
    out = {}
    for name, value in sorted(vars(args).items()):
        if name.startswith("_") or callable(value):
            continue
        out[name] = str(value)[:_MAX_VALUE]
    return out


def start(args, kind: str, run_name: str, run_id: str | None = None) -> str | None:
    """Open (or with ``run_id``, reopen) this job's MLflow run and log the flags; returns
    its id, or None when tracking is off. A store that cannot be reached stops nothing: one
    warning line, and the job runs untracked."""
    uri = tracking_uri(args)
    if uri is None:
        return None
    from mlflow.entities import Param, RunStatus

    try:
        mlflow = client(uri)
        params = _params(args)
        if run_id is not None and _exists(mlflow, run_id):  # a resumed run
            mlflow.update_run(run_id, status=RunStatus.to_string(RunStatus.RUNNING))
            logged = mlflow.get_run(run_id).data.params
            # A parameter is written once: what the resuming command changed (more epochs,
            # another learning rate) is a tag ``resumed_with.<flag>``.
            for name, value in params.items():
                if name in logged and logged[name] != value:
                    mlflow.set_tag(run_id, f"resumed_with.{name}", value)
            params = {k: v for k, v in params.items() if k not in logged}
        else:
            experiment = args.experiment_name or EXPERIMENTS[kind]
            tags = {"model": kind, "job": run_name, "output_dir": str(args.output_dir)}
            run = mlflow.create_run(
                _experiment_id(mlflow, uri, experiment), run_name=run_name, tags=tags
            )
            run_id = run.info.run_id
        items = [Param(k, v) for k, v in params.items()]
        for i in range(0, len(items), _MAX_PARAMS):
            mlflow.log_batch(run_id, params=items[i : i + _MAX_PARAMS])
    except Exception as err:  # tracking never stops a training run
        print(f"MLflow: not tracking this run ({uri}: {err})", flush=True)
        return None
    print(f"MLflow run {run_id} in {uri}", flush=True)
    return run_id


def _exists(mlflow, run_id: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        mlflow.get_run(run_id)
    except MlflowException:
        return False
    return True


def _metrics(row: dict, step: int, prefix: str = ""):
    """``row``'s finite numbers as MLflow metrics (names MLflow accepts)."""
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    return [
        Metric(prefix + name.replace("@", "_at_"), float(value), now, step)
        for name, value in row.items()
        if name not in ("epoch", "time")
        and isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    ]


def log_epoch(uri: str | None, run_id: str | None, row: dict) -> None:
    """Rank 0, after each epoch: the epoch's row (loss, validation metrics, seconds) at
    step = epoch. A failure is one line; the driver logs what is missing at the end."""
    if not (uri and run_id):
        return
    try:
        client(uri).log_batch(run_id, metrics=_metrics(row, int(row["epoch"])))
    except Exception as err:  # tracking never stops a training run
        print(f"MLflow: epoch {row.get('epoch')} not logged ({err})", flush=True)


def finish(
    uri: str | None,
    run_id: str | None,
    output_dir: Path,
    metrics: dict,
    history: list[dict] | None = None,
    files: tuple[str, ...] = OUTPUTS,
) -> None:
    """The driver, at the end: the epochs rank 0 did not log, the best epoch's validation
    score (``best_val_score``), ``metrics.json``'s figures and ``files`` of the run folder;
    the run is then FINISHED."""
    if not (uri and run_id):
        return
    try:
        mlflow = client(uri)
        logged = {m.step for m in mlflow.get_metric_history(run_id, "val_score")}
        rows = [row for row in history or [] if row["epoch"] not in logged]
        batch = [m for row in rows for m in _metrics(row, int(row["epoch"]))]
        # At the step of the last epoch: a resumed run's figures follow its first ones.
        last = int(history[-1]["epoch"]) if history else 0
        if history:
            batch += _metrics({BEST: max(row["val_score"] for row in history)}, last)
        batch += _metrics(_flat(metrics, FINAL), last)
        for i in range(0, len(batch), 1000):
            mlflow.log_batch(run_id, metrics=batch[i : i + 1000])
        for name in files:
            path = output_dir / name
            if path.is_dir():
                mlflow.log_artifacts(run_id, str(path), artifact_path=name)
            elif path.is_file():
                mlflow.log_artifact(run_id, str(path))
        mlflow.set_terminated(run_id, status="FINISHED")
    except Exception as err:  # the run's own outputs are written already
        print(f"MLflow: run {run_id} not completed in {uri} ({err})", flush=True)


def fail_run(uri: str | None, run_id: str | None, status: str = "FAILED") -> None:
    """Mark the run ended without results (a stalled or interrupted job)."""
    if uri and run_id:
        with contextlib.suppress(Exception):  # the job's own error is what the user needs
            client(uri).set_terminated(run_id, status=status)


def _flat(metrics: dict, prefix: str = "") -> dict:
    """``metrics.json``'s numbers, nested sections joined with '.' (per-type accuracy)."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def find_run(uri: str, run: str, experiment: str) -> dict:
    """``run`` (an id, or ``best``: the finished run of ``experiment`` with the highest
    ``best_val_score``) as ``{"run_id", "model", "output_dir"}``. Raises ``LookupError``
    with one line when there is none."""
    from mlflow.exceptions import MlflowException

    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise LookupError(f"run={run}: no MLflow store at {uri} (run python jobs/train.py first)")
    mlflow = client(uri)
    if run == "best":
        found = mlflow.get_experiment_by_name(experiment)
        runs = (
            mlflow.search_runs(
                [found.experiment_id],
                filter_string=f"metrics.{BEST} >= 0 and attributes.status = 'FINISHED'",
                order_by=[f"metrics.{BEST} DESC", "attributes.start_time DESC"],
                max_results=1,
            )
            if found
            else []
        )
        if not runs:
            raise LookupError(
                f"run=best: no finished training run in experiment {experiment!r} of {uri}"
            )
        chosen = runs[0]
    else:
        try:
            chosen = mlflow.get_run(run)
        except MlflowException:
            raise LookupError(f"run={run}: no such run in {uri}") from None
    tags = chosen.data.tags
    return {
        "run_id": chosen.info.run_id,
        "model": tags.get("model"),
        "output_dir": tags.get("output_dir"),
    }


def run_folder(uri: str, run: str, experiment: str) -> tuple[str, Path]:
    """The model kind and a local folder holding ``checkpoint/`` (and the retriever's
    ``index/``) of ``run``: its ``--output_dir`` where this machine sees it, else its
    artifacts downloaded once into ``runs/mlflow_downloads/<run id>``."""
    found = find_run(uri, run, experiment)
    folder = Path(found["output_dir"] or "")
    if found["output_dir"] and (folder / "checkpoint" / "config.json").is_file():
        return found["model"], folder
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from mlflow.artifacts import download_artifacts

    target = (Path("runs") / "mlflow_downloads" / found["run_id"]).resolve()
    if not (target / "checkpoint" / "config.json").is_file():
        target.mkdir(parents=True, exist_ok=True)
        for name in ("checkpoint", "index"):
            try:
                download_artifacts(
                    run_id=found["run_id"],
                    artifact_path=name,
                    dst_path=str(target),
                    tracking_uri=uri,
                )
            except Exception:  # a PitVQANet run has no index
                if name == "checkpoint":
                    raise LookupError(f"run {found['run_id']} has no checkpoint artifact") from None
    return found["model"], target
