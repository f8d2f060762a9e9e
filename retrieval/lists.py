"""The first stage of search: inverted lists over the pooled vectors, and the top-k of a
slice of the index through them.

Exact scoring of one query against V videos costs ``L x F x D`` multiply-adds per video
(every token against every frame). The first stage is an inverted file over the pooled
vectors (the query's tokens averaged by their WTI weights against each video's frames
averaged by theirs): k-means centroids (``train_centroids``, trained when the index is
built, ``retrieval.store``) split the videos into about sqrt(N) lists (``num_lists``). A
slice holds each list's frames as one frame-major slab (``InvertedLists``), which the
exact kernel of training and evaluation (``models.wti``) reads with no gather or
transpose, and a few cones that hold every frame of the list (``frame_cones``).

Which lists a query scores (``search_lists``):

- by default, by a bound: the cones give, for each list, an upper bound of the exact score
  of any of its videos (``InvertedLists.bounds``); lists are scored best bound first until
  the k-th best exact score so far is at least the bound of every list not scored. The
  top-k is then the exact top-k (the bound costs time, never a result), and how many lists
  that takes adapts to the query and to how the checkpoint spreads its features;
- with ``candidates``: the best lists by centroid until they hold that many videos (the
  fixed rule of before; faster, approximate).

The scores returned are always the exact WTI scores. An index written before the lists
gets them when it is loaded (``lists_for``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from models.wti import frame_major_scores


def num_lists(count: int) -> int:
    """Inverted lists for ``count`` videos: about ``sqrt(count)`` (1,000 at 1M), each of about
    as many videos; a query probes the few best lists, whatever the index size."""
    return int(max(1, min(4096, round(np.sqrt(count)))))


def nearest_centroid(pooled: np.ndarray, centroids: np.ndarray, chunk: int = 65_536) -> np.ndarray:
    """The list of each row: its centroid of largest inner product (the pooled vectors and
    the centroids are unit vectors)."""
    c = torch.from_numpy(np.ascontiguousarray(centroids, np.float32))
    out = np.empty(len(pooled), np.int32)
    for lo in range(0, len(pooled), chunk):
        block = torch.from_numpy(np.array(pooled[lo : lo + chunk], np.float32))
        out[lo : lo + chunk] = (block @ c.T).argmax(1).numpy()
    return out


def train_centroids(
    pooled: np.ndarray, count: int, iterations: int = 12, seed: int = 0, sample_per_list: int = 64
) -> np.ndarray:
    """Spherical k-means: ``count`` unit centroids of the pooled vectors, trained on a sample
    of ``sample_per_list`` rows per list (``[count, D]`` float32)."""
    rng = np.random.default_rng(seed)
    sample = pooled[
        np.sort(rng.choice(len(pooled), min(len(pooled), count * sample_per_list), replace=False))
    ]
    sample = np.asarray(sample, np.float32)
    centroids = sample[rng.choice(len(sample), count, replace=False)].copy()
    for _ in range(iterations):
        assigned = nearest_centroid(sample, centroids)
        sums = np.zeros_like(centroids)
        np.add.at(sums, assigned, sample)
        empty = ~np.bincount(assigned, minlength=count).astype(bool)
        sums[empty] = sample[rng.choice(len(sample), int(empty.sum()))]  # re-seed empty lists
        centroids = sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
    return centroids.astype(np.float32)


def lists_for(pooled: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(centroids, the list of each row) for rows of an index written before the lists:
    the same rule as a build (``num_lists``, ``train_centroids``), on these rows only."""
    centroids = train_centroids(pooled, num_lists(len(pooled)))
    return centroids, nearest_centroid(pooled, centroids)


# Lists probed per query (inverted lists): sqrt(lists), at least MIN_PROBE_LISTS. With about
# sqrt(N) lists the videos re-scored exactly grow as N^(3/4), a falling share of the shard
# (32 lists of 1,000 at 1M videos, 10 of 100 at 10k). bench/search.py measured both ends on
# the synthetic index: 99.5% identical top-10 at 1M, 100% at 10k (BENCHMARKS.md).
MIN_PROBE_LISTS = 8


