"""Mixed precision: the one rule for which dtype the models compute in, and where.

    compute_dtype = resolve_precision("auto", "cuda")   # "bf16", "fp16" or "fp32"
    with autocast(compute_dtype, device):                # the models' forward (and backward)
        ...
    with full_precision(tensor):                         # losses, logit scale, exact scoring
        ...

``--precision`` (the jobs) and ``precision=`` (the service) take ``auto`` (the default),
``fp32``, ``bf16`` or ``fp16``. ``auto`` is bf16 where the hardware runs it fast: a GPU
with bf16, or a CPU with AVX-512 BF16 or AMX for the papers' models (``large``: on such a
CPU the papers' models train 1.8-2.2x faster in bf16, bench/full_size.py, but the tiny
presets' small matmuls run 2.1x slower, bench/train.py); else fp32. fp16 is a GPU's, with a gradient scaler when
training. Autocast only: the weights, the optimizer state, the losses, the
logit scale and the exact WTI scores stay fp32 (what a model computes its features in is
the one thing that changes). docs/decisions.md gives the figures behind the default.
"""

from __future__ import annotations

import contextlib
from functools import lru_cache
from pathlib import Path

import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@lru_cache(maxsize=1)
def cpu_has_fast_bf16() -> bool:
    """The CPU computes bf16 natively (AVX-512 BF16 or AMX; Linux's cpuinfo flags)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(flag in flags for flag in (" avx512_bf16", " amx_bf16"))


# A checkpoint this large (its model.safetensors) is one of the papers' models (``large``).
LARGE_MODEL_BYTES = 200 * 2**20


def is_large(checkpoint: str | Path) -> bool:
    """Whether the checkpoint folder holds one of the papers' models (not a tiny preset)."""
    weights = Path(checkpoint) / "model.safetensors"
    return weights.is_file() and weights.stat().st_size >= LARGE_MODEL_BYTES


def resolve_precision(precision: str, device: str | torch.device, large: bool = True) -> str:
    """``auto`` -> what ``device`` (``cpu`` / ``cuda``) runs fast for a model of that size;
    checks the others."""
    kind = torch.device(device).type
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: choose from {', '.join(PRECISIONS)}")
    if precision == "auto":
        if kind == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
        return "bf16" if large and cpu_has_fast_bf16() else "fp32"
    if precision == "fp16" and kind != "cuda":
        raise ValueError("precision fp16 needs a GPU (a CPU runs bf16 or fp32)")
    return precision


def autocast(compute_dtype: str, device: str | torch.device):
    """The context the models' forward runs in: autocast to ``compute_dtype`` (nothing for
    fp32)."""
    if compute_dtype == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=DTYPES[compute_dtype])


def full_precision(tensor: torch.Tensor):
    """Autocast off on ``tensor``'s device: what runs inside stays in its inputs' dtype
    (give it fp32 tensors)."""
    return torch.autocast(tensor.device.type, enabled=False)


def grad_scaler(compute_dtype: str, device: str | torch.device) -> torch.amp.GradScaler:
    """A loss scaler for fp16 (enabled only there: bf16 and fp32 keep fp32's range)."""
    kind = torch.device(device).type
    return torch.amp.GradScaler(kind, enabled=compute_dtype == "fp16")
