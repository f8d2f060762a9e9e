"""The collectives the recipes use, written once. Each is the identity on one process (no
process group, or a group of one), so a recipe runs the same without Ray or DDP."""

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
