"""What each Ray Train worker runs: the retriever recipe (as DRL trains it) and the
PitVQANet recipe (as the PitVQA reference trains it).

Each recipe reads top to bottom: build, restore, wrap for DDP, then per epoch train,
validate and report. Every worker calls ``ray.train.report``; only rank 0 writes the
checkpoint: ``model/`` in the models' folder format, ``train_state.pt`` (optimizer and
schedule) and ``history.json`` (every epoch so far, which the driver turns into
``history.jsonl``). Checkpoints go to Ray Train's storage (a shared folder or S3), so a
worker on any node writes them and the driver reads them back.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
from ray.data.collate_fn import NumpyBatchCollateFn
from safetensors.torch import load_model
from torch import nn
from transformers import get_cosine_schedule_with_warmup

from jobs.metrics import metrics_from_ranks, vqa_metrics
from jobs.similarity import best_caption_ranks
from models import (
    ContrastiveObjective,
    PitVQAConfig,
    PitVQANet,
    Retriever,
    RetrieverConfig,
    clamp_logit_scale_,
    save_checkpoint,
    token_wise_rank_counts,
    token_wise_true_scores,
)
from models.encode import encode_tokens, encode_videos

FAILURE_MARKER = ".injected_failure"
HISTORY = "history.json"  # in each checkpoint: every epoch's row so far


# --- shared pieces ----------------------------------------------------------------------


def retriever_param_groups(
    model: Retriever, lr: float, coef_lr: float, weight_decay: float
) -> list[dict]:
    """CLIP at ``lr * coef_lr``, the new modules at ``lr``; no weight decay on biases, norm
    weights and other 1-D parameters (CLIP's logit scale and class embedding included)."""
    groups: dict[tuple[bool, bool], list] = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            groups.setdefault((name.startswith("clip."), param.ndim >= 2), []).append(param)
    return [
        {
            "params": params,
            "lr": lr * coef_lr if is_clip else lr,
            "weight_decay": weight_decay if decays else 0.0,
        }
        for (is_clip, decays), params in groups.items()
    ]


def restore(model: nn.Module, optimizer, scheduler) -> dict:
    """Load the latest reported checkpoint, if any, into the model, optimizer and scheduler.

    Returns the training state: ``epoch`` (last finished), ``history``, ``step``.
    """
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return {"epoch": 0, "history": [], "step": 0}
    with checkpoint.as_directory() as folder:
        load_model(model, str(Path(folder) / "model" / "model.safetensors"))
        state = torch.load(Path(folder) / "train_state.pt", weights_only=True)
        state["history"] = json.loads((Path(folder) / HISTORY).read_text())
    optimizer.load_state_dict(state.pop("optimizer"))
    scheduler.load_state_dict(state.pop("scheduler"))
    _log(f"resuming after epoch {state['epoch']} from {checkpoint.path}")
    return state


def report_epoch(
    config: dict, model, tokenizer, optimizer, scheduler, state: dict, row: dict
) -> None:
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
        extra = {
            "epoch": row["epoch"],
            **({"labels": config["labels"]} if "labels" in config else {}),
        }
        save_checkpoint(Path(folder) / "model", model, tokenizer, extra=extra)
        torch.save(
            {
                "epoch": row["epoch"],
                "step": state["step"],
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
            },
            Path(folder) / "train_state.pt",
        )
        ray.train.report(
            metrics,
            checkpoint=ray.train.Checkpoint.from_directory(folder),
            checkpoint_dir_name=f"epoch_{row['epoch']:03d}",
        )


def maybe_fail(config: dict, step: int) -> None:
    """Test hook (``--inject_failure STEP``): the first run to reach ``step`` dies there."""
    marker = Path(config["output_dir"]) / FAILURE_MARKER
    if config.get("inject_failure") == step and not marker.exists():
        marker.touch()
        raise RuntimeError(f"injected failure at step {step} (--inject_failure)")


def gather_objects(value):
    """Every worker's ``value``, in rank order (just ``[value]`` on one worker)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [value]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    return out


def _log(message: str) -> None:
    if ray.train.get_context().get_world_rank() == 0:
        print(message, flush=True)


def _local_batch(config: dict) -> int:
    """``--batch_size`` is the global batch, as in CLIP4Clip/DRL and PitVQA."""
    return max(1, config["batch_size"] // ray.train.get_context().get_world_size())


class ZeroCopyCollate(NumpyBatchCollateFn):
    """Batches as zero-copy tensor views of their numpy arrays (Ray's default collation
    copies every column, which bench/train.py measured at 4x the cost). The arrays are
    read-only; the models never write into their inputs."""

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return {k: torch.from_numpy(v) for k, v in batch.items()}


def torch_batches(shard, batch_size: int, shuffle_seed: int | None = None):
    """The worker's batches from its dataset shard (``iter_torch_batches``), on its device.

    With a seed: a local shuffle buffer and the last incomplete batch dropped (BatchNorm
    cannot train on a batch of one); without: every row, in order (validation).
    """
    shuffle = shuffle_seed is not None
    return shard.iter_torch_batches(
        batch_size=batch_size,
        drop_last=shuffle,
        collate_fn=ZeroCopyCollate(),
        device=ray.train.torch.get_device(),
        local_shuffle_buffer_size=4 * batch_size if shuffle else None,
        local_shuffle_seed=shuffle_seed,
    )


def _batches(shard, config: dict, epoch: int | None = None):
    """Training batches of ``epoch``, shuffled anew each epoch; without an epoch, the
    validation batches in order."""
    if epoch is None:
        return torch_batches(shard, config["batch_size_val"])
    return torch_batches(shard, _local_batch(config), config["seed"] + epoch)


class EveryValidationRow(ray.train.DataConfig):
    """Ray Train's dataset split: ``train`` into equal shards (as by default: every worker
    takes the same number of steps, which DDP needs), ``val`` into shards that keep every
    row. The default is ``equal=True`` for every dataset, which drops rows to even the
    shards out: with 3 workers and 49 test videos the best epoch was chosen on 48."""

    def configure(self, datasets, world_size, worker_handles, worker_node_ids, **kwargs):
        out = super().configure(
            {k: v for k, v in datasets.items() if k != "val"},
            world_size,
            worker_handles,
            worker_node_ids,
            **kwargs,
        )
        if "val" in datasets:
            val = datasets["val"]
            if val.name is None:
                val.set_name("val")
            val = val.copy(val)
            val.context.execution_options = self._resolve_execution_options("val")
            hints = worker_node_ids if self._enable_shard_locality else None
            for shard, split in zip(
                out, val.streaming_split(world_size, equal=False, locality_hints=hints)
            ):
                shard["val"] = split
        return out


# --- the retriever (DRL) ----------------------------------------------------------------


def _all_gather_rows(tensor: torch.Tensor) -> torch.Tensor:
    """Every worker's rows of ``tensor`` (any count, 0 included) in rank order, as one
    tensor: padded to the largest count for the collective, then trimmed."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    counts = [
        torch.zeros(1, dtype=torch.long, device=tensor.device) for _ in range(dist.get_world_size())
    ]
    dist.all_gather(counts, torch.tensor([len(tensor)], device=tensor.device))
    padded = tensor.new_zeros((int(max(counts)), *tensor.shape[1:]))
    padded[: len(tensor)] = tensor
    parts = [torch.zeros_like(padded) for _ in counts]
    dist.all_gather(parts, padded)
    return torch.cat([part[: int(n)] for part, n in zip(parts, counts)])


