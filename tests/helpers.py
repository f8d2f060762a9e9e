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


def packed_args(synthetic_dir, output_dir, *extra):
    """The command of conftest's packed run without its injected failure: 2 Ray Train
    workers packed on one node, 2 epochs, no index."""
    return retriever_args(
        synthetic_dir,
        output_dir,
        "--epochs",
        "2",
        "--num_workers",
        "2",
        "--placement_strategy",
        "STRICT_PACK",
        "--no-index",
        *extra,
    )


def history(output_dir):
    return [json.loads(line) for line in (output_dir / "history.jsonl").read_text().splitlines()]


def mlflow_runs(output_dir, experiment="wti", job=None):
    """The MLflow runs of ``experiment`` in the local store beside ``output_dir`` (the
    jobs' default), oldest first, as (run, {metric: [(step, value), ...]}, artifact paths)."""
    from cluster.tracking import client, local_store

    store = client(local_store(output_dir.parent))
    found = store.get_experiment_by_name(experiment)
    runs = store.search_runs([found.experiment_id], order_by=["attributes.start_time ASC"])
    out = []
    for run in runs:
        if job and run.data.tags.get("job") != job:
            continue
        steps = {
            name: [(m.step, m.value) for m in store.get_metric_history(run.info.run_id, name)]
            for name in run.data.metrics
        }
        artifacts = {a.path for a in store.list_artifacts(run.info.run_id)}
        artifacts |= {a.path for a in store.list_artifacts(run.info.run_id, "checkpoint")}
        out.append((run, steps, artifacts))
    return out


# -- OpenAI CLIP archives (open_clip builds the OpenAI architecture) ----------------------


def save_torchscript(model, path) -> None:
    """``torch.jit.script(model).save(path)``, as OpenAI ships CLIP. Scripting parses the
    model's source with ``ast``, whose recursion-depth bookkeeping CPython 3.11 shares between
    threads: an ``ast`` call in another thread of the test process (Ray's, pytest's) makes it
    fail with "AST constructor recursion depth mismatch" (CPython gh-106905; seen once in a
    full run). The parse itself is deterministic, so it is tried again."""
    import torch

    for attempt in range(3):
        try:
            torch.jit.script(model).save(str(path))
            return
        except SystemError as err:
            if "recursion depth mismatch" not in str(err) or attempt == 2:
                raise


def tiny_openai_clip(seed=0):
    """An OpenAI-architecture ViT CLIP from open_clip at a tiny width, random weights (layer
    norms perturbed so that they matter)."""
    import torch
    from open_clip_ref import open_clip

    open_clip()  # imports open_clip (torchvision stubbed where it is absent)
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    torch.manual_seed(seed)
    model = CLIP(
        embed_dim=128,
        quick_gelu=True,
        vision_cfg=CLIPVisionCfg(layers=2, width=128, patch_size=16, image_size=64),
        text_cfg=CLIPTextCfg(context_length=77, vocab_size=49408, width=128, heads=2, layers=4),
    )
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "ln" in name:
                param.add_(0.1 * torch.randn_like(param))
    return model.eval()
