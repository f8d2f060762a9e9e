"""Top-k search over a slice of the index: a first stage picks candidates, exact WTI ranks them.

Exact scoring of one query against V videos costs ``L x F x D`` multiply-adds per video
(every token against every frame). The first stage is an inverted file over the pooled
vectors (the query's tokens averaged by their WTI weights against each video's frames
averaged by theirs): the index's k-means centroids (``models.index``) split the videos into
about sqrt(N) lists; a query ranks the centroids (``K x D``) and takes the best lists until
they hold ``candidates`` videos (default: as many as ``PROBE_LISTS`` lists hold on
average), which are re-scored exactly with the same kernel as training and evaluation
(``models.token_wise_scores``). The scores returned are always the exact WTI scores; only
which videos get scored is approximate. A slice is held sorted by list (``InvertedLists``),
so each probed list is one contiguous run of rows.

Without lists (an index written before them) the first stage scans every pooled vector.
``bench/search.py`` measures how many candidates keep the top-10 identical to exhaustive
search (``PROBE_LISTS``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .wti import token_wise_scores, token_wise_topk

# Lists probed per query (inverted lists): the videos re-scored exactly are those of about
# PROBE_LISTS lists, so they grow as sqrt(N) with about sqrt(N) lists, never as a fixed share
# of the shard. bench/search.py chose it on the synthetic 1M index (BENCHMARKS.md).
PROBE_LISTS = 32
# Without lists: at least MIN_CANDIDATES, and CANDIDATE_FRACTION of the shard (100k index).
MIN_CANDIDATES = 256
CANDIDATE_FRACTION = 0.03


def candidate_count(shard_size: int, top_k: int, lists: "InvertedLists | None" = None) -> int:
    """Videos re-scored exactly by default: those of ``PROBE_LISTS`` lists of average size
    (with lists), else the pooled scan's best ``max(MIN_CANDIDATES, CANDIDATE_FRACTION)``."""
    if lists is not None:
        return max(top_k, PROBE_LISTS * math.ceil(shard_size / len(lists.centroids)))
    return max(MIN_CANDIDATES, top_k, math.ceil(CANDIDATE_FRACTION * shard_size))


@dataclass
class InvertedLists:
    """A slice's rows sorted by list: list ``k`` is rows ``offsets[k]:offsets[k + 1]``."""

    centroids: torch.Tensor  # [K, D]
    offsets: np.ndarray  # [K + 1] int64

    @staticmethod
    def sort(lists: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, "InvertedLists"]:
        """(the row order that groups ``lists``, the lists over rows in that order)."""
        order = np.argsort(lists, kind="stable")
        counts = np.bincount(lists, minlength=len(centroids))
        return order, InvertedLists(torch.from_numpy(np.asarray(centroids, np.float32)),
                                    np.concatenate([[0], np.cumsum(counts)]).astype(np.int64))

    def probe(self, query_pooled: torch.Tensor, rows: int) -> torch.Tensor:
        """Row numbers of the best lists for one query (``[D]``), at least ``rows`` of them."""
        sizes = np.diff(self.offsets)
        ranked = torch.argsort(self.centroids @ query_pooled.float().cpu(), descending=True).numpy()
        ranked = ranked[sizes[ranked] > 0]
        take = ranked[: int(np.searchsorted(np.cumsum(sizes[ranked]), rows)) + 1]
        return torch.from_numpy(np.concatenate([np.arange(self.offsets[k], self.offsets[k + 1]) for k in take]))


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
           candidates: int | None = None, lists: InvertedLists | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Best ``top_k`` rows for each query, best first: (scores ``[A, k]``, row indices ``[A, k]``).

    text ``[A, L, D]``/``[A, L]``/``[A, D]`` and the slice's frames ``[V, F, D]``/``[V, F]``/
    ``[V, D]``, all prepared (``models.encode``); ``lists``: the slice's inverted lists (its
    rows sorted by list), else the first stage scans ``frame_pooled``. ``exact`` scores every row.
    """
    V = frames.shape[0]
    top_k = min(top_k, V)
    candidates = candidates or candidate_count(V, top_k, lists)
    text, text_weight = trim_padding(text, text_weight)
    if exact or candidates >= V:
        return token_wise_topk(text, text_weight, frames, frame_weight, top_k, dtype=frames.dtype)
    coarse = None if lists is not None else text_pooled.to(frame_pooled.dtype) @ frame_pooled.T  # (A, V)
    best, found = [], []
    for a in range(text.shape[0]):
        rows = lists.probe(text_pooled[a], max(candidates, top_k)) if lists is not None else top_rows(coarse[a], candidates)
        rows = rows.to(frames.device)
        scores = token_wise_scores(text[a : a + 1], text_weight[a : a + 1], frames[rows], frame_weight[rows])[0]
        top = scores.topk(min(top_k, len(rows)))
        best.append(top.values)
        found.append(rows[top.indices])
    return torch.stack(best), torch.stack(found)


def merge(results: list[list[tuple[str, float]]], top_k: int) -> list[tuple[str, float]]:
    """Merge per-shard ``[(video_id, score), ...]`` lists into the global best ``top_k``.

    Ties are broken by video id, so that the answer does not depend on how the index is split.
    An id answered twice (a replaced video, while the shards move to a new version) counts once.
    """
    every = sorted((hit for hits in results for hit in hits), key=lambda hit: (-hit[1], hit[0]))
    seen, out = set(), []
    for hit in every:
        if hit[0] not in seen:
            seen.add(hit[0])
            out.append(hit)
    return out[:top_k]
