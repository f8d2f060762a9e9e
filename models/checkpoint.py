"""Checkpoint folders: ``config.json`` + ``model.safetensors`` + tokenizer files.

A folder alone rebuilds the model: the config carries the full architecture (HF
sub-configs included), and weights are loaded from safetensors, so nothing is unpickled.
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

from safetensors.torch import load_model, save_model

from .pitvqa import PitVQAConfig, PitVQANet
from .retriever import Retriever, RetrieverConfig
from .tokenizer import load_tokenizer

KINDS = {"pitvqa": (PitVQAConfig, PitVQANet), "retriever": (RetrieverConfig, Retriever)}
# Pretrained-weight sources matter only for a fresh build; a checkpoint has its own weights.
_FRESH_BUILD_ONLY = {
    "vit_path": None,
    "blip_path": None,
    "gpt2_path": None,
    "clip_path": None,
    "text_encoder_init": "config",
}


def model_kind(model) -> str:
    for kind, (_, cls) in KINDS.items():
        if isinstance(model, cls):
            return kind
    raise TypeError(f"not a project model: {type(model).__name__}")


def save_checkpoint(folder: str | Path, model, tokenizer=None, extra: dict | None = None) -> Path:
    """Write ``config.json``, ``model.safetensors`` and the tokenizer files into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = {"model": model_kind(model), "config": model.config.to_dict(), **(extra or {})}
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    save_model(model, str(folder / "model.safetensors"))
    if tokenizer is not None:
        tokenizer.save_pretrained(str(folder))
    return folder


def read_config(folder: str | Path) -> dict:
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{folder} is not a checkpoint folder: no config.json")
    return json.loads(path.read_text())


def load_checkpoint(folder: str | Path, device: str = "cpu", with_tokenizer: bool = True):
    """Rebuild ``(model, tokenizer)`` from a checkpoint folder; tokenizer is None if absent."""
    folder = Path(folder)
    saved = read_config(folder)
    config_cls, model_cls = KINDS[saved["model"]]
    names = {f.name for f in fields(config_cls)}
    values = {k: v for k, v in saved["config"].items() if k in names}
    if saved["model"] == "retriever" and "temporal_layer_norm_eps" not in values:
        values["temporal_layer_norm_eps"] = (
            1e-5  # trained before the header took the references' 1e-12
        )
    values.update({k: v for k, v in _FRESH_BUILD_ONLY.items() if k in names})
    model = model_cls(config_cls(**values))
    load_model(model, str(folder / "model.safetensors"), device=device)
    model.to(device).eval()
    tokenizer = None
    if with_tokenizer and (folder / "tokenizer_config.json").is_file():
        tokenizer = load_tokenizer(str(folder))
    return model, tokenizer