def _all_reduce(tensor: torch.Tensor, op=None) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tensor, op=op or dist.ReduceOp.SUM)
    return tensor


@torch.no_grad()
def validate_retriever(model: Retriever, shard, config: dict) -> dict:
    """Test-set t2v/v2t metrics without any worker holding the ``[texts, videos]`` matrix.

    Each worker encodes its share of the rows (``models.encode``, as the final evaluation).
    The texts are all-gathered (``A x L x D``, small); each video is scored by one worker
    (the lowest rank that holds a caption of it) against all texts, and the rank counts
    are all-reduced (``models.token_wise_rank_counts``, the evaluation's kernel), so every
    worker computes the same metrics from every row.
    """
    model.eval()
    device = ray.train.torch.get_device()
    parts = []
    for batch in _batches(shard, config):
        text = encode_tokens(model, batch["input_ids"], batch["attention_mask"])
        video = encode_videos(model, batch["pixel_values"], batch["frame_mask"])
        parts.append(
            (
                text.features,
                text.weights,
                video.features,
                video.weights,
                batch["video_index"].to(device),
            )
        )
    # A worker whose share is empty still joins the collectives, with empty tensors of the
    # others' shapes (text tokens, frames, dim).
    shape = torch.tensor(
        parts[0][0].shape[1:] + parts[0][2].shape[1:2] if parts else (0, 0, 0), device=device
    )
    tokens, dim, frames = _all_reduce(
        shape, dist.ReduceOp.MAX if dist.is_available() else None
    ).tolist()
    parts = parts or [
        (
            torch.zeros(0, tokens, dim, device=device),
            torch.zeros(0, tokens, device=device),
            torch.zeros(0, frames, dim, device=device),
            torch.zeros(0, frames, device=device),
            torch.zeros(0, dtype=torch.long, device=device),
        )
    ]
    text, text_weight, video, video_weight, video_index = (torch.cat(x) for x in zip(*parts))
    rank = ray.train.get_context().get_world_rank()
    all_index = _all_gather_rows(video_index)
    if not len(all_index):
        return {}
    all_text, all_weight = _all_gather_rows(text), _all_gather_rows(text_weight)
    owner_of_row = _all_gather_rows(torch.full_like(video_index, rank))
    owner = torch.full((int(all_index.max()) + 1,), 1 << 30, dtype=torch.long, device=device)
    owner.scatter_reduce_(
        0, all_index, owner_of_row, reduce="amin"
    )  # each video: its lowest-ranked holder
    mine = owner[video_index] == rank
    local_ids, first = np.unique(video_index[mine].cpu().numpy(), return_index=True)
    local_video, local_weight = video[mine][first], video_weight[mine][first]
    position = torch.full_like(owner, -1)
    position[torch.as_tensor(local_ids, device=device, dtype=torch.long)] = torch.arange(
        len(local_ids), device=device
    )
    columns = position[all_index]  # each text's video among this worker's, or -1
    true_score = token_wise_true_scores(all_text, all_weight, local_video, local_weight, columns)
    true_score = _all_reduce(torch.nan_to_num(true_score, nan=0.0))
    higher, text_rank = token_wise_rank_counts(
        all_text, all_weight, local_video, local_weight, columns, true_score
    )
    higher, text_rank = _all_reduce(higher), _all_reduce(text_rank)
    videos = torch.unique(all_index)
    v2t = best_caption_ranks(
        text_rank.cpu().numpy(), torch.searchsorted(videos, all_index).cpu().numpy(), len(videos)
    )
    metrics = metrics_from_ranks((1 + higher).cpu().numpy(), v2t, len(videos))
    return {
        "R@1": metrics["t2v"]["R@1"],
        "R@5": metrics["t2v"]["R@5"],
        "R@10": metrics["t2v"]["R@10"],
        "v2t_R@1": metrics["v2t"]["R@1"],
        "MdR": metrics["t2v"]["MdR"],
        "chance_R@1": metrics["chance_R@1"],
        "val_texts": metrics["num_texts"],
        "val_videos": metrics["num_videos"],
    }


