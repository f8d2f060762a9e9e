"""Training throughput: one Ray Train worker against a plain PyTorch loop.

    python bench/train.py                      # tiny retriever, batch 32, 4 frames at 64 px, CPU
    python bench/train.py --model pitvqa --batch 32
    python bench/train.py --precision fp32,bf16                 # each precision, both sides
    python bench/train.py --size full --device cuda --batch 32  # ViT-B/32 CLIP (random weights)

Both sides run, in one process tree and on the same rows, the job's own step: the recipe
``jobs/train.py`` runs (``jobs.recipes``: the retriever's contrastive objective with its
AdamW parameter groups, clipping and warm-up + cosine schedule, or PitVQANet's
cross-entropy with Adam), built with the same seed on both sides. The plain loop slices
pre-built tensors; the Ray Train worker gets its batches from a materialised Ray Dataset
shard through ``iter_torch_batches`` (the training job's path) inside a ``TorchTrainer``.
Each side times its steps after a warm-up epoch, with the same number of torch threads
(the worker is given that many CPUs, which is what Ray sizes its thread pool by), and
splits each batch's time into the step itself and the wait for the batch (the hand-over).
``--size full`` builds the papers' architectures from their configs (``bench/full_size.py``)
with random weights; ``--device cuda`` runs both sides on one GPU. Prints a table and ends
with one JSON line. It starts a local Ray of its own unless RAY_ADDRESS names a cluster
(the dry run's test, tests/bench/test_bench_gpu.py, gives it the test session's).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def make_rows(
    model: str, num_rows: int, frames: int, size: int, seed: int = 0
) -> dict[str, np.ndarray]:
    """Random model-ready columns (the pipeline's output format)."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(2, 200, (num_rows, 16))
    mask = np.ones((num_rows, 16), np.int64)
    if model == "retriever":
        return {
            "input_ids": tokens,
            "attention_mask": mask,
            "pixel_values": rng.standard_normal((num_rows, frames, 3, size, size), np.float32),
            "frame_mask": np.ones((num_rows, frames), np.int64),
        }
    return {
        "input_ids": tokens,
        "attention_mask": mask,
        "label": rng.integers(0, 59, num_rows),
        "pixel_values": rng.random((num_rows, 3, size, size), np.float32),
    }


def model_config(model: str, size: int, frames: int, weights: dict | None):
    """The tiny preset at ``size`` px, or (``weights``: the folders of
    ``bench.full_size.build_weight_folders``) the papers' architectures."""
    from models import PitVQAConfig, RetrieverConfig

    if model == "retriever":
        if weights:
            return RetrieverConfig.base(
                str(weights["clip"]), max_words=16, max_frames=frames, sim_header="seqTransf"
            )
        return RetrieverConfig.tiny(vocab_size=256, image_size=size, max_frames=frames)
    if weights:
        return PitVQAConfig.base(
            str(weights["vit"]), str(weights["blip"]), str(weights["gpt2"]), max_length=16
        )
    return PitVQAConfig.tiny(vocab_size=256, image_size=size)


def build(config: dict, num_rows: int):
    """The job's recipe (``jobs.recipes``), seeded so both sides start equal: its model,
    optimizer, schedule, clipping and step, as ``jobs/train.py`` builds them."""
    from jobs.config import TrainConfig
    from jobs.recipes import recipe_for

    train_config = TrainConfig(
        model=config["model"],
        model_config=model_config(
            config["model"], config["size"], config["frames"], config["weights"]
        ).to_dict(),
        output_dir="unused",
        num_train_rows=num_rows,
        epochs=config["epochs"],
        batch_size=config["batch"],
        lr=1e-4 if config["weights"] else 1e-3,  # the base presets' and the tiny ones'
        seed=0,
        coef_lr=1.0,
        train_labels=[0],
        use_gpu=config["device"] == "cuda",
        compute_dtype=config["precision"],
    )
    recipe = recipe_for(config["model"])(train_config)
    recipe.model.to(config["device"])
    return recipe


def timed_epochs(recipe, batches_per_epoch, epochs: int) -> dict:
    """The fastest epoch after the first (a warm-up): ``samples_per_s``, and where its time
    went per batch: ``step_ms`` in the recipe's step, ``wait_ms`` waiting for the next batch
    (the hand-over). The best epoch, not the mean: on a small shared VM other processes
    steal whole slices of an epoch."""
    best = {"samples_per_s": 0.0}
    for epoch in range(epochs):
        seen = steps = 0
        waited = stepped = 0.0
        started = mark = time.perf_counter()
        for batch in batches_per_epoch():
            got = time.perf_counter()
            recipe.step(batch)
            done = time.perf_counter()
            waited, stepped, mark = waited + got - mark, stepped + done - got, done
            seen, steps = seen + len(batch["input_ids"]), steps + 1
        rate = seen / (time.perf_counter() - started)
        if epoch and rate > best["samples_per_s"]:
            best = {
                "samples_per_s": rate,
                "step_ms": 1000 * stepped / steps,
                "wait_ms": 1000 * waited / steps,
            }
    return best


def plain_loop(config: dict) -> dict:
    torch.set_num_threads(config["threads"])
    device = config["device"]
    rows = {k: torch.from_numpy(v).to(device) for k, v in config["rows"].items()}
    batch = config["batch"]
    recipe = build(config, len(rows["input_ids"]))

    def batches():
        for start in range(0, len(rows["input_ids"]) - batch + 1, batch):
            yield {k: v[start : start + batch] for k, v in rows.items()}

    return timed_epochs(recipe, batches, config["epochs"])


def ray_worker(config: dict) -> None:
    import ray.train
    import ray.train.torch

    from jobs.batches import torch_batches

    recipe = build(config, config["batch"] * config["steps"])
    recipe.prepare(ray.train.torch.prepare_model)
    split = ray.train.get_dataset_shard("train")

    def batches():  # the training job's iterator (without its shuffle buffer)
        return torch_batches(split, config["batch"])

    timed = timed_epochs(recipe, batches, config["epochs"])
    # Train V2 keeps metrics only with checkpoints; the figure goes to a file beside them.
    (Path(config["storage"]) / "worker.json").write_text(
        json.dumps({**timed, "threads": torch.get_num_threads()})
    )
    ray.train.report({"samples_per_s": timed["samples_per_s"]})


def ray_train(config: dict) -> tuple[dict, float]:
    """(the worker's ``timed_epochs`` and torch ``threads``, fit() wall seconds)."""
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from jobs.data import ROWS_PER_BLOCK

    num_rows = len(config["rows"]["input_ids"])
    dataset = ray.data.from_items(
        [{k: v[i] for k, v in config["rows"].items()} for i in range(num_rows)]
    )
    dataset = dataset.repartition(
        max(1, num_rows // ROWS_PER_BLOCK)
    ).materialize()  # as jobs/data.py does
    worker_config = {k: v for k, v in config.items() if k != "rows"}
    gpu = config["device"] == "cuda"
    trainer = TorchTrainer(
        ray_worker,
        train_loop_config=worker_config,
        datasets={"train": dataset},
        scaling_config=ScalingConfig(
            num_workers=1, use_gpu=gpu, resources_per_worker={"CPU": config["threads"]}
        ),
        run_config=RunConfig(storage_path=config["storage"], name="bench_train"),
    )
    started = time.perf_counter()
    trainer.fit()
    wall = time.perf_counter() - started
    return json.loads((Path(config["storage"]) / "worker.json").read_text()), wall


def peak_gpu_gb() -> float | None:
    if not torch.cuda.is_available():
        return None
    return torch.cuda.max_memory_allocated() / 2**30


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", choices=("retriever", "pitvqa"), default="retriever")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=100, help="steps per epoch")
    parser.add_argument("--epochs", type=int, default=4, help="the first is a warm-up")
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--size", default="64", help="tiny models' image size, or full")
    parser.add_argument(
        "--precision", default="fp32", help="comma-separated: fp32, bf16, fp16 (a GPU's)"
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument(
        "--threads", type=int, default=os.cpu_count(), help="torch threads on both sides"
    )
    parser.add_argument("--work_dir", default="bench/results/train", help="full-size weights")
    args = parser.parse_args(argv)

    import tempfile

    import ray

    weights = None
    if args.size == "full":
        from bench.full_size import build_weight_folders

        folder = Path(args.work_dir).resolve() / "weights"
        if not (folder / "gpt2" / "config.json").is_file():
            build_weight_folders(folder, "full")
        weights = {name: str(folder / name) for name in ("clip", "vit", "blip", "gpt2")}
        size = 224
    else:
        size = int(args.size)
    rows = make_rows(args.model, args.batch * args.steps, args.frames, size)
    base = {
        "steps": args.steps,
        "model": args.model,
        "batch": args.batch,
        "epochs": args.epochs,
        "frames": args.frames,
        "size": size,
        "threads": args.threads,
        "device": args.device,
        "weights": weights,
        "rows": rows,
    }
    if not ray.is_initialized():
        attach = os.environ.get("RAY_ADDRESS") not in (None, "", "local")
        ray.init(
            address=None if attach else "local",
            num_cpus=None if attach else max(args.threads, os.cpu_count()),
            include_dashboard=None if attach else False,
            log_to_driver=False,
        )
    print(
        f"{args.model} ({args.size}): batch {args.batch}, {args.steps} steps an epoch, best of "
        f"{args.epochs - 1} timed epochs, {args.threads} threads, {args.device}, "
        f"{platform.processor() or platform.machine()}"
    )
    print(f"{'precision':<10}{'loop':<22}{'samples/s':>10}{'step ms':>9}{'wait ms':>9}{'ratio':>8}")
    results = []
    for precision in args.precision.split(","):
        config = {**base, "precision": precision}
        plain_before = plain_loop(config)
        with tempfile.TemporaryDirectory() as storage:
            worker, wall = ray_train({**config, "storage": storage})
        plain_after = plain_loop(config)  # once before and once after Ray, the better
        plain = max(plain_before, plain_after, key=lambda row: row["samples_per_s"])
        ratio = worker["samples_per_s"] / plain["samples_per_s"]
        for name, row in (("plain PyTorch", plain), ("Ray Train (1 worker)", worker)):
            print(
                f"{precision:<10}{name:<22}{row['samples_per_s']:>10.1f}{row['step_ms']:>9.1f}"
                f"{row['wait_ms']:>9.1f}" + (f"{ratio:>7.2f}x" if name != "plain PyTorch" else "")
            )
        results.append(
            {
                "precision": precision,
                "plain": plain,
                "ray_train": worker,
                "ratio": ratio,
                "ray_fit_seconds": wall,
                "peak_gpu_gb": peak_gpu_gb(),
            }
        )
    print("target: Ray Train >= 0.9x the plain loop")
    print(
        json.dumps(
            {
                "bench": "train",
                "model": args.model,
                "size": args.size,
                "batch": args.batch,
                "threads": args.threads,
                "device": args.device,
                "results": results,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
