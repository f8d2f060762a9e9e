"""Tokenizers: the real GPT-2 / CLIP ones from local folders, or a tiny BPE built here.

No vocabulary can be downloaded on these machines, so the tiny presets train a small
byte-level BPE on the dataset's own text with the ``tokenizers`` library. Both styles pad
with the end-of-text token, as the references do (PitVQA sets ``pad_token = eos_token``;
HF's CLIP tokenizer pads with ``<|endoftext|>``). The attention mask tells pads apart.
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

START, END = "<|startoftext|>", "<|endoftext|>"
STYLES = ("gpt2", "clip")


def build_bpe_tokenizer(texts: Iterable[str], vocab_size: int = 1000, style: str = "gpt2") -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on ``texts``.

    ``gpt2`` style: no added tokens, pad = eos = ``<|endoftext|>`` (id 0).
    ``clip`` style: lower-cased, every text wrapped in start/end tokens (ids 0 and 1),
    pad = end.
    """
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, got {style!r}")
    specials = [END] if style == "gpt2" else [START, END]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    if style == "clip":
        bpe.normalizer = normalizers.Lowercase()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer)
    if style == "clip":
        bpe.post_processor = processors.TemplateProcessing(
            single=f"{START} $A {END}", special_tokens=[(START, bpe.token_to_id(START)), (END, bpe.token_to_id(END))]
        )
        return PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token=START, eos_token=END, unk_token=END, pad_token=END)
    return PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token=END, eos_token=END, unk_token=END, pad_token=END)


def load_tokenizer(path: str):
    """Load a tokenizer from a local folder (GPT-2, CLIP, or one this project saved)."""
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # GPT-2 has none; PitVQA uses eos
    return tokenizer


def tokenize(tokenizer, texts: list[str], max_length: int) -> dict[str, torch.Tensor]:
    """Pad/truncate to ``max_length``: ``input_ids`` and ``attention_mask``, both ``[N, max_length]``."""
    out = tokenizer(list(texts), padding="max_length", max_length=max_length, truncation=True, return_tensors="pt")
    return {"input_ids": out["input_ids"], "attention_mask": out["attention_mask"]}
