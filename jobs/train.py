"""Train on Ray Train, then evaluate: the WTI retriever (default) or PitVQANet.

    python jobs/train.py                      # tiny retriever on the built-in synthetic MSR-VTT data
    python jobs/train.py --model pitvqa       # tiny PitVQANet on the built-in synthetic pit24 data
    python jobs/train.py --dataset=pit24 --data_root=DIR --epochs=60 --batch_size=64 --lr=0.00002 \\
        --preset base --vit_path V --blip_path B --gpt2_path G
    python jobs/train.py --model wti --dataset msrvtt --train_csv ... --val_csv ... --data_path ... \\
        --features_path VIDEOS --preset base --clip_path CLIP ...       # CLIP4Clip / DRL flags
    ray job submit --working-dir . -- python jobs/train.py --output_dir /shared/runs/wti

Ray comes from RAY_ADDRESS (or the job's cluster) and starts locally otherwise. Running
the same command again with the same --output_dir (and --storage_path) resumes after the
last finished epoch; a worker or a node lost mid-run is recovered the same way, up to
--max_failures times.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Only the flag modules at the top: --help and a bad flag answer before Ray or torch load.
from jobs.args import MODELS, build_parser, model_for, resolve  # noqa: E402
from jobs.cli import fail  # noqa: E402

PROG = "jobs/train.py"
RUN_NAME = "train"  # Ray Train's run folder inside --output_dir


def parse_args(argv):
    args = build_parser(PROG, __doc__).parse_args(argv)
    args.model = model_for(args.model, args.dataset)
    args.kind = MODELS[args.model]
    args.output_dir = str(Path(args.output_dir or f"runs/{args.model}").resolve())
    args.synthetic_dir = str(Path(args.synthetic_dir).expanduser().resolve())
    if not args.storage_path:
        args.storage_path = args.output_dir
    elif "://" not in args.storage_path:
        args.storage_path = str(Path(args.storage_path).resolve())
    return args


def _worker_env(config) -> dict:
    env = {"RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}
    if config.deterministic:  # cuBLAS's deterministic mode; read when CUDA starts
        env["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
    return env


def fit(config, tokenizer, data, args, workers: int):
    """Ray Train V2: one TorchTrainer over ``jobs.train_loop`` with ``config`` (a
    ``TrainConfig``); returns its Result."""
    import ray
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from cluster.ray_private import EveryValidationRow
    from jobs.train_loop import train_loop

    trainer = TorchTrainer(
        train_loop,
        # The tokenizer as a reference: Train's controller unpickles this config, and a
        # tokenizer in it made that process import transformers (7.4 -> 5.6 CPU-s a run).
        train_loop_config={"config": config.to_dict(), "tokenizer": ray.put(tokenizer)},
        scaling_config=ScalingConfig(
            num_workers=workers, use_gpu=config.use_gpu, placement_strategy=args.placement_strategy
        ),
        run_config=RunConfig(
            name=RUN_NAME,
            storage_path=args.storage_path,
            logging_config=LoggingConfig(log_level="WARNING"),
            # Worker prints reach the console once (the print patch would echo each line twice).
            worker_runtime_env={"env_vars": _worker_env(config)},
            failure_config=FailureConfig(max_failures=args.max_failures),
            # Keeps the best epoch by validation score (R@1 / macro-F1) and always the latest.
            checkpoint_config=CheckpointConfig(
                num_to_keep=1, checkpoint_score_attribute="val_score", checkpoint_score_order="max"
            ),
        ),
        datasets={"train": data.train, "val": data.val},
        dataset_config=EveryValidationRow(),
    )
    # Train's controller collects each worker's report when it polls the workers (every 2 s
    # by default), and a worker's next report waits for that: epochs shorter than the poll
    # (the tiny presets, resumed runs' last steps) idled up to 2 s each. 0.25 s costs an
    # actor call per worker four times a second. The controller inherits RAY_TRAIN_* vars.
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.25")
    sigint = signal.getsignal(signal.SIGINT)
    try:
        return _fit_watched(trainer, args)
    finally:
        # fit() leaves its Ctrl-C handler installed (in the main thread only), and the
        # handler holds Ray Train's controller actor (and through it the dataset-split
        # actors) alive until the job ends: four idle processes beside the evaluation and
        # indexing that follow.
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, sigint)


class Stalled(RuntimeError):
    """Ray Train reported no epoch for longer than ``--stall_timeout_s`` allows."""


def _last_report(args) -> float | None:
    """When Ray Train last recorded a report (its checkpoint manager's snapshot), if ever."""
    import pyarrow.fs

    fs, root = pyarrow.fs.FileSystem.from_uri(args.storage_path)
    info = fs.get_file_info(f"{root}/{RUN_NAME}/checkpoint_manager_snapshot.json")
    return info.mtime.timestamp() if info.mtime is not None else None


def _fit_watched(trainer, args):
    """``trainer.fit()``, watched: once an epoch has been reported, a run that reports none
    for ``--stall_timeout_s`` (or three times the longest epoch so far) is stuck (a lost-node
    run hung like that, 1 in about 11, in issue #22): ``Stalled``, not a hang. The fit
    itself goes on in a daemon thread until the process ends (its actors end with it)."""
    outcome: dict = {}

    def fit():
        try:
            outcome["result"] = trainer.fit()
        except BaseException as err:  # handed to the caller's thread
            outcome["error"] = err

    thread = threading.Thread(target=fit, name="ray-train-fit", daemon=True)
    thread.start()
    seen = _last_report(args)  # a resumed run's earlier reports
    moved, longest = time.time(), 0.0
    poll_s = min(2.0, args.stall_timeout_s / 6)  # the bound holds within a sixth of it
    while thread.is_alive():
        thread.join(timeout=poll_s)
        stamp, now = _last_report(args), time.time()
        if stamp != seen:
            if seen is not None:
                longest = max(longest, now - moved)
            seen, moved = stamp, now
        elif seen is not None and now - moved > max(args.stall_timeout_s, 3 * longest):
            raise Stalled(
                f"Ray Train reported no epoch for {now - moved:.0f} s (--stall_timeout_s "
                f"{args.stall_timeout_s:.0f}; the longest epoch took {longest:.0f} s): stopped; "
                "run the same command again to resume from the last epoch"
            )
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def write_outputs(result, output_dir: Path, config) -> tuple[Path, list[dict]]:
    """Copy the best epoch's model to ``checkpoint/`` with the run's ``train_config.json``
    (replaced whole: a service or an evaluation reading it never sees half a folder), write
    ``history.jsonl`` from the last epoch's checkpoint and plot it. Both are read from Ray Train's storage (a local folder,
    a shared one or S3), whichever node wrote them."""
    import pyarrow.fs

    from jobs.checkpoints import HISTORY
    from jobs.plots import plot_history
    from jobs.recipes import recipe_module
    from models.folders import replace_folder

    if not result.best_checkpoints:
        raise RuntimeError(f"training finished without a checkpoint in {result.path}")
    # The highest validation score; ties go to the earlier epoch.
    best, _ = max(
        result.best_checkpoints, key=lambda kept: (kept[1]["val_score"], -kept[1]["epoch"])
    )
    checkpoint = output_dir / "checkpoint"
    with replace_folder(checkpoint) as staging:
        pyarrow.fs.copy_files(f"{best.path}/model", str(staging), source_filesystem=best.filesystem)
        config.write(staging)  # the checkpoint says how it was made
    latest = result.checkpoint
    with latest.filesystem.open_input_stream(f"{latest.path}/{HISTORY}") as f:
        history = json.loads(f.read())
    (output_dir / "history.jsonl").write_text("".join(json.dumps(row) + "\n" for row in history))
    plot_history(history, output_dir / "loss.png", recipe_module(config.model).METRIC)
    return checkpoint, history


def _checkpoint_to_evaluate(args, recipe, output_dir: Path) -> Path:
    """The model this --output_dir trained; else --init_model, or the CLIP as it is
    (zero-shot, as DRL's ``--do_eval 1`` without one)."""
    trained = output_dir / "checkpoint"
    if (trained / "config.json").is_file() and not getattr(args, "init_model", None):
        return trained
    starting = getattr(recipe, "starting_checkpoint", None)
    folder = starting(args, output_dir) if starting else None
    if folder is None:
        raise FileNotFoundError(
            f"--do_eval: nothing to evaluate: no {trained}, no --init_model and no CLIP "
            "weights (--pretrained_clip_name) to evaluate zero-shot"
        )
    return folder


def forget_run(args) -> None:
    """``--fresh``: delete the earlier run's epochs (in its storage) and outputs."""
    import pyarrow.fs

    fs, root = pyarrow.fs.FileSystem.from_uri(args.storage_path)
    if fs.get_file_info(f"{root}/{RUN_NAME}").type == pyarrow.fs.FileType.Directory:
        fs.delete_dir(f"{root}/{RUN_NAME}")
    output_dir = Path(args.output_dir)
    for name in ("checkpoint", "history.jsonl", "train_config.json", ".injected_failure"):
        path = output_dir / name
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    started = time.time()
    args = parse_args(argv)
    error = resolve(args, args.kind)
    if error:
        return fail(PROG, error)

    from cluster import ClusterError, connect, training_scale, wait_until_released
    from cluster.tracking import EVALUATION, fail_run, finish, start, tracking_uri
    from jobs.config import FILE as CONFIG_FILE
    from jobs.config import TrainConfig
    from jobs.data import DataError
    from jobs.distributed import compute_dtype
    from jobs.evaluate import evaluate_checkpoint
    from jobs.recipes import recipe_module

    output_dir = Path(args.output_dir)
    try:
        connect()
    except ClusterError as err:
        return fail(PROG, str(err))
    scale = training_scale(args.num_workers, args.use_gpu)
    if isinstance(scale, str):
        return fail(PROG, scale)
    workers, use_gpu = scale
    try:
        args.compute_dtype = compute_dtype(args.precision, use_gpu, args.preset == "base")
    except ValueError as err:
        return fail(PROG, str(err))
    if args.fresh:
        forget_run(args)
    output_dir.mkdir(parents=True, exist_ok=True)
    recipe = recipe_module(args.kind)  # everything about training this model
    try:
        if not args.do_train:  # CLIP4Clip's / DRL's --do_eval alone
            checkpoint = _checkpoint_to_evaluate(args, recipe, output_dir)
            run_id = start(args, args.kind, "evaluate")
            metrics = evaluate_checkpoint(args, checkpoint, output_dir, use_gpu)
            finish(tracking_uri(args), run_id, output_dir, metrics, files=EVALUATION)
            _print_results(output_dir, metrics, [], 0.0)
            return 0
        if getattr(args, "init_model", None):  # the starting weights, imported once
            args.init_checkpoint = str(recipe.starting_checkpoint(args, output_dir))
        source = recipe.read_source(args)
        tokenizer = recipe.build_tokenizer(args, source.train_texts)
        model_config = recipe.build_model_config(args, tokenizer)
        data = recipe.load_data(args, source, tokenizer, model_config)
    except (DataError, FileNotFoundError, ValueError) as err:
        return fail(PROG, str(err))
    data.report.write(output_dir / "skipped.jsonl")
    print(
        f"training {args.model} ({args.preset}) on {args.dataset}: {data.num_train_rows} training rows, "
        f"{args.epochs} epochs, global batch {args.batch_size}, {workers} {'GPU' if use_gpu else 'CPU'} worker(s), {args.compute_dtype}",
        flush=True,
    )
    config = TrainConfig.from_args(
        args,
        model=args.kind,
        model_config=model_config.to_dict(),
        num_train_rows=data.num_train_rows,
        use_gpu=use_gpu,
        labels=getattr(data, "labels", None),  # PitVQANet's answer classes
        train_labels=[int(label) for label in getattr(data, "train_labels", [])],
    )
    saved = output_dir / CONFIG_FILE
    previous = json.loads(saved.read_text()) if saved.is_file() else None
    if previous:  # the run in --output_dir is resumed: the same model and data only
        conflicts = config.resume_conflicts(previous)
        if conflicts:
            return fail(
                PROG,
                f"--output_dir {output_dir} holds a run with other model or data settings "
                f"({'; '.join(conflicts)}): give its flags to resume it, or --fresh to start over",
            )
    # One MLflow run per output folder: a resumed run continues the one it started.
    uri = tracking_uri(args)
    run_id = start(args, args.kind, RUN_NAME, (previous or {}).get("mlflow_run_id"))
    config.mlflow_tracking_uri, config.mlflow_run_id = (uri, run_id) if run_id else (None, None)
    config.write(output_dir)
    try:
        result = fit(config, tokenizer, data, args, workers)
        checkpoint, history = write_outputs(result, output_dir, config)
        wait_until_released()  # Ray Train's worker group goes down asynchronously
        metrics = recipe.after_training(args, checkpoint, data, output_dir, use_gpu)
    except Stalled as err:
        fail_run(uri, run_id)
        print(f"{PROG}: {err}", file=sys.stderr, flush=True)
        return 1
    except BaseException as err:
        fail_run(uri, run_id, "KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED")
        raise
    finish(uri, run_id, output_dir, metrics, history)
    _print_results(output_dir, metrics, history, time.time() - started)
    return 0


def _print_results(output_dir: Path, metrics: dict, history: list[dict], seconds: float) -> None:
    from jobs.evaluate import summary

    best = max(history, key=lambda row: row["val_score"])["epoch"] if history else None
    print(f"\n{summary(metrics)}")
    print(f"results in {output_dir}" + (f" (after {seconds:.0f} s)" if seconds else ""))
    print(
        f"  checkpoint/     the best epoch{f' ({best})' if best else ''}: config.json, model.safetensors, tokenizer, train_config.json"
    )
    for name, what in (
        ("metrics.json", "the evaluation above"),
        ("history.jsonl", "one line per epoch"),
        ("train_config.json", "the training settings (jobs/config.py)"),
        ("loss.png", "training loss and validation metric per epoch"),
        ("recall.png", "recall@K curves"),
        ("index", "the retrieval index `serve run serve.app` serves"),
        ("confusion.png", "validation confusion matrix"),
        ("skipped.jsonl", "inputs skipped, and why"),
    ):
        if (output_dir / name).exists():
            print(f"  {name:<15} {what}")


if __name__ == "__main__":
    from jobs.cli import run

    run(main)
