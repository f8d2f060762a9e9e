"""The training settings a run fits with: one typed config, built from the flags, handed to
every Ray Train worker and written to the run folder as ``train_config.json``.

Adding a training setting is a flag in ``jobs/args.py`` and a field here: ``from_args``
takes every field by its flag's name.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

FILE = "train_config.json"


@dataclass
class TrainConfig:
    model: str  # the recipe: "retriever" or "pitvqa"
    model_config: dict  # the model's own config (``RetrieverConfig`` / ``PitVQAConfig``) as a dict
    output_dir: str
    num_train_rows: int  # sizes the retriever's schedule
    epochs: int
    batch_size: int  # global, over every worker (as CLIP4Clip/DRL and PitVQA)
    lr: float
    seed: int = 42
    batch_size_val: int = 64
    n_display: int = 100  # log the loss every N steps (0: never)
    use_gpu: bool = False
    inject_failure: int | None = None  # testing: the first worker to reach this step raises
    # The retriever's optimisation (DRL): CLIP's lr is lr * coef_lr; AdamW, warm-up + cosine.
    coef_lr: float | None = None
    weight_decay: float = 0.2
    warmup_proportion: float = 0.1
    max_grad_norm: float = 1.0
    cdcr: int = 0
    cdcr_alpha1: float = 0.14
    cdcr_alpha2: float = 0.0
    cdcr_lambda: float = 0.001
    # PitVQANet: the answer classes (saved in the checkpoint) and the training labels (for
    # the majority-class baseline of validation).
    labels: list[str] | None = None
    train_labels: list[int] = field(default_factory=list)

    @classmethod
    def from_args(cls, args, **derived) -> TrainConfig:
        """Every field from the flag of its name, unless ``derived`` gives it."""
        names = {f.name for f in fields(cls)}
        taken = {
            name: getattr(args, name)
            for name in names - set(derived)
            if getattr(args, name, None) is not None
        }
        return cls(**taken, **derived)

    def to_dict(self) -> dict:
        return asdict(self)

    def write(self, folder: str | Path) -> Path:
        """``train_config.json`` in ``folder`` (what this run trained with)."""
        path = Path(folder) / FILE
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path
