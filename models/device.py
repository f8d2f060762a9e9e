"""Where a process computes: the one rule every job, evaluation task and replica follows."""

from __future__ import annotations

import torch


def pick_device() -> str:
    """``cuda`` when this process sees a GPU (Ray gives a GPU task or actor its own), else
    ``cpu``."""
    return "cuda" if torch.cuda.is_available() else "cpu"
