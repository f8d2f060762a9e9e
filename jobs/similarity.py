"""The text-video similarity matrix computed sharded over Ray workers.

The videos are split into shards; each Ray task (one GPU each when the cluster has GPUs)
scores every text against its shard with the exact blockwise WTI kernel
(``models.token_wise_scores``), and the column blocks are concatenated in order.
"""
from __future__ import annotations

import numpy as np
import ray
import torch

from models import token_wise_scores


@ray.remote
def _score_shard(text, text_weight, video, video_weight, dtype_name):
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = getattr(torch, dtype_name) if dtype_name else None
    with torch.no_grad():
        scores = token_wise_scores(text.to(device), text_weight.to(device), video.to(device),
                                   video_weight.to(device), dtype=dtype)
    return scores.float().cpu().numpy()


def sharded_similarity(text: torch.Tensor, text_weight: torch.Tensor, video: torch.Tensor, video_weight: torch.Tensor,
                       num_shards: int, use_gpu: bool = False, dtype: torch.dtype | None = None) -> np.ndarray:
    """``[A, V]`` exact scores from prepared features (``WTIHead.prepare_text/video``).

    The texts go to the object store once; each of ``num_shards`` tasks gets one slice of
    the videos. On GPUs pass ``dtype=torch.float16`` for the fast path.
    """
    num_shards = max(1, min(num_shards, video.shape[0]))
    text_ref, weight_ref = ray.put(text.cpu()), ray.put(text_weight.cpu())
    bounds = np.linspace(0, video.shape[0], num_shards + 1).astype(int)
    task = _score_shard.options(num_gpus=1 if use_gpu else 0, num_cpus=0 if use_gpu else 1)
    refs = [task.remote(text_ref, weight_ref, video[lo:hi].cpu(), video_weight[lo:hi].cpu(),
                        str(dtype).replace("torch.", "") if dtype else None)
            for lo, hi in zip(bounds[:-1], bounds[1:])]
    return np.concatenate(ray.get(refs), axis=1)
