"""What each Ray Train worker runs: a recipe (``jobs.recipes``) over its dataset split,
epoch after epoch, with Ray Train's checkpoints.

It reads top to bottom: build the recipe, restore the last reported checkpoint, wrap for
DDP, then per epoch train, validate and report. Every worker calls ``ray.train.report``;
only rank 0 writes the checkpoint (``jobs.checkpoints``) and logs the epoch to MLflow
(``cluster.tracking``). The batches come from
``jobs.batches``.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import ray.train
import ray.train.torch

from cluster.connect import log_ray_data_here
from cluster.ray_private import quiet_ray_train
from cluster.tracking import log_epoch
from jobs.batches import torch_batches
from jobs.checkpoints import report_epoch, restore
from jobs.config import TrainConfig
from jobs.distributed import print_once
from jobs.recipes import recipe_for

FAILURE_MARKER = ".injected_failure"


def maybe_fail(config: TrainConfig, step: int) -> None:
    """Test hook (``--inject_failure STEP``): the first run to reach ``step`` dies there."""
    marker = Path(config.output_dir) / FAILURE_MARKER
    if config.inject_failure == step and not marker.exists():
        marker.touch()
        raise RuntimeError(f"injected failure at step {step} (--inject_failure)")


def train_loop(loop_config: dict) -> None:
    """Ray Train's ``train_loop_per_worker``: ``loop_config`` holds ``config`` (a
    ``TrainConfig`` as a dict) and ``tokenizer``, an object reference to the tokenizer saved
    with each checkpoint (Train's controller holds ``loop_config`` too: a tokenizer there
    would make it import transformers for nothing)."""
    quiet_ray_train()
    log_ray_data_here()
    config = TrainConfig(**loop_config["config"])
    if config.deterministic:  # seeds, deterministic algorithms, no cuDNN benchmarking
        ray.train.torch.enable_reproducibility(config.seed)
    tokenizer = ray.get(loop_config["tokenizer"])
    recipe = recipe_for(config.model)(config)
    state = restore(recipe)
    recipe.prepare(ray.train.torch.prepare_model)
    train_split = ray.train.get_dataset_shard("train")
    val_split = ray.train.get_dataset_shard("val")
    # ``--batch_size`` is the global batch, as in CLIP4Clip/DRL and PitVQA.
    local_batch = max(1, config.batch_size // ray.train.get_context().get_world_size())
    for epoch in range(state["epoch"] + 1, config.epochs + 1):
        started, losses = time.time(), []
        recipe.begin_epoch(epoch)
        # Shuffled anew each epoch (the seed and the epoch make the order).
        for batch in torch_batches(train_split, local_batch, config.seed + epoch):
            state["step"] += 1
            maybe_fail(config, state["step"])
            losses.append(recipe.step(batch))
            if config.n_display and state["step"] % config.n_display == 0:
                print_once(
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
        print_once(
            f"epoch {epoch}/{config.epochs}: loss {row['train_loss']:.4f}, "
            f"{recipe.epoch_line(metrics)}, {row['seconds']:.0f} s"
        )
        report_epoch(config, recipe, tokenizer, state, row)
        if ray.train.get_context().get_world_rank() == 0:
            log_epoch(config.mlflow_tracking_uri, config.mlflow_run_id, row)
