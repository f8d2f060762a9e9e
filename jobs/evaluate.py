"""Evaluation of a checkpoint folder; ``jobs/train.py`` runs it after training.

    python jobs/evaluate.py --checkpoint runs/wti/checkpoint            # synthetic MSR-VTT test set
    python jobs/evaluate.py --checkpoint runs/pitvqa/checkpoint         # synthetic pit24 validation set
    python jobs/evaluate.py --checkpoint DIR --val_csv ... --data_path ... --features_path ... --train_csv ...

Retrieval: texts and videos are encoded by Ray Data actor pools (one GPU each when the
cluster has GPUs), the ``[texts, videos]`` similarity matrix is computed sharded (each Ray
worker scores every text against its slice of the videos with the exact kernel) and the
shards are merged for t2v/v2t R@1/5/10, MdR and MnR. VQA: accuracy, macro P/R/F1,
balanced accuracy and the majority-class baseline. Writes ``metrics.json`` and PNG plots.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import ray  # noqa: E402
import torch  # noqa: E402

from cluster import per_gpu  # noqa: E402
from jobs.metrics import retrieval_metrics, retrieval_ranks, vqa_metrics  # noqa: E402
from jobs.plots import plot_confusion, plot_recall_curve  # noqa: E402
from jobs.similarity import sharded_similarity  # noqa: E402
from models import load_checkpoint, tokenize  # noqa: E402

PROG = "jobs/evaluate.py"


class CheckpointModel:
    """Loads the checkpoint once per actor, on its GPU when it has one."""

    def __init__(self, checkpoint: str):
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model, self.tokenizer = load_checkpoint(checkpoint, device=self.device)


class TextEncoder(CheckpointModel):
    """Rows ``row``/``caption`` -> prepared text tokens ``[n, L, D]`` and weights ``[n, L]``."""

    @torch.no_grad()
    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        tokens = tokenize(self.tokenizer, list(batch["caption"]), self.model.config.max_words)
        feat, mask = self.model.encode_text(tokens["input_ids"].to(self.device), tokens["attention_mask"].to(self.device))
        text, weight = self.model.prepare_text(feat, mask)
        return {"row": batch["row"], "tokens": text.float().cpu().numpy(), "weights": weight.float().cpu().numpy()}


class VideoEncoder(CheckpointModel):
    """Rows ``video_id``/``pixel_values``/``frame_mask`` -> prepared frames and weights."""

    @torch.no_grad()
    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        pixels = torch.tensor(batch["pixel_values"], device=self.device)
        feat, mask = self.model.encode_video(pixels, torch.tensor(batch["frame_mask"], device=self.device))
        video, weight = self.model.prepare_video(feat, mask)
        return {"video_id": batch["video_id"], "tokens": video.float().cpu().numpy(), "weights": weight.float().cpu().numpy()}


class VQAPredictor(CheckpointModel):
    """Model-ready VQA rows -> predicted class and its probability."""

    @torch.no_grad()
    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        logits = self.model(*(torch.tensor(batch[k], device=self.device)
                              for k in ("pixel_values", "input_ids", "attention_mask")))
        probs = logits.softmax(-1)
        return {"label": batch["label"], "pred": probs.argmax(-1).cpu().numpy(),
                "confidence": probs.max(-1).values.cpu().numpy()}


def _run_pool(ds: ray.data.Dataset, udf, checkpoint: Path, use_gpu: bool, batch_size: int = 32) -> dict[str, np.ndarray]:
    out = ds.map_batches(
        udf, fn_constructor_kwargs={"checkpoint": str(checkpoint)}, batch_size=batch_size,
        compute=ray.data.ActorPoolStrategy(size=per_gpu(use_gpu)), num_gpus=1 if use_gpu else 0,
    ).to_pandas()
    return {column: np.stack(out[column].to_numpy()) if column in ("tokens", "weights") else out[column].to_numpy()
            for column in out.columns}


def evaluate_retriever(checkpoint: Path, test_pairs: list[tuple[str, str]], test_video_ids: list[str],
                       test_videos: ray.data.Dataset, output_dir: Path, num_shards: int | None = None,
                       use_gpu: bool = False) -> dict:
    """``metrics.json`` and ``recall.png`` for the test captions against the test videos."""
    output_dir.mkdir(parents=True, exist_ok=True)
    texts = _run_pool(ray.data.from_items([{"row": i, "caption": c} for i, (_, c) in enumerate(test_pairs)]),
                      TextEncoder, checkpoint, use_gpu)
    videos = _run_pool(test_videos, VideoEncoder, checkpoint, use_gpu)
    text_order = np.argsort(texts["row"])
    position = {video_id: i for i, video_id in enumerate(videos["video_id"])}
    video_order = np.array([position[v] for v in test_video_ids])
    column = {video_id: i for i, video_id in enumerate(test_video_ids)}
    text_video = np.array([column[video_id] for video_id, _ in test_pairs])
    num_shards = num_shards or per_gpu(use_gpu, cpu_default=2)
    sim = sharded_similarity(
        torch.from_numpy(texts["tokens"][text_order]), torch.from_numpy(texts["weights"][text_order]),
        torch.from_numpy(videos["tokens"][video_order]), torch.from_numpy(videos["weights"][video_order]),
        num_shards=num_shards, use_gpu=use_gpu, dtype=torch.float16 if use_gpu else None,
    )
    metrics = {**retrieval_metrics(sim, text_video), "num_shards": num_shards, "checkpoint": str(checkpoint)}
    plot_recall_curve(*retrieval_ranks(sim, text_video), output_dir / "recall.png")
    _write(metrics, output_dir)
    return metrics


def evaluate_vqa(checkpoint: Path, val: ray.data.Dataset, labels: list[str], train_labels: np.ndarray,
                 output_dir: Path, use_gpu: bool = False) -> dict:
    """``metrics.json`` and ``confusion.png`` on the validation questions."""
    output_dir.mkdir(parents=True, exist_ok=True)
    out = _run_pool(val, VQAPredictor, checkpoint, use_gpu, batch_size=64)
    metrics, confusion = vqa_metrics(out["label"], out["pred"], len(labels), train_labels)
    metrics["checkpoint"] = str(checkpoint)
    plot_confusion(confusion, labels, output_dir / "confusion.png")
    _write(metrics, output_dir)
    return metrics


def _write(metrics: dict, output_dir: Path) -> None:
    (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")


def summary(metrics: dict) -> str:
    """One line a person reads first."""
    if "t2v" in metrics:
        t2v, v2t = metrics["t2v"], metrics["v2t"]
        return (f"test t2v R@1 {t2v['R@1']:.1f} R@5 {t2v['R@5']:.1f} R@10 {t2v['R@10']:.1f} MdR {t2v['MdR']:.0f} | "
                f"v2t R@1 {v2t['R@1']:.1f} | chance R@1 {metrics['chance_R@1']:.1f} "
                f"({metrics['num_texts']} texts x {metrics['num_videos']} videos)")
    return (f"val acc {100 * metrics['acc']:.1f}% | macro-F1 {metrics['f1']:.3f} | balanced acc "
            f"{100 * metrics['balanced_acc']:.1f}% | majority class {100 * metrics['majority_acc']:.1f}% "
            f"({metrics['num_questions']} questions)")


def evaluate(args, kind: str, checkpoint: Path, data, output_dir: Path, use_gpu: bool) -> dict:
    """Evaluate ``checkpoint`` on prepared data (``jobs.data.prepare_data``)."""
    if kind == "retriever":
        return evaluate_retriever(checkpoint, data.test_pairs, data.test_video_ids, data.test_videos, output_dir,
                                  args.num_shards, use_gpu)
    return evaluate_vqa(checkpoint, data.val, data.labels, data.train_labels, output_dir, use_gpu)


def main(argv: list[str] | None = None) -> int:
    from jobs.args import build_parser, resolve
    from cluster import connect, training_scale
    from jobs.cli import fail
    from jobs.data import DataError, prepare_data
    from models.checkpoint import load_checkpoint, read_config

    args = build_parser(PROG, __doc__, evaluate=True).parse_args(argv)
    checkpoint = Path(args.checkpoint).resolve()
    try:
        kind = read_config(checkpoint)["model"]
    except (FileNotFoundError, ValueError, KeyError) as err:
        return fail(PROG, f"--checkpoint: {err}")
    args.kind = kind
    args.output_dir = str(Path(args.output_dir).resolve() if args.output_dir else checkpoint.parent)
    args.synthetic_dir = str(Path(args.synthetic_dir).expanduser().resolve())
    error = resolve(args, kind)
    if error:
        return fail(PROG, error)
    connect()
    scaled = training_scale(args.num_workers, args.use_gpu)
    if isinstance(scaled, str):
        return fail(PROG, scaled)
    model, tokenizer = load_checkpoint(checkpoint)
    try:
        data, _, _ = prepare_data(args, tokenizer, model.config)
    except (DataError, FileNotFoundError, ValueError) as err:
        return fail(PROG, str(err))
    metrics = evaluate(args, kind, checkpoint, data, Path(args.output_dir), scaled[1])
    print(summary(metrics))
    print(f"metrics.json and plots in {args.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
