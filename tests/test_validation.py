"""Per-epoch retrieval validation on several Ray Train workers: every row is scored, and the
metrics equal the single-process full matrix's on the same model and rows."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

NUM_ROWS, NUM_VIDEOS, WORKERS = 53, 49, 3  # neither divides by 3; four videos have two captions


def _rows():
    rng = np.random.default_rng(0)
    video_index = np.concatenate([np.arange(NUM_VIDEOS), [3, 10, 20, 40]])
    pixels = rng.normal(size=(NUM_VIDEOS, 2, 3, 32, 32)).astype(np.float32)
    ids = rng.integers(2, 60, size=(NUM_ROWS, 8))
    mask = (np.arange(8) < rng.integers(2, 9, size=(NUM_ROWS, 1))).astype(np.int64)
    return [
        {
            "input_ids": ids[i],
            "attention_mask": mask[i],
            "pixel_values": pixels[v],
            "frame_mask": np.ones(2, np.int64),
            "video_index": np.int64(v),
        }
        for i, v in enumerate(video_index)
    ]


def _model():
    from models import Retriever, RetrieverConfig

    torch.manual_seed(0)
    return Retriever(
        RetrieverConfig.tiny(vocab_size=64, image_size=32, max_words=8, max_frames=2)
    ).eval()


@pytest.mark.slow
def test_three_workers_score_every_validation_row(ray_local, tmp_path):
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from cluster.ray_private import EveryValidationRow
    from jobs.metrics import retrieval_metrics
    from models import token_wise_scores
    from models.encode import encode_tokens, encode_videos

    def validate_on_workers(config):
        # Nested: Ray pickles it by value (this module is not on the workers' path).
        import ray.train

        from jobs.batches import torch_batches
        from jobs.config import TrainConfig
        from jobs.recipes import recipe_for
        from models import RetrieverConfig

        model_config = RetrieverConfig.tiny(
            vocab_size=64, image_size=32, max_words=8, max_frames=2
        ).to_dict()
        train_config = TrainConfig(
            model="retriever",
            model_config=model_config,
            output_dir=config["out"],
            num_train_rows=1,
            epochs=1,
            batch_size=4,
            lr=1e-3,
            seed=0,  # the weights of _model()
        )
        recipe = recipe_for("retriever")(train_config)
        metrics = recipe.validate(torch_batches(ray.train.get_dataset_shard("val"), 4))
        rank = ray.train.get_context().get_world_rank()
        (Path(config["out"]) / f"rank{rank}.json").write_text(json.dumps(metrics))

    rows = _rows()
    trainer = TorchTrainer(
        validate_on_workers,
        train_loop_config={"out": str(tmp_path)},
        scaling_config=ScalingConfig(num_workers=WORKERS, resources_per_worker={"CPU": 0.5}),
        run_config=RunConfig(storage_path=str(tmp_path)),
        datasets={"val": ray_local.data.from_items(rows, override_num_blocks=7)},
        dataset_config=EveryValidationRow(),
    )
    trainer.fit()
    answers = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(WORKERS)]
    assert answers[1] == answers[0] == answers[2]  # every worker computes the same metrics
    got = answers[0]
    assert got["val_texts"] == NUM_ROWS and got["val_videos"] == NUM_VIDEOS

    model = _model()  # the same rows in one process, scored as the full matrix
    stack = {k: torch.as_tensor(np.stack([r[k] for r in rows])) for k in rows[0]}
    text = encode_tokens(model, stack["input_ids"], stack["attention_mask"])
    first = np.unique(stack["video_index"].numpy(), return_index=True)[1]
    video = encode_videos(model, stack["pixel_values"][first], stack["frame_mask"][first])
    scores = token_wise_scores(text.features, text.weights, video.features, video.weights).numpy()
    want = retrieval_metrics(scores, stack["video_index"].numpy())
    for key, value in (
        ("R@1", want["t2v"]["R@1"]),
        ("R@5", want["t2v"]["R@5"]),
        ("MdR", want["t2v"]["MdR"]),
        ("v2t_R@1", want["v2t"]["R@1"]),
    ):
        assert got[key] == pytest.approx(value), key
    assert 0 < want["t2v"]["R@5"] < 100  # the comparison is not trivially 0 == 0 or 100 == 100
