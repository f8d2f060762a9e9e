"""Training throughput: one Ray Train worker against a plain PyTorch loop.

    python bench/train.py                      # tiny retriever, batch 32, 4 frames at 64 px, CPU
    python bench/train.py --model pitvqa --batch 32

Both sides run, in one process tree and on the same rows, the job's own step: the recipe
``jobs/train.py`` runs (``jobs.recipes``: the retriever's contrastive objective with its
AdamW parameter groups, clipping and warm-up + cosine schedule, or PitVQANet's
cross-entropy with Adam), built with the same seed on both sides. The plain loop slices
pre-built tensors; the Ray Train worker gets its batches from a materialised Ray Dataset
shard through ``iter_torch_batches`` (the training job's path) inside a ``TorchTrainer``.
Each side times its steps after a warm-up epoch, with the same number of torch threads
(the worker is given that many CPUs, which is what Ray sizes its thread pool by). Prints
a table and ends with one JSON line.
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


def build(model: str, size: int, frames: int, num_rows: int, batch: int, epochs: int):
    """The job's recipe (``jobs.recipes``), seeded so both sides start equal: its model,
    optimizer, schedule, clipping and step, as ``jobs/train.py`` builds them."""
    from jobs.config import TrainConfig
    from jobs.recipes import recipe_for
    from models import PitVQAConfig, RetrieverConfig

    if model == "retriever":
        model_config = RetrieverConfig.tiny(vocab_size=256, image_size=size, max_frames=frames)
        lr = 1e-3  # the tiny preset's
    else:
        model_config = PitVQAConfig.tiny(vocab_size=256, image_size=size)
        lr = 1e-3
    config = TrainConfig(
        model=model,
        model_config=model_config.to_dict(),
        output_dir="unused",
        num_train_rows=num_rows,
        epochs=epochs,
        batch_size=batch,
        lr=lr,
        seed=0,
        coef_lr=1.0,
        train_labels=[0],
    )
    return recipe_for(model)(config)


def timed_epochs(recipe, batches_per_epoch, epochs: int) -> float:
    """Samples per second of the fastest epoch after the first (a warm-up). The best epoch,
    not the mean: on a small shared VM other processes steal whole slices of an epoch."""
    rates = []
    for epoch in range(epochs):
        seen, started = 0, time.perf_counter()
        for batch in batches_per_epoch():
            recipe.step(batch)
            seen += len(batch["input_ids"])
        if epoch:
            rates.append(seen / (time.perf_counter() - started))
    return max(rates)


def plain_loop(config: dict) -> float:
    torch.set_num_threads(config["threads"])
    rows = {k: torch.from_numpy(v) for k, v in config["rows"].items()}
    batch = config["batch"]
    recipe = build(
        config["model"],
        config["size"],
        config["frames"],
        len(rows["input_ids"]),
        batch,
        config["epochs"],
    )

    def batches():
        for start in range(0, len(rows["input_ids"]) - batch + 1, batch):
            yield {k: v[start : start + batch] for k, v in rows.items()}

    return timed_epochs(recipe, batches, config["epochs"])


def ray_worker(config: dict) -> None:
    import ray.train
    import ray.train.torch

    from jobs.batches import torch_batches

    num_rows = config["batch"] * config["steps"]
    recipe = build(
        config["model"],
        config["size"],
        config["frames"],
        num_rows,
        config["batch"],
        config["epochs"],
    )
    recipe.prepare(ray.train.torch.prepare_model)
    split = ray.train.get_dataset_shard("train")

    def batches():  # the training job's iterator (without its shuffle buffer)
        return torch_batches(split, config["batch"])

    rate = timed_epochs(recipe, batches, config["epochs"])
    # Train V2 keeps metrics only with checkpoints; the figure goes to a file beside them.
    (Path(config["storage"]) / "worker.json").write_text(
        json.dumps({"samples_per_s": rate, "threads": torch.get_num_threads()})
    )
    ray.train.report({"samples_per_s": rate})


def ray_train(config: dict) -> tuple[float, int, float]:
    """(samples/s inside the worker, the worker's torch threads, fit() wall seconds)."""
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
    trainer = TorchTrainer(
        ray_worker,
        train_loop_config=worker_config,
        datasets={"train": dataset},
        scaling_config=ScalingConfig(
            num_workers=1, resources_per_worker={"CPU": config["threads"]}
        ),
        run_config=RunConfig(storage_path=config["storage"], name="bench_train"),
    )
    started = time.perf_counter()
    trainer.fit()
    wall = time.perf_counter() - started
    worker = json.loads((Path(config["storage"]) / "worker.json").read_text())
    return worker["samples_per_s"], worker["threads"], wall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", choices=("retriever", "pitvqa"), default="retriever")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=100, help="steps per epoch")
    parser.add_argument("--epochs", type=int, default=4, help="the first is a warm-up")
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument(
        "--threads", type=int, default=os.cpu_count(), help="torch threads on both sides"
    )
    args = parser.parse_args(argv)

    import tempfile

    import ray

    rows = make_rows(args.model, args.batch * args.steps, args.frames, args.size)
    config = {
        "steps": args.steps,
        "model": args.model,
        "batch": args.batch,
        "epochs": args.epochs,
        "frames": args.frames,
        "size": args.size,
        "threads": args.threads,
        "rows": rows,
    }
    plain_before = plain_loop(config)
    if not ray.is_initialized():
        ray.init(
            address="local",
            num_cpus=max(args.threads, os.cpu_count()),
            include_dashboard=False,
            log_to_driver=False,
        )
    with tempfile.TemporaryDirectory() as storage:
        ray_rate, ray_threads, wall = ray_train({**config, "storage": storage})
    plain = max(plain_before, plain_loop(config))  # once before and once after Ray, the better
    ratio = ray_rate / plain
    print(
        f"{args.model}: batch {args.batch}, {args.steps} steps an epoch, best of {args.epochs - 1} timed epochs, "
        f"{args.threads} threads, {platform.processor() or platform.machine()}"
    )
    print(f"{'loop':<24}{'samples/s':>12}")
    print(f"{'plain PyTorch':<24}{plain:>12.1f}")
    print(f"{'Ray Train (1 worker)':<24}{ray_rate:>12.1f}   ratio {ratio:.2f}x (target >= 0.9x)")
    print(
        f"Ray Train fit() took {wall:.1f} s in all (worker start-up, dataset split, {args.epochs} epochs)"
    )
    print(
        json.dumps(
            {
                "bench": "train",
                "model": args.model,
                "batch": args.batch,
                "threads": args.threads,
                "ray_worker_threads": ray_threads,
                "samples_per_s": {"plain": plain, "ray_train": ray_rate},
                "ratio": ratio,
                "ray_fit_seconds": wall,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
