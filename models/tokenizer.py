"""Tokenizers: the real GPT-2 / CLIP ones from local folders, or a tiny BPE built here.

No vocabulary can be downloaded on these machines, so the tiny presets train a small
byte-level BPE on the dataset's own text with the ``tokenizers`` library. Both styles pad
with the end-of-text token, as the references do (PitVQA sets ``pad_token = eos_token``;
HF's CLIP tokenizer pads with ``<|endoftext|>``). The attention mask tells pads apart.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterable
from pathlib import Path

import torch
from tokenizers import (
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)
from transformers import AutoTokenizer, PreTrainedTokenizerFast

START, END = "<|startoftext|>", "<|endoftext|>"
STYLES = ("gpt2", "clip")


def build_bpe_tokenizer(
    texts: Iterable[str], vocab_size: int = 1000, style: str = "gpt2"
) -> PreTrainedTokenizerFast:
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
            single=f"{START} $A {END}",
            special_tokens=[(START, bpe.token_to_id(START)), (END, bpe.token_to_id(END))],
        )
        return PreTrainedTokenizerFast(
            tokenizer_object=bpe, bos_token=START, eos_token=END, unk_token=END, pad_token=END
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token=END, eos_token=END, unk_token=END, pad_token=END
    )


def _bytes_to_unicode() -> list[str]:
    """GPT-2 / CLIP's printable stand-in for each of the 256 bytes, in vocabulary order."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    extra = [b for b in range(256) if b not in printable]
    return [chr(c) for c in printable] + [chr(256 + n) for n in range(len(extra))]


def clip_tokenizer_from_bpe(path: str | Path):
    """OpenAI's ``bpe_simple_vocab_16e6.txt.gz`` (what CLIP4Clip and DRL's SimpleTokenizer
    read) as a HF CLIP tokenizer with the same ids for every real token: 49408 tokens,
    ``<|startoftext|>`` 49406, ``<|endoftext|>`` 49407. Pads are ``<|endoftext|>`` (HF's
    CLIP tokenizers' choice) where the references pad with 0: CLIP's text transformer is
    causal and pads are masked out of scoring, so no feature of a real token changes."""
    from transformers import CLIPTokenizer

    with gzip.open(path, "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
    symbols = _bytes_to_unicode()
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + [START, END]
    vocab = {token: i for i, token in enumerate(tokens)}
    return CLIPTokenizer(vocab=vocab, merges=merges)


def tokenizer_path_problem(path: str) -> str | None:
    """Why ``path`` is not a tokenizer this project can load (a folder, or CLIP's BPE file), or None."""
    path = Path(path)
    if path.is_dir() or path.is_file() and path.name.endswith(".txt.gz"):
        return None
    return f"{path}: no such folder or file (a tokenizer folder or bpe_simple_vocab_16e6.txt.gz)"


def load_tokenizer(path: str):
    """A tokenizer from a local folder (GPT-2, CLIP, or one this project saved), or from
    OpenAI's ``bpe_simple_vocab_16e6.txt.gz``."""
    if str(path).endswith(".txt.gz") and Path(path).is_file():
        return clip_tokenizer_from_bpe(path)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # GPT-2 has none; PitVQA uses eos
    return tokenizer


def token_words(tokenizer, text: str, max_length: int) -> list[str]:
    """The tokens ``tokenize`` gives ``text`` (padding left out), readable: BPE's word-end
    and space marks dropped (``red</w>`` and ``Ġred`` read ``red``)."""
    ids = tokenize(tokenizer, [text], max_length)
    real = ids["input_ids"][0][ids["attention_mask"][0].bool()].tolist()
    return [
        token.replace("</w>", "").replace("\u0120", "") or token
        for token in tokenizer.convert_ids_to_tokens(real)
    ]


def tokenize(tokenizer, texts: list[str], max_length: int) -> dict[str, torch.Tensor]:
    """Pad/truncate to ``max_length``: ``input_ids`` and ``attention_mask``, both ``[N, max_length]``."""
    out = tokenizer(
        list(texts),
        padding="max_length",
        max_length=max_length,
        truncation=True,
        return_tensors="pt",
    )
    return {"input_ids": out["input_ids"], "attention_mask": out["attention_mask"]}
