"""Retrieval ranks computed over slices of the videos in Ray tasks, without the
``[texts, videos]`` matrix. (``--num_shards`` of the jobs sets how many slices.)

Each task holds one slice of the videos (the texts, ``A x L x D``, go to the object store
once and every task reads them) and scores its block with the exact blockwise kernel in
bounded memory. What comes back is what the ranks need, not the block:

1. the slice that holds a text's video returns that text's true score
   (``models.token_wise_true_scores``);
2. every slice returns, per text, how many of its videos score strictly higher, and, per
   caption of its own videos, the caption's rank among all texts on that video
   (``models.token_wise_rank_counts``).

t2v rank = 1 + the sum of the slices' counts; v2t rank of a video = its best caption's
rank. Ties count in the true item's favour, as CLIP4Clip's ``compute_metrics``. Slices are
cut on the kernel's block grid, so every score is bit-identical to the full matrix's and
the ranks equal the full-matrix path's exactly. Memory per process: O(texts + videos).
"""

from __future__ import annotations

import warnings

import numpy as np
import ray
import torch

from jobs.metrics import best_caption_ranks
from models.device import pick_device
from models.wti import token_wise_rank_counts, token_wise_true_scores, videos_per_block
from retrieval.ranges import even_ranges


def _tensor(array: np.ndarray, device: str) -> torch.Tensor:
    """A zero-copy view of an object-store array (read-only: the kernel never writes into
    its inputs), moved to the device."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "The given NumPy array is not writable"
        return torch.from_numpy(array).to(device)


def _columns(text_video: np.ndarray, lo: int, hi: int) -> torch.Tensor:
    """Each text's video position inside ``[lo, hi)``, or -1."""
    inside = (text_video >= lo) & (text_video < hi)
    return torch.from_numpy(np.where(inside, text_video - lo, -1)).long()


def _slice_inputs(text, text_weight, video, video_weight, text_video, lo, hi):
    device = pick_device()
    return (
        _tensor(text, device),
        _tensor(text_weight, device),
        _tensor(video[lo:hi], device),
        _tensor(video_weight[lo:hi], device),
        _columns(text_video, lo, hi).to(device),
    )


@ray.remote
def _true_scores(text, text_weight, video, video_weight, text_video, lo, hi, dtype_name):
    inputs = _slice_inputs(text, text_weight, video, video_weight, text_video, lo, hi)
    dtype = getattr(torch, dtype_name) if dtype_name else None
    return token_wise_true_scores(*inputs, offset=lo, dtype=dtype).cpu().numpy()


@ray.remote
def _rank_counts(
    text, text_weight, video, video_weight, text_video, true_score, lo, hi, dtype_name
):
    inputs = _slice_inputs(text, text_weight, video, video_weight, text_video, lo, hi)
    dtype = getattr(torch, dtype_name) if dtype_name else None
    higher, text_rank = token_wise_rank_counts(
        *inputs, _tensor(true_score, inputs[0].device), offset=lo, dtype=dtype
    )
    return higher.cpu().numpy(), text_rank.cpu().numpy()


def slice_bounds(
    num_videos: int, num_slices: int, num_tokens: int, num_frames: int, use_gpu: bool
) -> list[int]:
    """At most ``num_slices + 1`` cut points, each on the kernel's block grid (so the slices'
    scores are the full matrix's, bit for bit): the blocks cut into even ranges."""
    block = videos_per_block(num_tokens, num_frames, "cuda" if use_gpu else "cpu")
    blocks = -(-num_videos // block)
    ranges = even_ranges(blocks, max(1, min(num_slices, blocks)))
    return [0] + [min(num_videos, block * hi) for _, hi in ranges]


def _in_object_store(x) -> ray.ObjectRef:
    if isinstance(x, ray.ObjectRef):
        return x
    return ray.put(x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x))


def sliced_ranks(
    text,
    text_weight,
    video,
    video_weight,
    text_video: np.ndarray,
    num_slices: int,
    use_gpu: bool = False,
    dtype: torch.dtype | None = None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """(t2v ranks ``[A]``, v2t ranks ``[V']``, slices used) from prepared features;
    ``text_video[t]`` is text t's video (a position in ``video``). v2t covers the videos
    that have a caption, in video order. ``dtype``: the kernel's (evaluation passes fp32).

    The features are tensors, arrays or object refs to arrays (then this process never
    reads them: the tasks map them zero-copy). Each goes to the object store once; a
    task reads the texts and its slice of the videos, and holds one column block.
    """
    text_video = np.asarray(text_video, dtype=np.int64)
    refs = [_in_object_store(x) for x in (text, text_weight, video, video_weight)]
    num_tokens, (num_videos, num_frames) = _shape(text)[1], _shape(video)[:2]
    bounds = slice_bounds(num_videos, num_slices, num_tokens, num_frames, use_gpu)
    text_video_ref = ray.put(text_video)
    dtype_name = str(dtype).replace("torch.", "") if dtype else None
    resources = {"num_gpus": 1, "num_cpus": 0} if use_gpu else {"num_cpus": 1}
    slices = list(zip(bounds[:-1], bounds[1:]))
    true_score = np.full(len(text_video), np.nan, np.float32)
    for part in ray.get(
        [
            _true_scores.options(**resources).remote(*refs, text_video_ref, lo, hi, dtype_name)
            for lo, hi in slices
        ]
    ):
        np.copyto(true_score, part, where=~np.isnan(part))
    true_ref = ray.put(true_score)
    higher = np.zeros(len(text_video), np.int64)
    text_rank = np.zeros(len(text_video), np.int64)
    for slice_higher, slice_rank in ray.get(
        [
            _rank_counts.options(**resources).remote(
                *refs, text_video_ref, true_ref, lo, hi, dtype_name
            )
            for lo, hi in slices
        ]
    ):
        higher += slice_higher
        text_rank += slice_rank
    return 1 + higher, best_caption_ranks(text_rank, text_video, num_videos), len(slices)


def _shape(value) -> tuple[int, ...]:
    """The shape of a feature array or of the one a ref names, without reading its data
    (an object-store array is mapped, not copied)."""
    return tuple((ray.get(value) if isinstance(value, ray.ObjectRef) else value).shape)
