"""A Ray Train worker's batches: its dataset split as torch tensors on its device, without
copying (``jobs/train_loop.py`` reads training and validation through here, and
``bench/train.py`` times the same iterator)."""

from __future__ import annotations

import warnings

import numpy as np
import ray.train.torch
import torch
from ray.data.collate_fn import NumpyBatchCollateFn


class ZeroCopyCollate(NumpyBatchCollateFn):
    """Batches as zero-copy tensor views of their numpy arrays (Ray's default collation
    copies every column, which bench/train.py measured at 4x the cost). The arrays are
    read-only; the models never write into their inputs."""

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return {k: torch.from_numpy(v) for k, v in batch.items()}


def torch_batches(split, batch_size: int, shuffle_seed: int | None = None):
    """The worker's batches from its dataset split (``iter_torch_batches``), on its device.

    With a seed: a local shuffle buffer and the last incomplete batch dropped (BatchNorm
    cannot train on a batch of one); without: every row, in order (validation).
    """
    shuffle = shuffle_seed is not None
    return split.iter_torch_batches(
        batch_size=batch_size,
        drop_last=shuffle,
        collate_fn=ZeroCopyCollate(),
        device=ray.train.torch.get_device(),
        local_shuffle_buffer_size=4 * batch_size if shuffle else None,
        local_shuffle_seed=shuffle_seed,
    )