def probe_lists(num_lists: int) -> int:
    """Lists whose videos a query re-scores exactly, of ``num_lists``."""
    return max(MIN_PROBE_LISTS, math.ceil(math.sqrt(num_lists)))


def candidate_count(lists: InvertedLists, top_k: int) -> int:
    """Videos re-scored exactly by default: those of ``probe_lists`` lists of average size."""
    num_lists = len(lists.centroids)
    return max(top_k, probe_lists(num_lists) * math.ceil(len(lists) / num_lists))


# Cones per list for the bound (``frame_cones``): more cones fit the frames more tightly
# (fewer lists scored) and cost more per query (L x K x CONES_PER_LIST dot products).
# bench/search.py --cones measured 4, 8 and 16 at 1M (BENCHMARKS.md).
CONES_PER_LIST = 8


@dataclass
class Cones:
    """Every list's frames in ``S`` cones: unit ``axes [K, S, D]``; each frame of list k is
    within the angle ``arccos(cos_radius[k, s])`` of one of its axes; ``max_norm [K]``
    the longest frame of the list (1 up to the index's fp16 rounding)."""

    axes: torch.Tensor
    cos_radius: torch.Tensor
    sin_radius: torch.Tensor
    max_norm: torch.Tensor


def frame_cones(lists: InvertedLists, count: int = CONES_PER_LIST, iterations: int = 6) -> Cones:
    """Cones around each list's frames: a few spherical k-means steps on the frames of the
    list, then each cone's radius is the widest angle of a frame filed under it (so the
    bound holds whatever k-means found). Built when a slice is loaded (1-2 s at 1M)."""
    F, D = lists.shape
    K = len(lists.centroids)
    device = lists.slabs.device
    axes = torch.zeros(K, count, D, device=device)
    cos_radius = torch.ones(K, count, device=device)
    max_norm = torch.zeros(K, device=device)
    generator = torch.Generator().manual_seed(0)
    for k in np.flatnonzero(np.diff(lists.offsets)):
        frames = lists.slab(k).reshape(-1, D).float()
        norms = frames.norm(dim=1)
        frames = frames[norms > 0] / norms[norms > 0, None]
        if not len(frames):
            continue
        max_norm[k] = norms.max()
        pick = torch.randperm(len(frames), generator=generator)[:count].to(device)
        centre = frames[pick]
        for _ in range(iterations):
            nearest = (frames @ centre.T).argmax(1)
            sums = torch.zeros_like(centre).index_add_(0, nearest, frames)
            centre = torch.nn.functional.normalize(sums, dim=1)
        cos = frames @ centre.T
        nearest = cos.argmax(1)
        lowest = torch.ones(len(centre), device=device).scatter_reduce(
            0, nearest, cos.gather(1, nearest[:, None])[:, 0], "amin"
        )
        # fp32 rounding of the dot products: widen each cone by a hair.
        axes[k, : len(centre)] = centre
        cos_radius[k, : len(centre)] = (lowest - 1e-6).clamp(-1, 1)
        cos_radius[k, len(centre) :] = lowest[0]  # unused slots repeat a real cone
        axes[k, len(centre) :] = centre[0]
    sin_radius = (1 - cos_radius.square()).clamp(min=0).sqrt()
    return Cones(axes, cos_radius, sin_radius, max_norm)


