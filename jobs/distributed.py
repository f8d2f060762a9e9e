"""The collectives the recipes use, written once. Each is the identity on one process (no
process group, or a group of one), so a recipe runs the same without Ray or DDP. And what
the workers compute in (``compute_dtype``), resolved where the jobs start."""

from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    """A process group of more than one worker."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def print_once(message: str) -> None:
    """Print on rank 0 only (every worker runs the same loop)."""
    if world_rank() == 0:
        print(message, flush=True)


def gather_objects(value) -> list:
    """Every worker's ``value``, in rank order (``[value]`` on one worker)."""
    if not is_distributed():
        return [value]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    return out


def all_reduce(tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """``tensor`` summed (or ``op="max"``) over the workers, in place."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    return tensor


def all_gather_rows(tensor: torch.Tensor) -> torch.Tensor:
    """Every worker's rows of ``tensor`` (any count, 0 included) in rank order, as one
    tensor: padded to the largest count for the collective, then trimmed."""
    if not is_distributed():
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


def compute_dtype(precision: str, use_gpu: bool, large: bool) -> str:
    """``--precision`` resolved for the hardware the work runs on and the model's size
    (``models.precision``): this process's CPU, or a GPU of the cluster (asked of one when
    this process has none: the head of a GPU cluster often has no GPU). ValueError with one
    line for fp16 on CPUs."""
    import torch

    from models.precision import resolve_precision

    if precision == "fp16" and not use_gpu:
        raise ValueError("--precision fp16 (--fp16) needs GPUs: a CPU runs bf16 or fp32")
    if not use_gpu:
        return resolve_precision(precision, "cpu", large)
    if torch.cuda.is_available():
        return resolve_precision(precision, "cuda", large)
    import ray

    probe = ray.remote(num_gpus=1, num_cpus=0)(resolve_precision)
    return ray.get(probe.remote(precision, "cuda", large))
