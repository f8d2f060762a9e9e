"""What each Ray Train worker runs: a recipe (``jobs.recipes``) over its dataset split,
epoch after epoch, with Ray Train's checkpoints.

It reads top to bottom: build the recipe, restore the last reported checkpoint, wrap for
DDP, then per epoch train, validate and report. Every worker calls ``ray.train.report``;
only rank 0 writes the checkpoint: ``model/`` in the models' folder format,
``train_state.pt`` (optimizer and schedule) and ``history.json`` (every epoch so far, which
the driver turns into ``history.jsonl``). Checkpoints go to Ray Train's storage (a shared
folder or S3), so a worker on any node writes them and the driver reads them back.
"""

from __future__ import annotations

import json
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import ray.train
import ray.train.torch
import torch
from ray.data.collate_fn import NumpyBatchCollateFn
from safetensors.torch import load_model

from cluster.ray_private import quiet_ray_train
from jobs.config import TrainConfig
from jobs.distributed import gather_objects
from jobs.recipes import recipe_for
from models import save_checkpoint

FAILURE_MARKER = ".injected_failure"
HISTORY = "history.json"  # in each checkpoint: every epoch's row so far


class ZeroCopyCollate(NumpyBatchCollateFn):
    """Batches as zero-copy tensor views of their numpy arrays (Ray's default collation
    copies every column, which bench/train.py measured at 4x the cost). The arrays are
    read-only; the models never write into their inputs."""

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return {k: torch.from_numpy(v) for k, v in batch.items()}


def torch_batches(split, batch_size: int, shuffle_seed: int | None = None):
    """The worker's batches from its dataset split (``iter_torch_batches``), on its device.

    With a seed: a local shuffle buffer and the last incomplete batch dropped (BatchNorm
    cannot train on a batch of one); without: every row, in order (validation).
    """
    shuffle = shuffle_seed is not None
    return split.iter_torch_batches(
        batch_size=batch_size,
        drop_last=shuffle,
        collate_fn=ZeroCopyCollate(),
        device=ray.train.torch.get_device(),
        local_shuffle_buffer_size=4 * batch_size if shuffle else None,
        local_shuffle_seed=shuffle_seed,
    )


def restore(recipe) -> dict:
    """Load the latest reported checkpoint, if any, into the recipe's model, optimizer and
    scheduler. Returns the training state: ``epoch`` (last finished), ``history``, ``step``."""
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return {"epoch": 0, "history": [], "step": 0}
    with checkpoint.as_directory() as folder:
        load_model(recipe.model, str(Path(folder) / "model" / "model.safetensors"))
        state = torch.load(Path(folder) / "train_state.pt", weights_only=True)
        state["history"] = json.loads((Path(folder) / HISTORY).read_text())
    recipe.optimizer.load_state_dict(state.pop("optimizer"))
    recipe.scheduler.load_state_dict(state.pop("scheduler"))
    _log(f"resuming after epoch {state['epoch']} from {checkpoint.path}")
    return state


def report_epoch(config: TrainConfig, recipe, tokenizer, state: dict, row: dict) -> None:
    """Every worker reports; rank 0 also writes the checkpoint. The row records the node
    of each worker (by rank), so a run shows where it ran and where it resumed."""
    row["worker_nodes"] = gather_objects(ray.get_runtime_context().get_node_id())
    row["time"] = round(time.time(), 3)  # when the epoch ended (wall clock)
    state["history"].append(row)
    metrics = {k: v for k, v in row.items() if isinstance(v, (int, float))}
    if ray.train.get_context().get_world_rank() != 0:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / HISTORY).write_text(json.dumps(state["history"]))
        extra = {"epoch": row["epoch"], **({"labels": config.labels} if config.labels else {})}
        save_checkpoint(Path(folder) / "model", recipe.model, tokenizer, extra=extra)
        training_state = {
            "epoch": row["epoch"],
            "step": state["step"],
            "optimizer": recipe.optimizer.state_dict(),
            "scheduler": recipe.scheduler.state_dict(),
        }
        torch.save(training_state, Path(folder) / "train_state.pt")
        ray.train.report(
            metrics,
            checkpoint=ray.train.Checkpoint.from_directory(folder),
            checkpoint_dir_name=f"epoch_{row['epoch']:03d}",
        )


def maybe_fail(config: TrainConfig, step: int) -> None:
    """Test hook (``--inject_failure STEP``): the first run to reach ``step`` dies there."""
    marker = Path(config.output_dir) / FAILURE_MARKER
    if config.inject_failure == step and not marker.exists():
        marker.touch()
        raise RuntimeError(f"injected failure at step {step} (--inject_failure)")


def _log(message: str) -> None:
    if ray.train.get_context().get_world_rank() == 0:
        print(message, flush=True)


def train_loop(loop_config: dict) -> None:
    """Ray Train's ``train_loop_per_worker``: ``loop_config`` holds ``config`` (a
    ``TrainConfig`` as a dict) and ``tokenizer`` (saved with each checkpoint)."""
    quiet_ray_train()
    config = TrainConfig(**loop_config["config"])
    recipe = recipe_for(config.model)(config)
    state = restore(recipe)
    recipe.prepare(ray.train.torch.prepare_model)
    train_split = ray.train.get_dataset_shard("train")
    val_split = ray.train.get_dataset_shard("val")
    # ``--batch_size`` is the global batch, as in CLIP4Clip/DRL and PitVQA.
    local_batch = max(1, config.batch_size // ray.train.get_context().get_world_size())
    for epoch in range(state["epoch"] + 1, config.epochs + 1):
        started, losses = time.time(), []
        # Shuffled anew each epoch (the seed and the epoch make the order).
        for batch in torch_batches(train_split, local_batch, config.seed + epoch):
            state["step"] += 1
            maybe_fail(config, state["step"])
            losses.append(recipe.step(batch))
            if config.n_display and state["step"] % config.n_display == 0:
                _log(
                    f"epoch {epoch}/{config.epochs} step {state['step']}: "
                    f"{recipe.step_line(losses[-1])}"
                )
        metrics = recipe.validate(torch_batches(val_split, config.batch_size_val))
        row = {
            "epoch": epoch,
            "train_loss": float(np.mean(losses)) if losses else float("nan"),
            "val_score": recipe.score(metrics),
            **recipe.epoch_row(),
            "steps": len(losses),
            "seconds": round(time.time() - started, 2),
            **metrics,
        }
        _log(
            f"epoch {epoch}/{config.epochs}: loss {row['train_loss']:.4f}, "
            f"{recipe.epoch_line(metrics)}, {row['seconds']:.0f} s"
        )
        report_epoch(config, recipe, loop_config["tokenizer"], state, row)