@dataclass
class InvertedLists:
    """A slice's videos grouped by inverted list, each list's frames frame-major.

    List ``k`` holds rows ``offsets[k]:offsets[k + 1]`` (of the slice sorted by list); its
    frames are one contiguous ``[F, n_k, D]`` slab of ``slabs``, which the exact kernel reads
    as it is (no gather, no transpose per query).
    """

    centroids: torch.Tensor  # [K, D]
    offsets: np.ndarray  # [K + 1] int64
    slabs: torch.Tensor  # [V * F * D]: list after list, each [F, n_k, D]
    weights: torch.Tensor  # [V, F], rows in list order
    shape: tuple[int, int]  # (F, D)
    cones: Cones | None = None  # every list's frames in a few cones (``frame_cones``)

    @staticmethod
    def build(
        lists: np.ndarray, centroids: np.ndarray, frames: torch.Tensor, weights: torch.Tensor
    ) -> tuple[np.ndarray, InvertedLists]:
        """(the row order that groups ``lists``, the lists of ``frames [V, F, D]`` in that order)."""
        order = np.argsort(lists, kind="stable")
        counts = np.bincount(lists, minlength=len(centroids))
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        V, F, D = frames.shape
        slabs = torch.empty(V * F * D, dtype=frames.dtype, device=frames.device)
        rows = torch.from_numpy(order).to(frames.device)
        for k in np.flatnonzero(counts):
            lo, hi = offsets[k], offsets[k + 1]
            slabs[lo * F * D : hi * F * D].view(F, hi - lo, D).copy_(
                frames[rows[lo:hi]].transpose(0, 1)
            )
        c = torch.from_numpy(np.asarray(centroids, np.float32)).to(frames.device)
        lists = InvertedLists(c, offsets, slabs, weights[rows], (F, D))
        lists.cones = frame_cones(lists)
        return order, lists

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def slab(self, k: int) -> torch.Tensor:
        (F, D), lo, hi = self.shape, self.offsets[k], self.offsets[k + 1]
        return self.slabs[lo * F * D : hi * F * D].view(F, hi - lo, D)

    def video(self, row: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One video's frames ``[F, D]`` and frame weights ``[F]`` (``row`` in list order)."""
        k = int(np.searchsorted(self.offsets, row, side="right")) - 1
        return self.slab(k)[:, row - self.offsets[k]], self.weights[row]

    def probe(self, query_pooled: torch.Tensor, rows: int) -> np.ndarray:
        """The best lists for one query (``[D]``), until they hold at least ``rows`` videos."""
        sizes = np.diff(self.offsets)
        ranked = (
            torch.argsort(self.centroids @ query_pooled.to(self.centroids), descending=True)
            .cpu()
            .numpy()
        )
        ranked = ranked[sizes[ranked] > 0]
        return ranked[: int(np.searchsorted(np.cumsum(sizes[ranked]), rows)) + 1]

    def bounds(self, text: torch.Tensor, text_weight: torch.Tensor) -> torch.Tensor:
        """For one query (``[L, D]``, ``[L]``, prepared): ``[K]``, no video of list k scores
        above ``bounds[k]`` (``frame_cones``)."""
        cones = self.cones
        text = text.to(cones.axes)
        norm = text.norm(dim=-1)  # 1, or 0 for padding
        cos = torch.einsum("ld,ksd->lks", text / norm.clamp(min=1e-12)[:, None], cones.axes)
        sin = (1 - cos.square()).clamp(min=0).sqrt()
        # The largest cosine of a token to any frame within angle r of the axis: cos(a - r),
        # or 1 when the token itself is within r.
        best = torch.where(
            cos >= cones.cos_radius, 1.0, cos * cones.cos_radius + sin * cones.sin_radius
        )
        # Per token and list: the largest similarity to a frame (a padded frame gives 0).
        best = (best.amax(2) * cones.max_norm * norm[:, None]).clamp(min=0)  # [L, K]
        weight = text_weight.to(best)
        # t2v weighs each token's best frame (weights sum to 1); v2t weighs each frame's best
        # token by frame weights summing to 1: at most the best token-frame similarity.
        return ((weight @ best) + best.amax(0)) / 2

    def rows(self, lists: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(
            np.concatenate([np.arange(self.offsets[k], self.offsets[k + 1]) for k in lists])
        )

    def scores(
        self, text: torch.Tensor, text_weight: torch.Tensor, lists: np.ndarray
    ) -> torch.Tensor:
        """Exact scores ``[A, n]`` of the videos of ``lists``, in ``rows(lists)`` order."""
        dtype = self.slabs.dtype
        text = text.to(self.slabs.device, dtype)
        text_weight = text_weight.to(self.slabs.device)
        return torch.cat(
            [
                frame_major_scores(
                    text,
                    text_weight,
                    self.slab(k),
                    self.weights[self.offsets[k] : self.offsets[k + 1]],
                )
                for k in lists
            ],
            1,
        )


@torch.no_grad()
def search_lists(
    text: torch.Tensor,
    text_weight: torch.Tensor,
    text_pooled: torch.Tensor,
    lists: InvertedLists,
    top_k: int,
    exact: bool = False,
    candidates: int | None = None,
    stats: dict | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The best ``top_k`` of a slice held as inverted lists: (scores ``[A, k]``, rows ``[A, k]`` in
    list order), best first. By the lists' bounds (exact top-k) unless ``candidates`` asks
    for the fixed centroid rule; ``exact`` scores every list. ``stats["scored"]`` (when
    given) counts the videos scored."""
    stats = stats if stats is not None else {}
    stats.setdefault("scored", 0)
    top_k = min(top_k, len(lists))
    text, text_weight = trim_padding(text, text_weight)
    every = np.flatnonzero(np.diff(lists.offsets))
    best, found = [], []
    for a in range(text.shape[0]):
        query = text[a : a + 1], text_weight[a : a + 1]
        if exact or (candidates and max(candidates, top_k) >= len(lists)):
            probed = every
        elif candidates:
            probed = lists.probe(text_pooled[a], max(candidates, top_k))
        else:
            scores, rows = bounded_search(*query, lists, top_k, stats)
            best.append(scores)
            found.append(rows)
            continue
        scores = lists.scores(*query, probed)[0]
        stats["scored"] += len(scores)
        top = scores.topk(top_k)
        best.append(top.values)
        found.append(lists.rows(probed).to(top.indices.device)[top.indices])
    return torch.stack(best), torch.stack(found)


def bounded_search(
    text: torch.Tensor,
    text_weight: torch.Tensor,
    lists: InvertedLists,
    top_k: int,
    stats: dict | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One query's exact top-k (scores ``[k]``, rows ``[k]``): lists in the order of their
    bounds, a batch at a time, until no list left can beat the k-th score so far."""
    bounds = lists.bounds(text[0], text_weight[0]).cpu()
    order = torch.argsort(bounds, descending=True).numpy()
    order = order[np.diff(lists.offsets)[order] > 0]
    sizes = np.diff(lists.offsets)[order]
    bounds = bounds.numpy()[order]
    # The first batch: the fewest lists holding top_k videos; then as many again each time.
    step = max(1, int(np.searchsorted(np.cumsum(sizes), top_k)) + 1)
    kept_scores = torch.empty(0)
    kept_rows = torch.empty(0, dtype=torch.long)
    done = 0
    while done < len(order):
        batch = order[done : done + step]
        done += len(batch)
        scores = lists.scores(text, text_weight, batch)[0].cpu()
        if stats is not None:
            stats["scored"] = stats.get("scored", 0) + len(scores)
        kept_scores = torch.cat([kept_scores, scores])
        kept_rows = torch.cat([kept_rows, lists.rows(batch)])
        if len(kept_scores) > top_k:
            top = kept_scores.topk(top_k)
            kept_scores, kept_rows = top.values, kept_rows[top.indices]
        if len(kept_scores) >= top_k and done < len(order) and bounds[done] <= kept_scores.min():
            break
    top = kept_scores.topk(top_k)
    device = lists.slabs.device
    return top.values.to(device), kept_rows[top.indices].to(device)


def trim_padding(
    text: torch.Tensor, text_weight: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
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
