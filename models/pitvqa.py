"""PitVQANet: image-grounded VQA as classification (PitVQA, MICCAI 2024).

ViT image tokens -> BLIP text encoder cross-attending to them -> GPT-2 on the encoder's
output embeddings -> mean pool -> Linear, SE gate, BatchNorm, Dropout -> classifier.
Tokenizing happens in the data pipeline or the serving batcher, never in ``forward``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Literal

import torch
from safetensors.torch import load_file
from torch import nn
from transformers import (
    BlipConfig,
    BlipTextConfig,
    BlipTextModel,
    GPT2Config,
    GPT2Model,
    ViTConfig,
    ViTModel,
)

from .hf_config import config_dict

NUM_CLASSES = {"pit24": 59, "endo18": 18}


def _tiny_vit(image_size: int) -> dict:
    return config_dict(
        ViTConfig(
            image_size=image_size,
            patch_size=8,
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=128,
        )
    )


# The tiny BPE (models.tokenizer, gpt2 style) has <|endoftext|> at id 0.
_TINY_SPECIAL_IDS = dict(bos_token_id=0, eos_token_id=0, pad_token_id=0)


def _tiny_blip_text(vocab_size: int) -> dict:
    return config_dict(
        BlipTextConfig(
            vocab_size=vocab_size,
            hidden_size=64,
            encoder_hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=128,
            max_position_embeddings=64,
            sep_token_id=0,
            **_TINY_SPECIAL_IDS,
        )
    )


def _tiny_gpt2(vocab_size: int) -> dict:
    return config_dict(
        GPT2Config(
            vocab_size=vocab_size,
            n_embd=64,
            n_layer=2,
            n_head=2,
            n_positions=64,
            **_TINY_SPECIAL_IDS,
        )
    )


@dataclass
class PitVQAConfig:
    """Everything needed to rebuild the architecture; saved as ``config.json``.

    The ``*_config`` dicts are the HF sub-model configs. ``*_path`` name local pretrained
    folders and matter only when building a fresh model: a checkpoint carries its weights.
    """

    num_classes: int = 59
    vocab_size: int = 50257
    max_length: int = 30
    image_size: int = 224
    head_dim: int = 512
    dropout: float = 0.2
    pooling: Literal["mean", "masked_mean"] = "mean"  # the reference averages pads too
    text_encoder_init: Literal["config", "pretrained"] = "config"  # reference: config
    vit_config: dict = field(default_factory=dict)
    text_config: dict = field(default_factory=dict)
    gpt2_config: dict = field(default_factory=dict)
    vit_path: str | None = None
    blip_path: str | None = None
    gpt2_path: str | None = None

    @classmethod
    def tiny(
        cls, num_classes: int = 59, vocab_size: int = 1000, image_size: int = 64, **kw
    ) -> PitVQAConfig:
        """A random-init model of about 0.3M parameters plus its embedding, for CPUs and tests."""
        return cls(
            num_classes=num_classes,
            vocab_size=vocab_size,
            image_size=image_size,
            head_dim=64,
            vit_config=_tiny_vit(image_size),
            text_config=_tiny_blip_text(vocab_size),
            gpt2_config=_tiny_gpt2(vocab_size),
            **kw,
        )

    @classmethod
    def base(
        cls,
        vit_path: str,
        blip_path: str,
        gpt2_path: str,
        num_classes: int = 59,
        vocab_size: int = 50257,
        **kw,
    ) -> PitVQAConfig:
        """The paper's model: ViT-B/16, BLIP text (blip-vqa-base config), GPT-2, from local folders."""
        vit = ViTConfig.from_pretrained(vit_path, local_files_only=True)
        text = BlipConfig.from_pretrained(blip_path, local_files_only=True).text_config
        gpt2 = GPT2Config.from_pretrained(gpt2_path, local_files_only=True)
        if text.encoder_hidden_size != vit.hidden_size:
            raise ValueError(
                f"BLIP's cross-attention width ({text.encoder_hidden_size}, {blip_path}) differs from "
                f"the ViT's hidden size ({vit.hidden_size}, {vit_path})"
            )
        return cls(
            num_classes=num_classes,
            vocab_size=vocab_size,
            image_size=vit.image_size,
            vit_config=config_dict(vit),
            text_config=config_dict(text),
            gpt2_config=config_dict(gpt2),
            vit_path=vit_path,
            blip_path=blip_path,
            gpt2_path=gpt2_path,
            **kw,
        )

    def to_dict(self) -> dict:
        return asdict(self)


