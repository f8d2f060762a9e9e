"""The reference repositories' checkpoint files as this project's models, exactly.

- DRL (``main.py``) and CLIP4Clip (``main_task_retrieval.py``) save ``model.state_dict()`` as
  ``pytorch_model.bin.N``: ``clip.*`` (OpenAI names, often fp16), ``frame_position_embeddings``,
  ``transformerClip.resblocks.N.*`` (OpenAI block layout) and DRL's ``text_weight_fc`` /
  ``video_weight_fc``.
- PitVQA (``utils.save_clf_checkpoint``) pickles ``{"model": <PitVQANet object>, ...}``.
  It is read by ``models.safe_load`` (nothing in it runs); the module tree gives the
  weights, the HF config objects inside it the architecture, and its GPT-2 tokenizer the
  vocabulary.

Anything the project cannot represent (CLIP4Clip's ``tightTransf`` / ``seqLSTM``, DRL's
``xti``, an unknown key) raises :class:`Unsupported` naming it; nothing is dropped silently.
"""

from __future__ import annotations

import re

import torch

from . import openai_clip, safe_load
from .hf_config import config_dict
from .pitvqa import NUM_CLASSES, PitVQAConfig, PitVQANet
from .retriever import Retriever, RetrieverConfig


class Unsupported(ValueError):
    """A checkpoint, or a part of one, that this project's models cannot represent."""


# --- the retriever: DRL and CLIP4Clip state dicts --------------------------------------

_UNSUPPORTED_PREFIXES = {
    "cross.": "CLIP4Clip's tightTransf header",
    "similarity_dense.": "CLIP4Clip's tightTransf header",
    "lstm_visual.": "the seqLSTM header",
}
_RETRIEVER_PREFIXES = (
    "clip.",
    "frame_position_embeddings.",
    "transformerClip.",
    "text_weight_fc.",
    "video_weight_fc.",
)


def _strip_module_prefix(state: dict) -> dict:
    if state and all(k.startswith("module.") for k in state):  # saved from a DDP wrapper
        return {k[len("module.") :]: v for k, v in state.items()}
    return state


def _wti_arch(state: dict) -> int | None:
    if "text_weight_fc.weight" in state:
        return 1
    if "text_weight_fc.4.weight" in state:
        return 3
    if "text_weight_fc.2.weight" in state:
        return 2
    return None


