"""Evaluation of a checkpoint folder; ``jobs/train.py`` runs the same after training.

    python jobs/evaluate.py --checkpoint runs/wti/checkpoint            # synthetic MSR-VTT test set
    python jobs/evaluate.py --checkpoint runs/pitvqa/checkpoint         # synthetic pit24 validation set
    python jobs/evaluate.py --checkpoint DIR --val_csv ... --data_path ... --features_path ... --train_csv ...
    python jobs/evaluate.py --pretrained_clip_name ViT-B/32 --datatype msrvtt ...   # zero-shot CLIP
    python jobs/evaluate.py --init_model pytorch_model.bin.4 --pretrained_clip_name ViT-B/32 ...

Retrieval: the test captions and videos are encoded on Ray Data (``jobs.encode``); each
Ray task scores every text against its slice of the videos with the exact kernel and
returns rank counts, not scores (``jobs.similarity``), so no process ever holds the
``[texts, videos]`` matrix; t2v/v2t R@1/5/10, MdR and MnR follow from the ranks. VQA:
accuracy, macro P/R/F1, balanced accuracy, the majority-class baseline and per-type
accuracy. Writes ``metrics.json`` and PNG plots, and logs them as an MLflow run
(``cluster.tracking``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PROG = "jobs/evaluate.py"


def evaluate_retriever(
    checkpoint: Path,
    test_pairs: list[tuple[str, str]],
    test_video_ids: list[str],
    videos: dict,
    output_dir: Path,
    num_shards: int | None = None,
    use_gpu: bool = False,
    compute_dtype: str = "fp32",
) -> dict:
    """``metrics.json`` and ``recall.png`` for the test captions against the test videos.

    ``videos``: the test videos' encodings (``jobs.encode.ClipEncoder`` columns, any order),
    encoded in ``compute_dtype`` as the captions are here; the scores are exact in fp32.
    """
    import numpy as np
    import ray
    import torch

    from cluster import per_gpu
    from jobs.encode import TextEncoder, collect, encode
    from jobs.metrics import metrics_from_ranks
    from jobs.plots import plot_recall_curve
    from jobs.similarity import sliced_ranks

    output_dir.mkdir(parents=True, exist_ok=True)
    captions = ray.data.from_items(
        [{"row": i, "caption": c} for i, (_, c) in enumerate(test_pairs)]
    )
    texts = collect(encode(captions, TextEncoder, checkpoint, use_gpu, 32, compute_dtype))
    text_order = np.argsort(texts["row"])
    position = {video_id: i for i, video_id in enumerate(videos["video_id"])}
    video_order = np.array([position[v] for v in test_video_ids])
    column = {video_id: i for i, video_id in enumerate(test_video_ids)}
    text_video = np.array([column[video_id] for video_id, _ in test_pairs])
    num_shards = num_shards or per_gpu(use_gpu, cpu_default=2)
    t2v, v2t, num_shards = sliced_ranks(
        texts["features"][text_order],
        texts["weights"][text_order],
        videos["frames"][video_order],
        videos["weights"][video_order],
        text_video,
        num_slices=num_shards,
        use_gpu=use_gpu,
        dtype=torch.float32,  # exact scores of the features given, on a GPU too
    )
    metrics = {
        **metrics_from_ranks(t2v, v2t, len(test_video_ids)),
        "num_shards": num_shards,
        "compute_dtype": compute_dtype,
        "checkpoint": str(checkpoint),
    }
    plot_recall_curve(t2v, v2t, output_dir / "recall.png")
    _write(metrics, output_dir)
    return metrics


def evaluate_vqa(
    checkpoint: Path,
    val,
    labels: list[str],
    train_labels,
    output_dir: Path,
    use_gpu: bool = False,
    class_types: list[str] | None = None,
    compute_dtype: str = "fp32",
) -> dict:
    """``metrics.json`` and ``confusion.png`` on the validation questions (a Ray Dataset)."""
    from jobs.encode import VQAPredictor, collect, encode
    from jobs.metrics import vqa_metrics
    from jobs.plots import plot_confusion

    output_dir.mkdir(parents=True, exist_ok=True)
    out = collect(encode(val, VQAPredictor, checkpoint, use_gpu, 64, compute_dtype))
    metrics, confusion = vqa_metrics(
        out["label"], out["pred"], len(labels), train_labels, class_types
    )
    metrics["compute_dtype"] = compute_dtype
    metrics["checkpoint"] = str(checkpoint)
    plot_confusion(confusion, labels, output_dir / "confusion.png")
    _write(metrics, output_dir)
    return metrics


def evaluate_checkpoint(args, checkpoint: Path, output_dir: Path, use_gpu: bool) -> dict:
    """Read the data the flags name, sized and tokenized for the checkpoint, and evaluate
    (the model's recipe, ``jobs.recipes``, knows its data and its evaluation)."""
    from jobs.recipes import recipe_module
    from models.checkpoint import load_checkpoint

    recipe = recipe_module(args.kind)
    model, tokenizer = load_checkpoint(checkpoint)
    source = recipe.read_source(args)
    data = recipe.load_data(args, source, tokenizer, model.config, training=False)
    return recipe.evaluate(args, checkpoint, data, output_dir, use_gpu)


def _write(metrics: dict, output_dir: Path) -> None:
    (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")


def summary(metrics: dict) -> str:
    """One line a person reads first."""
    if "t2v" in metrics:
        t2v, v2t = metrics["t2v"], metrics["v2t"]
        return (
            f"test t2v R@1 {t2v['R@1']:.1f} R@5 {t2v['R@5']:.1f} R@10 {t2v['R@10']:.1f} MdR {t2v['MdR']:.0f} | "
            f"v2t R@1 {v2t['R@1']:.1f} | chance R@1 {metrics['chance_R@1']:.1f} "
            f"({metrics['num_texts']} texts x {metrics['num_videos']} videos)"
        )
    per_type = " ".join(
        f"{name} {100 * t['acc']:.0f}% ({100 * t['majority_acc']:.0f}%)"
        for name, t in metrics.get("per_type", {}).items()
    )
    per_type = f" | per type (majority): {per_type}" if per_type else ""
    return (
        f"val acc {100 * metrics['acc']:.1f}% | macro-F1 {metrics['f1']:.3f} | balanced acc "
        f"{100 * metrics['balanced_acc']:.1f}% | majority class {100 * metrics['majority_acc']:.1f}% "
        f"({metrics['num_questions']} questions)" + per_type
    )


def main(argv: list[str] | None = None) -> int:
    from jobs.args import build_parser, resolve
    from jobs.cli import fail
    from models.checkpoint import read_config

    args = build_parser(PROG, __doc__, evaluate=True).parse_args(argv)
    checkpoint = Path(args.checkpoint).resolve() if args.checkpoint else None
    if checkpoint is None:  # zero-shot (or --init_model): the retriever from the weight flags
        if not (args.clip_path or args.init_model):
            return fail(
                PROG,
                "give --checkpoint, or CLIP weights (--pretrained_clip_name ViT-B/32) to "
                "evaluate zero-shot, or --init_model",
            )
        args.kind, args.preset = "retriever", "base"
        default_dir = f"runs/zero_shot_{args.dataset or 'msrvtt'}"
    else:
        try:
            args.kind = read_config(checkpoint)["model"]
        except (FileNotFoundError, ValueError, KeyError) as err:
            return fail(PROG, f"--checkpoint: {err}")
        default_dir = checkpoint.parent
    args.output_dir = str(Path(args.output_dir or default_dir).resolve())
    args.synthetic_dir = str(Path(args.synthetic_dir).expanduser().resolve())
    error = resolve(args, args.kind)
    if error:
        return fail(PROG, error)

    from cluster import ClusterError, connect, use_gpus
    from cluster.tracking import EVALUATION, fail_run, finish, start, tracking_uri
    from jobs.data import DataError
    from jobs.distributed import compute_dtype
    from models.precision import is_large

    try:
        connect()
    except ClusterError as err:
        return fail(PROG, str(err))
    use_gpu = use_gpus(args.use_gpu)
    if isinstance(use_gpu, str):
        return fail(PROG, use_gpu)
    try:
        large = checkpoint is None or is_large(checkpoint)  # zero-shot: the CLIP weights
        args.compute_dtype = compute_dtype(args.precision, use_gpu, large)
    except ValueError as err:
        return fail(PROG, str(err))
    uri, run_id = tracking_uri(args), start(args, args.kind, "evaluate")
    try:
        if checkpoint is None:
            from jobs.recipes.retriever import starting_checkpoint

            checkpoint = starting_checkpoint(args, Path(args.output_dir))
        metrics = evaluate_checkpoint(args, checkpoint, Path(args.output_dir), use_gpu)
    except (DataError, FileNotFoundError, ValueError) as err:
        fail_run(uri, run_id)
        return fail(PROG, str(err))
    finish(uri, run_id, Path(args.output_dir), metrics, files=EVALUATION)
    print(summary(metrics))
    print(f"metrics.json and plots in {args.output_dir}")
    return 0


if __name__ == "__main__":
    from jobs.cli import run

    run(main)
