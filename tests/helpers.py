"""Helpers the tests share (importable as ``helpers``: ``tests/`` is on the test path)."""

import json

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


# -- the training jobs' tests --------------------------------------------------------------

VQA_SCHEMA = {
    "type": "object",
    "required": [
        "acc",
        "precision",
        "recall",
        "f1",
        "balanced_acc",
        "num_questions",
        "num_classes",
    ],
    "properties": {
        k: {"type": "number", "minimum": 0, "maximum": 1}
        for k in ("acc", "precision", "recall", "f1")
    },
}


def retriever_args(synthetic_dir, output_dir, *extra):
    return [
        "--synthetic_dir",
        str(synthetic_dir),
        "--synthetic_train",
        "16",
        "--synthetic_test",
        "8",
        "--output_dir",
        str(output_dir),
        "--batch_size",
        "8",
        "--n_display",
        "0",
        *extra,
    ]


PACKED_MODEL = (
    "--interaction",
    "dp",
    "--sim_header",
    "meanP",
)  # conftest's packed run and the spread run


def history(output_dir):
    return [json.loads(line) for line in (output_dir / "history.jsonl").read_text().splitlines()]