def retriever_from_reference(
    state: dict[str, torch.Tensor],
    source: str,
    sim_header: str | None = None,
    interaction: str | None = None,
    max_words: int = 32,
    max_frames: int = 12,
    wti_arch: int | None = None,
) -> Retriever:
    """A :class:`Retriever` holding a DRL or CLIP4Clip state dict's weights.

    ``sim_header`` / ``interaction`` / ``wti_arch`` are read from the keys when not given,
    and checked against them when given; ``source`` ("drl" or "clip4clip") names the
    default interaction of a file without weight heads (DRL: ti, CLIP4Clip: dp).
    """
    state = {k: v for k, v in _strip_module_prefix(state).items() if not openai_clip.is_derived(k)}
    if sim_header in ("tightTransf", "seqLSTM"):
        raise Unsupported(f"--sim_header {sim_header} is not supported (meanP and seqTransf are)")
    if interaction == "xti":
        raise Unsupported("--interaction xti is not supported (wti, ti and dp are)")
    for prefix, what in _UNSUPPORTED_PREFIXES.items():
        keys = [k for k in state if k.startswith(prefix)]
        if keys:
            raise Unsupported(f"{what} is not supported: {', '.join(keys[:4])}")
    unknown = [k for k in state if not k.startswith(_RETRIEVER_PREFIXES)]
    if unknown:
        raise Unsupported(f"unknown keys: {', '.join(sorted(unknown)[:8])}")

    has_temporal = any(k.startswith("transformerClip.") for k in state)
    found_arch = _wti_arch(state)
    sim_header = sim_header or ("seqTransf" if has_temporal else "meanP")
    if (sim_header == "seqTransf") != has_temporal:
        raise Unsupported(
            f"--sim_header {sim_header} does not match the file, which "
            f"{'has' if has_temporal else 'has no'} transformerClip.* (seqTransf) weights"
        )
    interaction = interaction or ("wti" if found_arch else ("ti" if source == "drl" else "dp"))
    if (interaction == "wti") != bool(found_arch):
        raise Unsupported(
            f"--interaction {interaction} does not match the file, which "
            f"{'has' if found_arch else 'has no'} text_weight_fc/video_weight_fc (wti) weights"
        )
    if wti_arch is not None and found_arch is not None and wti_arch != found_arch:
        raise Unsupported(
            f"--wti_arch {wti_arch} does not match the file's weight heads (wti_arch {found_arch})"
        )

    # CLIP4Clip's --linear_patch 3d adds visual.conv2 (a Conv3d) and keeps the unused conv1.
    conv3d = state.pop("clip.visual.conv2.weight", None)
    clip_config, clip_state = openai_clip.convert_clip(
        {k[len("clip.") :]: v for k, v in state.items() if k.startswith("clip.")}
    )
    weights = {f"clip.{k}": v for k, v in clip_state.items()}
    if conv3d is not None:
        weights["clip.vision_model.embeddings.patch_embedding.weight"] = conv3d.float()
    frame_positions = None
    num_layers = 0
    if has_temporal:
        positions = state["frame_position_embeddings.weight"].float()
        frame_positions = positions.shape[0]
        if max_frames > frame_positions:
            raise Unsupported(
                f"--max_frames {max_frames} exceeds the file's {frame_positions} frame positions"
            )
        weights["temporal.frame_position_embeddings.weight"] = positions
        temporal = {k: v.float() for k, v in state.items() if k.startswith("transformerClip.")}
        num_layers = openai_clip.count_layers(temporal, "transformerClip.resblocks.")
        for i in range(num_layers):
            weights.update(
                openai_clip.convert_block(
                    temporal, f"transformerClip.resblocks.{i}.", f"temporal.layers.{i}."
                )
            )
        if temporal:
            raise Unsupported(f"unknown keys: {', '.join(sorted(temporal)[:8])}")
    for side in ("text", "video"):
        for k, v in state.items():
            if k.startswith(f"{side}_weight_fc."):
                weights[f"head.{k}"] = v.float()

    config = RetrieverConfig(
        sim_header=sim_header,
        interaction=interaction,
        max_words=max_words,
        max_frames=max_frames,
        temporal_layers=num_layers or 4,
        frame_positions=frame_positions,
        wti_arch=found_arch or wti_arch or 2,
        linear_patch="2d" if conv3d is None else "3d",
        clip_config=clip_config,
    )
    model = Retriever(config)
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise Unsupported(
            f"the file does not fit the model: missing {missing[:6]}, unexpected {unexpected[:6]}"
        )
    return model.eval()


# --- PitVQANet: the pickled model object -------------------------------------------------

_PITVQA_RENAMES = {"LayerNorm.": "norm."}  # the reference's name for its BatchNorm1d
# Tensors the reference carries that the project's model does not: ViT's pooler (built by
# ViTModel.from_pretrained, never used in forward) and buffers older transformers saved.
_PITVQA_UNUSED = re.compile(r"^visual_encoder\.pooler\.|\.attn\.(masked_)?bias$|position_ids$")


def _plain(values: dict) -> dict:
    """The JSON-plain entries of a pickled config's attributes."""

    def plain(v):
        return (
            v is None
            or isinstance(v, (bool, int, float, str))
            or (isinstance(v, (list, tuple)) and all(plain(x) for x in v))
            or (isinstance(v, dict) and all(isinstance(k, str) and plain(x) for k, x in v.items()))
        )

    return {k: v for k, v in values.items() if not k.startswith("_") and plain(v)}


def _submodule(record, name: str):
    return (safe_load.record_attrs(record).get("_modules") or {}).get(name)


def _pickled_config(
    record, module: str, config_cls, folder: str | None, flag: str, from_folder=None
) -> dict:
    """A sub-model's HF config: from the config object pickled in the module when it carries
    one, else from ``folder`` (``from_folder(folder)``, default ``config_cls.from_pretrained``)."""
    found = (
        safe_load.record_attrs(_submodule(record, module)).get("config")
        if record is not None
        else None
    )
    attrs = _plain(safe_load.record_attrs(found))
    if attrs:
        attrs.pop("architectures", None)
        return config_dict(config_cls(**attrs))
    if folder:
        load = from_folder or (lambda path: config_cls.from_pretrained(path, local_files_only=True))
        return config_dict(load(folder))
    raise Unsupported(f"the file does not give the {module} architecture: add {flag}")


