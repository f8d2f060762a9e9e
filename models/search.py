"""Top-k search over a slice of the index: candidates by pooled vectors, then exact WTI.

Exact scoring of one query against V videos costs ``L x F x D`` multiply-adds per video
(every token against every frame). The pooled stage costs ``D`` per video: the query's
tokens averaged by their WTI weights against each video's frames averaged by theirs. The
best ``candidates`` of that stage are re-scored exactly with the same kernel as training
and evaluation (``models.token_wise_scores``), so the scores returned are always the exact
WTI scores; only which videos get scored is approximate. ``bench/search.py`` measures how
many candidates keep the top-10 identical to exhaustive search (see ``candidate_count``).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .wti import token_wise_scores, token_wise_topk

# Candidates re-scored per shard: at least MIN_CANDIDATES, and CANDIDATE_FRACTION of the
# shard. bench/search.py chose these on the synthetic 100k index (see BENCHMARKS.md).
MIN_CANDIDATES = 256
CANDIDATE_FRACTION = 0.03


def candidate_count(shard_size: int, top_k: int) -> int:
    return max(MIN_CANDIDATES, top_k, math.ceil(CANDIDATE_FRACTION * shard_size))


def trim_padding(text: torch.Tensor, text_weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop all padded query tokens but one; the scores do not change.

    A padded token is an all-zero vector with weight 0 (``normalize_masked``): it adds
    nothing to the token-to-frame side and exactly 0 to the max over tokens on the
    frame-to-token side, which one kept padded token still provides. The padding is at the
    end (CLIP tokenization). A short query then costs a third of a padded one.
    """
    keep = min(text.shape[1], int((text_weight > 0).sum(dim=1).max()) + 1)
    if keep < text.shape[1] and not text[:, keep:].any() and not text_weight[:, keep:].any():
        return text[:, :keep], text_weight[:, :keep]
    return text, text_weight


def top_rows(scores: torch.Tensor, count: int) -> torch.Tensor:
    """Indices of the ``count`` largest of a 1-D score vector, unordered. On a CPU numpy's
    linear-time partition (about 8x faster than ``torch.topk`` at 100k)."""
    if scores.device.type == "cpu":
        return torch.from_numpy(np.argpartition(-scores.float().numpy(), count - 1)[:count])
    return scores.topk(count, sorted=False).indices


@torch.no_grad()
def search(text: torch.Tensor, text_weight: torch.Tensor, text_pooled: torch.Tensor, frames: torch.Tensor,
           frame_weight: torch.Tensor, frame_pooled: torch.Tensor, top_k: int, exact: bool = False,
           candidates: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Best ``top_k`` rows for each query, best first: (scores ``[A, k]``, row indices ``[A, k]``).

    text ``[A, L, D]``/``[A, L]``/``[A, D]`` and the slice's frames ``[V, F, D]``/``[V, F]``/
    ``[V, D]``, all prepared (``models.encode``).
    ``exact`` scores every row.
    """
    V = frames.shape[0]
    top_k = min(top_k, V)
    candidates = candidates or candidate_count(V, top_k)
    text, text_weight = trim_padding(text, text_weight)
    if exact or candidates >= V:
        return token_wise_topk(text, text_weight, frames, frame_weight, top_k, dtype=frames.dtype)
    coarse = text_pooled.to(frame_pooled.dtype) @ frame_pooled.T  # (A, V)
    best, found = [], []
    for a in range(text.shape[0]):
        rows = top_rows(coarse[a], candidates)
        scores = token_wise_scores(text[a : a + 1], text_weight[a : a + 1], frames[rows], frame_weight[rows])[0]
        top = scores.topk(top_k)
        best.append(top.values)
        found.append(rows.to(frames.device)[top.indices])
    return torch.stack(best), torch.stack(found)


def merge(results: list[list[tuple[str, float]]], top_k: int) -> list[tuple[str, float]]:
    """Merge per-shard ``[(video_id, score), ...]`` lists into the global best ``top_k``.

    Ties are broken by video id, so that the answer does not depend on how the index is split.
    """
    every = [hit for hits in results for hit in hits]
    return sorted(every, key=lambda hit: (-hit[1], hit[0]))[:top_k]
