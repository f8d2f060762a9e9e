"""The training settings a run fits with: one typed config, built from the flags, handed to
every Ray Train worker and written to the run folder as ``train_config.json``.

Adding a training setting is a flag in ``jobs/args.py`` and a field here: ``from_args``
takes every field by its flag's name. The checkpoint folder carries the same file, and a
resumed run must match the saved one in its model and data (``resume_conflicts``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

FILE = "train_config.json"
# What a resumed run must share with the run it resumes: the model and the data. (Epochs,
# learning rate, logging and the like may change between the two commands.)
RESUME_MUST_MATCH = (
    "model",
    "model_config",
    "num_train_rows",
    "dataset",
    "train_csv",
    "val_csv",
    "data_path",
    "features_path",
    "data_root",
    "feature_framerate",
    "slice_framepos",
    "expand_msrvtt_sentences",
    "init_model",
)


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
    deterministic: bool = False  # deterministic GPU kernels too (``--deterministic``)
    precision: str = "auto"  # --precision as given
    compute_dtype: str = "fp32"  # ... resolved for the workers' hardware (``models.precision``)
    # MLflow (``cluster.tracking``): where rank 0 logs each epoch, and the run it continues.
    mlflow_tracking_uri: str | None = None
    mlflow_run_id: str | None = None
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
    # CLIP4Clip's: CLIP tensors frozen below block N (-1: none); the training clips' frame
    # order (0 as decoded, 1 reversed, 2 shuffled each epoch).
    freeze_layer_num: int = -1
    train_frame_order: int = 0
    init_model: str | None = None  # --init_model, the reference file
    init_checkpoint: str | None = None  # ... imported into <output_dir>/init_model
    # PitVQANet: the answer classes (saved in the checkpoint) and the training labels (for
    # the majority-class baseline of validation).
    labels: list[str] | None = None
    train_labels: list[int] = field(default_factory=list)
    # What it was trained on (recorded; a resume must train on the same).
    dataset: str | None = None
    train_csv: str | None = None
    val_csv: str | None = None
    data_path: str | None = None
    features_path: str | None = None
    data_root: str | None = None
    feature_framerate: float | None = None
    slice_framepos: int | None = None
    expand_msrvtt_sentences: bool | None = None
    eval_frame_order: int = 0

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

    def resume_conflicts(self, saved: dict) -> list[str]:
        """The model and data settings in which this config differs from ``saved`` (the
        run being resumed): ``name saved -> now``, model config fields by their own name."""
        now = self.to_dict()
        out = []
        for name in RESUME_MUST_MATCH:
            if name == "model_config":
                before, after = saved.get(name) or {}, now[name]
                out += [
                    f"{k} {before.get(k)} -> {after.get(k)}"
                    for k in sorted(set(before) | set(after))
                    if before.get(k) != after.get(k)
                ]
            elif saved.get(name) != now[name]:
                out.append(f"{name} {saved.get(name)} -> {now[name]}")
        return out

    def to_dict(self) -> dict:
        return asdict(self)

    def write(self, folder: str | Path) -> Path:
        """``train_config.json`` in ``folder`` (what this run trained with)."""
        path = Path(folder) / FILE
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path
