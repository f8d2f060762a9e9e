"""Retriever encodings: what evaluation, the index, the service and the benchmarks store
and score. One function per side, so that every caller encodes the same way.

Called under ``models.precision.autocast``, the encoders compute in its dtype; what comes
out is fp32 all the same (the WTI head and the normalisation run in fp32).

An encoding is what exact scoring (``token_wise_scores``) reads, plus one vector per item
for candidate generation:

- ``features`` ``[N, T, D]``: prepared features (``Retriever.prepare_text``/``prepare_video``:
  normalised, padding zeroed); T is the text length L or the frame count F;
- ``weights``  ``[N, T]``: the WTI weights (uniform for TI, one 1 for dot product);
- ``pooled``   ``[N, D]``: the normalised weighted mean of ``features``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .precision import full_precision
from .tokenizer import tokenize


@dataclass
class Encoded:
    features: torch.Tensor  # (N, T, D): text tokens or video frames
    weights: torch.Tensor  # (N, T)
    pooled: torch.Tensor  # (N, D)

    def numpy(self) -> dict[str, np.ndarray]:
        """fp32 arrays on the CPU, keyed by field name."""
        return {
            name: getattr(self, name).float().cpu().numpy()
            for name in ("features", "weights", "pooled")
        }


def pooled(features: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Prepared ``[N, T, D]`` with weights ``[N, T]`` -> normalised ``[N, D]``."""
    return F.normalize(torch.einsum("ntd,nt->nd", features.float(), weights.float()), dim=-1)


def _device(model) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def encode_tokens(model, input_ids, attention_mask) -> Encoded:
    """Token ids ``[A, L]`` and their mask (tensors or arrays) -> ``Encoded`` with T = L (1
    for dot product), on the model's device."""
    device = _device(model)
    feat, mask = model.encode_text(
        torch.as_tensor(input_ids, device=device), torch.as_tensor(attention_mask, device=device)
    )
    with full_precision(feat):  # the WTI weights, normalised features and pooled: fp32
        tokens, weights = model.prepare_text(feat.float(), mask)  # (A, L, D), (A, L)
        return Encoded(tokens, weights, pooled(tokens, weights))


def encode_texts(model, tokenizer, texts: list[str]) -> Encoded:
    """Captions or queries -> ``Encoded``, tokenized to the model's ``max_words``."""
    ids = tokenize(tokenizer, list(texts), model.config.max_words)
    return encode_tokens(model, ids["input_ids"], ids["attention_mask"])


@torch.no_grad()
def encode_videos(model, pixel_values, frame_mask) -> Encoded:
    """CLIP-normalised ``pixel_values [V, F, 3, S, S]`` and ``frame_mask [V, F]`` (tensors or
    arrays) -> ``Encoded`` with T = F (1 for dot product), on the model's device."""
    device = _device(model)
    feat, mask = model.encode_video(
        torch.as_tensor(pixel_values, device=device), torch.as_tensor(frame_mask, device=device)
    )
    with full_precision(feat):
        frames, weights = model.prepare_video(feat.float(), mask)  # (V, F, D), (V, F)
        return Encoded(frames, weights, pooled(frames, weights))
