"""Retrieval ranks computed sharded over Ray tasks, without the ``[texts, videos]`` matrix.

Each shard holds one slice of the videos (the texts, ``A x L x D``, go to the object store
once and every shard reads them) and scores its block with the exact blockwise kernel in
bounded memory. What comes back is what the ranks need, not the block:

1. the shard that holds a text's video returns that text's true score
   (``models.token_wise_true_scores``);
2. every shard returns, per text, how many of its videos score strictly higher, and, per
   caption of its own videos, the caption's rank among all texts on that video
   (``models.token_wise_rank_counts``).

t2v rank = 1 + the sum of the shards' counts; v2t rank of a video = its best caption's
rank. Ties count in the true item's favour, as CLIP4Clip's ``compute_metrics``. Shards are
cut on the kernel's block grid, so every score is bit-identical to the full matrix's and
the ranks equal the full-matrix path's exactly. Memory per process: O(texts + videos).
"""
from __future__ import annotations

import numpy as np
import ray
import torch

from models import token_wise_rank_counts, token_wise_true_scores
from models.wti import videos_per_block


def _device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _columns(text_video: np.ndarray, lo: int, hi: int) -> torch.Tensor:
    """Each text's video position inside ``[lo, hi)``, or -1."""
    inside = (text_video >= lo) & (text_video < hi)
    return torch.from_numpy(np.where(inside, text_video - lo, -1)).long()


@ray.remote
def _true_scores(text, text_weight, video, video_weight, text_video, lo, dtype_name):
    device, dtype = _device(), getattr(torch, dtype_name) if dtype_name else None
    columns = _columns(text_video, lo, lo + video.shape[0]).to(device)
    return token_wise_true_scores(text.to(device), text_weight.to(device), video.to(device), video_weight.to(device),
                                  columns, offset=lo, dtype=dtype).cpu().numpy()


@ray.remote
def _rank_counts(text, text_weight, video, video_weight, text_video, true_score, lo, dtype_name):
    device, dtype = _device(), getattr(torch, dtype_name) if dtype_name else None
    columns = _columns(text_video, lo, lo + video.shape[0]).to(device)
    higher, text_rank = token_wise_rank_counts(
        text.to(device), text_weight.to(device), video.to(device), video_weight.to(device), columns,
        torch.from_numpy(true_score).to(device), offset=lo, dtype=dtype)
    return higher.cpu().numpy(), text_rank.cpu().numpy()


def shard_bounds(num_videos: int, num_shards: int, num_tokens: int, num_frames: int, use_gpu: bool) -> list[int]:
    """``num_shards + 1`` cut points, each on the kernel's block grid (so the shards' scores
    are the full matrix's, bit for bit), as even as that allows."""
    block = videos_per_block(num_tokens, num_frames, "cuda" if use_gpu else "cpu")
    blocks = -(-num_videos // block)
    num_shards = max(1, min(num_shards, blocks))
    cuts = [min(num_videos, block * round(i * blocks / num_shards)) for i in range(num_shards + 1)]
    return sorted(set(cuts))


def sharded_ranks(text: torch.Tensor, text_weight: torch.Tensor, video: torch.Tensor, video_weight: torch.Tensor,
                  text_video: np.ndarray, num_shards: int, use_gpu: bool = False,
                  dtype: torch.dtype | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """(t2v ranks ``[A]``, v2t ranks ``[V']``, shards used) from prepared features; ``text_video[t]`` is
    text t's video (a position in ``video``). v2t covers the videos that have a caption, in
    video order. On GPUs pass ``dtype=torch.float16`` for the fast path. The driver holds
    its inputs and ``[A]`` counts; each shard its slice, the texts and one column block.
    """
    text_video = np.asarray(text_video, dtype=np.int64)
    bounds = shard_bounds(video.shape[0], num_shards, text.shape[1], video.shape[1], use_gpu)
    refs = [ray.put(x) for x in (text.cpu(), text_weight.cpu(), text_video)]
    slices = [(lo, ray.put(video[lo:hi].cpu()), ray.put(video_weight[lo:hi].cpu()))
              for lo, hi in zip(bounds[:-1], bounds[1:])]
    dtype_name = str(dtype).replace("torch.", "") if dtype else None
    resources = {"num_gpus": 1, "num_cpus": 0} if use_gpu else {"num_cpus": 1}
    true_score = np.full(text.shape[0], np.nan, np.float32)
    for part in ray.get([_true_scores.options(**resources).remote(*refs[:2], v, vw, refs[2], lo, dtype_name)
                         for lo, v, vw in slices]):
        np.copyto(true_score, part, where=~np.isnan(part))
    true_ref = ray.put(true_score)
    higher = np.zeros(text.shape[0], np.int64)
    text_rank = np.zeros(text.shape[0], np.int64)
    for shard_higher, shard_rank in ray.get([
            _rank_counts.options(**resources).remote(*refs[:2], v, vw, refs[2], true_ref, lo, dtype_name)
            for lo, v, vw in slices]):
        higher += shard_higher
        text_rank += shard_rank
    return 1 + higher, best_caption_ranks(text_rank, text_video, video.shape[0]), len(slices)


def best_caption_ranks(text_rank: np.ndarray, text_video: np.ndarray, num_videos: int) -> np.ndarray:
    """v2t: each video's best (lowest) caption rank, for the videos that have a caption."""
    best = np.full(num_videos, np.iinfo(np.int64).max)
    np.minimum.at(best, text_video, text_rank)
    return best[best != np.iinfo(np.int64).max]
