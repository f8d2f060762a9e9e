"""Helpers the tests share (importable as ``helpers``: ``tests/`` is on the test path)."""

import numpy as np

from retrieval.store import IndexRows, IndexWriter


def random_rows(n, first=0, frames=3, dim=8, seed=0):
    rng = np.random.default_rng(seed)
    return IndexRows(
        [f"v{first + i}" for i in range(n)],
        rng.standard_normal((n, frames, dim)).astype(np.float16),
        rng.random((n, frames)).astype(np.float32),
        np.ones((n, frames), np.uint8),
        rng.standard_normal((n, dim)).astype(np.float32),
    )


def written(folder, parts, rows_per_segment=7, append=False):
    writer = IndexWriter(
        folder, rows_per_segment=rows_per_segment, info={"checkpoint": "x"}, append=append
    )
    for part in parts:
        writer.add(part, [f"jpeg{v}".encode() for v in part.video_ids])
    return writer.close()
