"""A training run's checkpoints on Ray Train's storage: what rank 0 writes each epoch and
what a restarted worker group reads back (``jobs/train_loop.py`` calls both).

Each checkpoint holds ``model/`` in the models' folder format, ``train_state.pt`` (optimizer,
schedule and fp16's loss scale) and ``history.json`` (every epoch so far, which the driver turns into
``history.jsonl``). The storage is a shared folder or S3, so a worker on any node writes
them and the driver reads them back.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import ray.train
import torch
from safetensors.torch import load_model

from jobs.config import TrainConfig
from jobs.distributed import gather_objects, print_once
from models import save_checkpoint

HISTORY = "history.json"  # in each checkpoint: every epoch's row so far


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
    recipe.scaler.load_state_dict(state.pop("scaler", {}))  # fp16's loss scale
    print_once(f"resuming after epoch {state['epoch']} from {checkpoint.path}")
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
            "scaler": recipe.scaler.state_dict(),
        }
        torch.save(training_state, Path(folder) / "train_state.pt")
        ray.train.report(
            metrics,
            checkpoint=ray.train.Checkpoint.from_directory(folder),
            checkpoint_dir_name=f"epoch_{row['epoch']:03d}",
        )