def _quiet_ray_train() -> None:
    """One line per report from Ray Train is noise next to the epoch lines printed here.
    (Some of Ray Train's loggers are named by file path, e.g. ``.../ray/train/v2/...``.)"""
    names = [
        n
        for n in logging.root.manager.loggerDict
        if n.startswith("ray.train") or "/ray/train/" in n
    ]
    for name in names + ["ray.train"]:
        logging.getLogger(name).setLevel(logging.WARNING)


def retriever_loop(config: dict) -> None:
    _quiet_ray_train()
    torch.manual_seed(config["seed"])
    model = Retriever(RetrieverConfig(**config["model_config"]))
    optimizer = torch.optim.AdamW(
        retriever_param_groups(model, config["lr"], config["coef_lr"], config["weight_decay"]),
        betas=(0.9, 0.98),
        eps=1e-6,
    )
    steps_per_epoch = max(1, config["num_train_rows"] // config["batch_size"])
    total_steps = steps_per_epoch * config["epochs"]
    # DRL's schedule: linear warm-up over warmup_proportion of the steps, then cosine to 0.
    scheduler = get_cosine_schedule_with_warmup(
        optimizer, int(config["warmup_proportion"] * total_steps), total_steps
    )
    state = restore(model, optimizer, scheduler)
    objective = ray.train.torch.prepare_model(
        ContrastiveObjective(
            model,
            config["cdcr"],
            config["cdcr_alpha1"],
            config["cdcr_alpha2"],
            config["cdcr_lambda"],
        )
    )
    train_shard, val_shard = (
        ray.train.get_dataset_shard("train"),
        ray.train.get_dataset_shard("val"),
    )
    for epoch in range(state["epoch"] + 1, config["epochs"] + 1):
        objective.train()
        started, losses, global_batch = time.time(), [], 0
        for batch in _batches(train_shard, config, epoch):
            state["step"] += 1
            maybe_fail(config, state["step"])
            out = objective(
                batch["input_ids"],
                batch["attention_mask"],
                batch["pixel_values"],
                batch["frame_mask"],
            )
            optimizer.zero_grad(set_to_none=True)
            out["loss"].backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config["max_grad_norm"])
            optimizer.step()
            scheduler.step()
            clamp_logit_scale_(model.logit_scale)
            losses.append(out["loss"].item())
            global_batch = int(out["global_batch"])
            if config["n_display"] and state["step"] % config["n_display"] == 0:
                _log(
                    f"epoch {epoch}/{config['epochs']} step {state['step']}: loss {losses[-1]:.4f} "
                    f"lr {scheduler.get_last_lr()[-1]:.2e}"
                )
        metrics = validate_retriever(model, val_shard, config)
        score = metrics.get("R@1", 0.0) + metrics.get("R@5", 0.0) / 100  # R@1, ties broken by R@5
        row = {
            "epoch": epoch,
            "train_loss": float(np.mean(losses)) if losses else float("nan"),
            "val_score": score,
            "global_batch": global_batch,
            "steps": len(losses),
            "seconds": round(time.time() - started, 2),
            **metrics,
        }
        _log(
            f"epoch {epoch}/{config['epochs']}: loss {row['train_loss']:.4f}, test t2v R@1 {metrics.get('R@1', 0):.1f} "
            f"R@5 {metrics.get('R@5', 0):.1f} (chance {metrics.get('chance_R@1', 0):.1f}), {row['seconds']:.0f} s"
        )
        report_epoch(config, model, config["tokenizer"], optimizer, scheduler, state, row)