def pitvqa_tokenizer(record):
    """The GPT-2 tokenizer pickled inside PitVQA's model object, rebuilt from its data
    (vocabulary and merges), or None when the file has none."""
    from transformers import GPT2Tokenizer, PreTrainedTokenizerFast

    attrs = safe_load.record_attrs(record).get("tokenizer") if record is not None else None
    attrs = safe_load.record_attrs(attrs) if isinstance(attrs, safe_load.Record) else None
    if not attrs:
        return None
    if isinstance(attrs.get("encoder"), dict) and isinstance(
        attrs.get("bpe_ranks"), dict
    ):  # the slow GPT2Tokenizer
        merges = [pair for pair, _ in sorted(attrs["bpe_ranks"].items(), key=lambda item: item[1])]
        tokenizer = GPT2Tokenizer(vocab=attrs["encoder"], merges=merges)
    else:  # a fast tokenizer: its backend pickles as the tokenizer.json text
        backend = attrs.get("_tokenizer")
        state = backend.state if isinstance(backend, safe_load.Record) else None
        if not isinstance(state, (str, bytes)):
            return None
        from tokenizers import Tokenizer

        tokenizer = PreTrainedTokenizerFast(
            tokenizer_object=Tokenizer.from_str(
                state.decode() if isinstance(state, bytes) else state
            ),
            eos_token="<|endoftext|>",
        )
    tokenizer.pad_token = tokenizer.eos_token  # as PitVQA sets it
    return tokenizer


def pitvqa_from_reference(
    obj,
    dataset: str,
    vit_path: str | None = None,
    blip_path: str | None = None,
    gpt2_path: str | None = None,
) -> PitVQANet:
    """A :class:`PitVQANet` holding the weights of PitVQA's saved checkpoint (the loaded
    ``{"model": ..., ...}`` dict, or a plain state dict with ``--vit/blip/gpt2_path``)."""
    from transformers import BlipConfig, BlipTextConfig, GPT2Config, ViTConfig

    record = obj.get("model") if isinstance(obj, dict) and "model" in obj else obj
    if isinstance(record, dict) and "state_dict" in record:
        record = record["state_dict"]
    state = safe_load.state_dict(record)
    if not isinstance(record, safe_load.Record):
        record = None
    renamed = {}
    for key, value in state.items():
        for old, new in _PITVQA_RENAMES.items():
            if key.startswith(old):
                key = new + key[len(old) :]
        renamed[key] = value.float() if value.is_floating_point() else value

    num_classes = renamed["classifier.weight"].shape[0] if "classifier.weight" in renamed else None
    if num_classes != NUM_CLASSES[dataset]:
        raise Unsupported(
            f"the classifier has {num_classes} classes; --dataset {dataset} has {NUM_CLASSES[dataset]}"
        )
    vit = _pickled_config(record, "visual_encoder", ViTConfig, vit_path, "--vit_path")
    gpt2 = _pickled_config(record, "gpt_decoder", GPT2Config, gpt2_path, "--gpt2_path")
    text = _pickled_config(
        record,
        "text_encoder",
        BlipTextConfig,
        blip_path,
        "--blip_path",
        lambda path: BlipConfig.from_pretrained(path, local_files_only=True).text_config,
    )
    dropout = (
        safe_load.record_attrs(_submodule(record, "dropout")).get("p", 0.2)
        if record is not None
        else 0.2
    )
    config = PitVQAConfig(
        num_classes=num_classes,
        vocab_size=renamed["text_encoder.embeddings.word_embeddings.weight"].shape[0],
        image_size=vit["image_size"],
        head_dim=renamed["intermediate_layer.weight"].shape[0],
        dropout=dropout,
        vit_config=vit,
        text_config=text,
        gpt2_config=gpt2,
    )
    model = PitVQANet(config)
    expected = model.state_dict()
    unused = [k for k in renamed if k not in expected and _PITVQA_UNUSED.search(k)]
    weights = {k: v for k, v in renamed.items() if k not in unused}
    unknown = sorted(set(weights) - set(expected))
    if unknown:
        raise Unsupported(f"unknown keys: {', '.join(unknown[:8])}")
    missing = sorted(set(expected) - set(weights))
    if missing:
        raise Unsupported(f"the file lacks {', '.join(missing[:8])}")
    model.load_state_dict(weights, strict=True)
    return model.eval()
