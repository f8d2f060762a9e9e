"""OpenAI's CLIP files (``ViT-B-32.pt``, what CLIP4Clip and DRL load) as a HF ``CLIPModel``.

OpenAI's archive is TorchScript (often fp16) with un-prefixed names: ``visual.conv1.weight``,
``transformer.resblocks.N.attn.in_proj_weight``, ``text_projection``, ``visual.proj`` ...
It is read without running code (``models.safe_load``), the architecture is read from the
tensor shapes as OpenAI's ``build_model`` does, and every tensor is renamed to HF's layout:
the fused ``in_proj`` splits into q/k/v, and the two projections, stored for ``x @ P``,
are transposed into Linear weights. The converted model computes what OpenAI's does.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from . import safe_load
from .hf_config import config_dict

# Keys OpenAI's archive and the reference models carry that are derived, not learnt.
DERIVED_KEYS = ("input_resolution", "context_length", "vocab_size")
DERIVED_SUFFIXES = ("attn_mask", "position_ids")

_BLOCK_PARTS = {
    "ln_1.": "layer_norm1.",
    "ln_2.": "layer_norm2.",
    "mlp.c_fc.": "mlp.fc1.",
    "mlp.c_proj.": "mlp.fc2.",
    "attn.out_proj.": "self_attn.out_proj.",
}


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a ``torch.save`` state dict or a TorchScript archive, as saved (no code
    from the file runs). Derived keys (``attn_mask``, ``input_resolution`` ...) are dropped."""
    state = safe_load.state_dict(safe_load.read(path))
    return {k: v for k, v in state.items() if not is_derived(k)}


def is_derived(key: str) -> bool:
    """A key the references save that is computed, not learnt (``attn_mask``, ``position_ids``,
    OpenAI's ``input_resolution`` / ``context_length`` / ``vocab_size``)."""
    return (
        key.split(".")[-1] in DERIVED_SUFFIXES
        or key in DERIVED_KEYS
        or key.split(".", 1)[-1] in DERIVED_KEYS
    )


def convert_block(state: dict, source: str, target: str) -> dict[str, torch.Tensor]:
    """One OpenAI ``ResidualAttentionBlock`` (keys under ``source``) as a HF ``CLIPEncoderLayer``
    (under ``target``). Consumes the keys it converts from ``state``."""
    out = {}
    for kind in ("weight", "bias"):
        fused = state.pop(f"{source}attn.in_proj_{kind}")
        for name, part in zip(("q_proj", "k_proj", "v_proj"), fused.chunk(3, dim=0)):
            out[f"{target}self_attn.{name}.{kind}"] = part.clone()
    for key in [k for k in state if k.startswith(source)]:
        rest = key[len(source) :]
        for old, new in _BLOCK_PARTS.items():
            if rest.startswith(old):
                out[target + new + rest[len(old) :]] = state.pop(key)
                break
    return out


def count_layers(state: dict, prefix: str) -> int:
    """How many numbered blocks ``prefix{N}.*`` the state dict holds."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    found = {int(m.group(1)) for k in state if (m := pattern.match(k))}
    return max(found) + 1 if found else 0


def clip_config(state: dict[str, torch.Tensor]) -> dict:
    """The HF ``CLIPConfig`` (as a dict) of an OpenAI ViT CLIP, from its tensor shapes."""
    from transformers import CLIPConfig

    if "visual.conv1.weight" not in state or "visual.layer1.0.conv1.weight" in state:
        raise ValueError("not an OpenAI ViT CLIP (the ResNet CLIPs are not supported)")
    vision_width, _, patch, _ = state["visual.conv1.weight"].shape
    grid = round((state["visual.positional_embedding"].shape[0] - 1) ** 0.5)
    width = state["ln_final.weight"].shape[0]
    vocab_size = state["token_embedding.weight"].shape[0]
    text = dict(
        vocab_size=vocab_size,
        hidden_size=width,
        intermediate_size=state["transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
        num_hidden_layers=count_layers(state, "transformer.resblocks."),
        num_attention_heads=max(1, width // 64),
        max_position_embeddings=state["positional_embedding"].shape[0],
        hidden_act="quick_gelu",
        # OpenAI's ids: <|startoftext|> and <|endoftext|> are the last two; pads are 0.
        bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1,
        pad_token_id=0,
    )
    vision = dict(
        hidden_size=vision_width,
        image_size=patch * grid,
        patch_size=patch,
        intermediate_size=state["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
        num_hidden_layers=count_layers(state, "visual.transformer.resblocks."),
        num_attention_heads=max(1, vision_width // 64),
        hidden_act="quick_gelu",
    )
    return config_dict(
        CLIPConfig(
            text_config=text, vision_config=vision, projection_dim=state["text_projection"].shape[1]
        )
    )


def convert_clip(state: dict[str, torch.Tensor]) -> tuple[dict, dict[str, torch.Tensor]]:
    """``(HF CLIPConfig dict, HF CLIPModel state dict in fp32)`` from OpenAI-named tensors.
    Raises ``KeyError`` naming any tensor left unconverted."""
    state = {k: v.float() for k, v in state.items()}
    config = clip_config(state)
    out = {}
    for i in range(config["text_config"]["num_hidden_layers"]):
        out.update(
            convert_block(state, f"transformer.resblocks.{i}.", f"text_model.encoder.layers.{i}.")
        )
    for i in range(config["vision_config"]["num_hidden_layers"]):
        out.update(
            convert_block(
                state, f"visual.transformer.resblocks.{i}.", f"vision_model.encoder.layers.{i}."
            )
        )
    renames = {
        "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
        "positional_embedding": "text_model.embeddings.position_embedding.weight",
        "ln_final.weight": "text_model.final_layer_norm.weight",
        "ln_final.bias": "text_model.final_layer_norm.bias",
        "visual.class_embedding": "vision_model.embeddings.class_embedding",
        "visual.conv1.weight": "vision_model.embeddings.patch_embedding.weight",
        "visual.positional_embedding": "vision_model.embeddings.position_embedding.weight",
        "visual.ln_pre.weight": "vision_model.pre_layrnorm.weight",
        "visual.ln_pre.bias": "vision_model.pre_layrnorm.bias",
        "visual.ln_post.weight": "vision_model.post_layernorm.weight",
        "visual.ln_post.bias": "vision_model.post_layernorm.bias",
        "logit_scale": "logit_scale",
    }
    for old, new in renames.items():
        out[new] = state.pop(old)
    out["text_projection.weight"] = state.pop("text_projection").T.contiguous()  # stored for x @ P
    out["visual_projection.weight"] = state.pop("visual.proj").T.contiguous()
    if state:
        raise KeyError(f"unexpected CLIP tensors: {', '.join(sorted(state)[:8])}")
    return config, out


def load_clip_file(path: str | Path):
    """A HF ``CLIPModel`` with the weights of OpenAI's ``ViT-B-32.pt`` (or any OpenAI-layout
    ViT CLIP file: TorchScript or a state dict, fp16 or fp32)."""
    from transformers import CLIPConfig, CLIPModel

    config, weights = convert_clip(read_state_dict(path))
    model = CLIPModel(CLIPConfig(**config))
    model.load_state_dict(weights, strict=True)
    return model