# --- PitVQANet (PitVQA reference) -------------------------------------------------------


@torch.no_grad()
def validate_vqa(model: PitVQANet, shard, config: dict) -> dict:
    model.eval()
    predicted, truth = [], []
    for batch in _batches(shard, config):
        logits = model(batch["pixel_values"], batch["input_ids"], batch["attention_mask"])
        predicted.append(logits.argmax(-1).cpu().numpy())
        truth.append(batch["label"].cpu().numpy())
    gathered = gather_objects((predicted, truth))
    y_pred = np.concatenate(
        [p for worker in gathered for p in worker[0]] or [np.zeros(0, np.int64)]
    )
    y_true = np.concatenate(
        [t for worker in gathered for t in worker[1]] or [np.zeros(0, np.int64)]
    )
    if not len(y_true):
        return {}
    metrics, _ = vqa_metrics(
        y_true, y_pred, config["model_config"]["num_classes"], config["train_labels"]
    )
    return {
        k: metrics[k] for k in ("acc", "f1", "precision", "recall", "balanced_acc", "majority_acc")
    }


def pitvqa_loop(config: dict) -> None:
    _quiet_ray_train()
    torch.manual_seed(config["seed"])
    model = PitVQANet(PitVQAConfig(**config["model_config"]))
    world = ray.train.get_context().get_world_size()
    if world > 1 and config["use_gpu"]:
        # SyncBatchNorm needs GPU tensors; CPU workers keep per-worker batch statistics.
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    optimizer = torch.optim.Adam(
        [p for p in model.parameters() if p.requires_grad], lr=config["lr"]
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 1.0
    )  # the reference keeps lr fixed
    state = restore(model, optimizer, scheduler)
    net = ray.train.torch.prepare_model(model)
    criterion = nn.CrossEntropyLoss()
    train_shard, val_shard = (
        ray.train.get_dataset_shard("train"),
        ray.train.get_dataset_shard("val"),
    )
    for epoch in range(state["epoch"] + 1, config["epochs"] + 1):
        net.train()
        started, losses = time.time(), []
        # drop_last: BatchNorm in the head cannot train on a batch of one.
        for batch in _batches(train_shard, config, epoch):
            state["step"] += 1
            maybe_fail(config, state["step"])
            loss = criterion(
                net(batch["pixel_values"], batch["input_ids"], batch["attention_mask"]),
                batch["label"],
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
            if config["n_display"] and state["step"] % config["n_display"] == 0:
                _log(
                    f"epoch {epoch}/{config['epochs']} step {state['step']}: loss {losses[-1]:.4f}"
                )
        metrics = validate_vqa(model, val_shard, config)
        score = metrics.get("f1", 0.0)  # best checkpoint by validation macro-F1, as the reference
        row = {
            "epoch": epoch,
            "train_loss": float(np.mean(losses)) if losses else float("nan"),
            "val_score": score,
            "steps": len(losses),
            "seconds": round(time.time() - started, 2),
            **metrics,
        }
        _log(
            f"epoch {epoch}/{config['epochs']}: loss {row['train_loss']:.4f}, val acc {100 * metrics.get('acc', 0):.1f}% "
            f"macro-F1 {metrics.get('f1', 0):.3f} (majority class {100 * metrics.get('majority_acc', 0):.1f}%), "
            f"{row['seconds']:.0f} s"
        )
        report_epoch(config, model, config["tokenizer"], optimizer, scheduler, state, row)


LOOPS = {"retriever": retriever_loop, "pitvqa": pitvqa_loop}
