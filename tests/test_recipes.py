"""Each model's recipe (``jobs.recipes``) on its own, without Ray: built from a seed, its
first losses on a fixed batch are pinned (torchtune's style: a change to the step's math,
the optimizer, the schedule or the initialisation moves them), and the loss falls."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from jobs.config import TrainConfig
from jobs.recipes import RECIPES, recipe_for
from models import PitVQAConfig, RetrieverConfig

ROOT = Path(__file__).resolve().parents[1]

# The first three losses of each recipe on ``fixed_batch`` (computed by this code at the
# commit that wrote this test, on x86_64 with torch 2.13.0; 1e-4 absorbs other CPUs' order
# of float sums).
PINNED = {
    # The warm-up starts at a learning rate of 0: the first step changes nothing.
    "retriever": [2.209311, 2.209311, 1.774379],
    "pitvqa": [1.734585, 1.108524, 0.828849],
}


def tiny_config(model: str) -> TrainConfig:
    if model == "retriever":
        model_config = RetrieverConfig.tiny(vocab_size=64, image_size=32, max_words=8, max_frames=2)
    else:
        model_config = PitVQAConfig.tiny(vocab_size=64, image_size=32, num_classes=5)
    return TrainConfig(
        model=model,
        model_config=model_config.to_dict(),
        output_dir="unused",
        num_train_rows=40,
        epochs=2,
        batch_size=8,
        lr=1e-3,
        seed=7,
        coef_lr=1.0,
        train_labels=[0, 1, 2, 3, 4],
    )


def fixed_batch(model: str) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(2, 60, (8, 8), generator=generator)
    mask = (torch.arange(8) < torch.randint(2, 9, (8, 1), generator=generator)).long()
    if model == "retriever":
        return {
            "input_ids": ids,
            "attention_mask": mask,
            "pixel_values": torch.randn(8, 2, 3, 32, 32, generator=generator),
            "frame_mask": torch.ones(8, 2, dtype=torch.long),
        }
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "pixel_values": torch.rand(8, 3, 32, 32, generator=generator),
        "label": torch.randint(0, 5, (8,), generator=generator),
    }


@pytest.mark.parametrize("model", RECIPES)
def test_the_first_losses_of_each_recipe_on_a_fixed_batch_are_pinned(model):
    recipe = recipe_for(model)(tiny_config(model))
    batch = fixed_batch(model)
    losses = [recipe.step(batch) for _ in range(3)]
    assert losses == pytest.approx(PINNED[model], abs=1e-4), losses
    # The same seed builds the same recipe: the same losses again.
    again = recipe_for(model)(tiny_config(model))
    assert [again.step(batch) for _ in range(3)] == pytest.approx(losses, abs=1e-6)


@pytest.mark.parametrize("model", RECIPES)
def test_a_recipe_steps_down_its_loss_on_one_batch(model):
    recipe = recipe_for(model)(tiny_config(model))
    batch = fixed_batch(model)
    first = recipe.step(batch)
    for _ in range(8):
        last = recipe.step(batch)
    assert last < first


def test_the_retriever_recipe_clips_schedules_and_groups_its_parameters():
    config = tiny_config("retriever")
    config.coef_lr = 0.1
    recipe = recipe_for("retriever")(config)
    groups = recipe.optimizer.param_groups
    # CLIP at lr * coef_lr and the new modules at lr; 1-D parameters without weight decay.
    assert {(g["initial_lr"], g["weight_decay"]) for g in groups} >= {(1e-4, 0.0), (1e-4, 0.2)}
    assert all(g["initial_lr"] in (1e-3, 1e-4) for g in groups)
    # Warm-up: the first step's rate is below the peak.
    assert recipe.scheduler.get_last_lr()[0] < 1e-4
    recipe.step(fixed_batch("retriever"))
    assert recipe.model.logit_scale.exp().item() <= 100.0


def test_recipes_run_without_ray():
    """A recipe's step and validation run in a process that never imports Ray."""
    code = (
        "import sys; sys.path[:0] = ['.', 'tests']; import torch; "
        "from test_recipes import fixed_batch, tiny_config; from jobs.recipes import recipe_for; "
        "r = recipe_for('pitvqa')(tiny_config('pitvqa')); r.step(fixed_batch('pitvqa')); "
        "r.validate([fixed_batch('pitvqa')]); "
        "q = recipe_for('retriever')(tiny_config('retriever')); q.step(fixed_batch('retriever')); "
        "q.validate([{**fixed_batch('retriever'), 'video_index': torch.arange(8)}]); "
        "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr[-2000:]


def test_the_training_config_takes_each_field_from_the_flag_of_its_name(tmp_path):
    from jobs import train

    args = train.parse_args(["--epochs", "3", "--lr", "0.01", "--cdcr", "2", "--seed", "5"])
    config = TrainConfig.from_args(
        args, model="retriever", model_config={}, num_train_rows=10, batch_size=4
    )
    assert (config.epochs, config.lr, config.cdcr, config.seed, config.batch_size) == (
        3,
        0.01,
        2,
        5,
        4,
    )
    path = config.write(tmp_path)
    assert TrainConfig(**json.loads(path.read_text())) == config


def test_the_retriever_draws_one_caption_per_video_and_orders_frames_per_epoch():
    """MSR-VTT without --expand_msrvtt_sentences: a row holds all of a video's captions
    (``caption_count`` of them) and each epoch draws one, seeded by the seed, the epoch and
    the worker; --train_frame_order 1 reverses each clip's real frames, padding kept."""
    import dataclasses

    config = dataclasses.replace(tiny_config("retriever"), train_frame_order=1)
    recipe = recipe_for("retriever")(config)
    ids = torch.arange(4 * 3 * 5).view(4, 3, 5)  # 4 videos, up to 3 captions of 5 tokens
    counts = torch.tensor([3, 1, 2, 3])
    pixels = torch.arange(4 * 3, dtype=torch.float).view(4, 3, 1, 1, 1).expand(4, 3, 3, 2, 2)
    frame_mask = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 0, 0], [1, 1, 1]])
    batch = {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "caption_count": counts,
        "pixel_values": pixels,
        "frame_mask": frame_mask,
    }

    def picks(epoch):
        recipe.begin_epoch(epoch)
        chosen = recipe.inputs(batch)["input_ids"]
        assert chosen.shape == (4, 5)
        rows = [int(chosen[v, 0]) // 5 - 3 * v for v in range(4)]
        assert all(0 <= r < int(counts[v]) for v, r in enumerate(rows)), rows
        return rows

    draws = [picks(epoch) for epoch in range(1, 9)]
    assert draws[0] == picks(1)  # the same epoch draws the same
    assert len({tuple(d) for d in draws}) > 1  # other epochs draw others
    assert all(d[1] == 0 for d in draws)  # a video with one caption always gives it
    frames = recipe.inputs(batch)["pixel_values"][:, :, 0, 0, 0]
    assert frames.tolist() == [[2, 1, 0], [4, 3, 5], [6, 7, 8], [11, 10, 9]]


def stepped(recipe, batch, steps: int) -> tuple[list[float], list[torch.dtype]]:
    """(the losses of ``steps`` steps, the output dtype of every linear layer they ran)."""
    outputs = []
    hooks = [
        module.register_forward_hook(lambda m, args, out: outputs.append(out.dtype))
        for module in recipe.model.modules()
        if isinstance(module, torch.nn.Linear)
    ]
    losses = [recipe.step(batch) for _ in range(steps)]
    for hook in hooks:
        hook.remove()
    return losses, outputs


@pytest.mark.parametrize("model", RECIPES)
def test_a_bf16_step_computes_in_bf16_and_keeps_fp32_weights_and_loss(model):
    """``compute_dtype`` bf16: the encoders' linear layers run in bf16 (autocast); the
    weights, the optimizer state and the loss stay fp32, and the losses stay near fp32's."""
    from dataclasses import replace

    recipe = recipe_for(model)(replace(tiny_config(model), compute_dtype="bf16"))
    losses, outputs = stepped(recipe, fixed_batch(model), 3)
    assert outputs.count(torch.bfloat16) > len(outputs) / 2, outputs
    assert all(p.dtype == torch.float32 for p in recipe.model.parameters())
    state = recipe.optimizer.state_dict()["state"]
    assert state and all(v.dtype == torch.float32 for s in state.values() for v in s.values())
    assert losses == pytest.approx(PINNED[model], abs=0.05), losses  # bf16's 8-bit mantissa
    assert losses[-1] < losses[0]
    # fp32 (the default): no layer in bf16.
    _, outputs = stepped(recipe_for(model)(tiny_config(model)), fixed_batch(model), 1)
    assert outputs and set(outputs) == {torch.float32}