def _blip_text_state_dict(blip_path: str) -> dict[str, torch.Tensor]:
    """The text-encoder weights of a local BLIP folder (BlipForQuestionAnswering or BlipModel)."""
    from pathlib import Path

    files = sorted(Path(blip_path).glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no *.safetensors weights in {blip_path}")
    state = {}
    for file in files:
        state.update(load_file(str(file)))
    for prefix in ("text_encoder.", "text_model."):
        picked = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        if picked:
            return picked
    raise KeyError(f"{blip_path} holds no 'text_encoder.*' or 'text_model.*' weights")


def resize_word_embeddings(embedding: nn.Embedding, vocab_size: int) -> nn.Embedding:
    """A new ``[vocab_size, dim]`` embedding whose first rows are the old ones (as PitVQA does)."""
    new = nn.Embedding(vocab_size, embedding.embedding_dim)
    rows = min(vocab_size, embedding.num_embeddings)
    with torch.no_grad():
        new.weight[:rows] = embedding.weight[:rows]
    return new


class PitVQANet(nn.Module):
    """``model(pixel_values [B,3,H,W], input_ids [B,L], attention_mask [B,L])`` -> logits ``[B, C]``."""

    def __init__(self, config: PitVQAConfig):
        super().__init__()
        # A copy: the caller's config is left as given (the text config's vocabulary is
        # rewritten below).
        config = self.config = replace(config)
        if config.vit_path:
            self.visual_encoder = ViTModel.from_pretrained(
                config.vit_path, add_pooling_layer=False, local_files_only=True
            )
        else:
            self.visual_encoder = ViTModel(ViTConfig(**config.vit_config), add_pooling_layer=False)

        text_config = BlipTextConfig(**config.text_config)
        self.text_encoder = BlipTextModel(text_config, add_pooling_layer=False)
        if config.text_encoder_init == "pretrained":
            if not config.blip_path:
                raise ValueError("text_encoder_init='pretrained' needs blip_path")
            missing, _ = self.text_encoder.load_state_dict(
                _blip_text_state_dict(config.blip_path), strict=False
            )
            if missing:
                raise KeyError(f"BLIP text weights in {config.blip_path} lack {missing[:5]}")
        # The question is tokenized by GPT-2's BPE, so the BLIP word embedding is replaced by
        # one of that vocabulary's size, keeping BLIP's first rows (and, as the reference,
        # without BLIP's padding_idx). The config follows so a checkpoint rebuilds the shape.
        self.text_encoder.embeddings.word_embeddings = resize_word_embeddings(
            self.text_encoder.embeddings.word_embeddings, config.vocab_size
        )
        self.text_encoder.config.vocab_size = config.vocab_size
        config.text_config = {**config.text_config, "vocab_size": config.vocab_size}

        if config.gpt2_path:
            self.gpt_decoder = GPT2Model.from_pretrained(config.gpt2_path, local_files_only=True)
        else:
            self.gpt_decoder = GPT2Model(GPT2Config(**config.gpt2_config))
        # GPT-2 only ever sees inputs_embeds: its token embedding gets no gradient, so it is
        # frozen rather than carried as a "trainable" parameter that never trains.
        self.gpt_decoder.wte.weight.requires_grad_(False)

        width = self.gpt_decoder.config.n_embd
        self.intermediate_layer = nn.Linear(width, config.head_dim)
        self.se_layer = nn.Sequential(nn.Linear(config.head_dim, config.head_dim), nn.Sigmoid())
        self.norm = nn.BatchNorm1d(
            config.head_dim
        )  # the reference names it LayerNorm; it is a BatchNorm
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(config.head_dim, config.num_classes)

    def forward(
        self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        image_embeds = self.visual_encoder(
            pixel_values=pixel_values
        ).last_hidden_state  # (B, P, Dv)
        text_embeds = self.text_encoder(
            input_ids=input_ids, attention_mask=attention_mask, encoder_hidden_states=image_embeds
        ).last_hidden_state  # (B, L, Dt)
        # As the reference: GPT-2 gets no attention mask (its causal mask keeps real tokens
        # from seeing the trailing pads).
        decoded = self.gpt_decoder(inputs_embeds=text_embeds).last_hidden_state  # (B, L, Dg)
        if self.config.pooling == "masked_mean":
            mask = attention_mask.unsqueeze(-1).to(decoded.dtype)  # (B, L, 1)
            pooled = (decoded * mask).sum(1) / mask.sum(1).clamp(min=1)
        else:
            pooled = decoded.mean(dim=1)  # (B, Dg)
        out = self.intermediate_layer(pooled)  # (B, H)
        out = out * self.se_layer(out)
        out = self.dropout(self.norm(out))
        return self.classifier(out)  # (B, C)
