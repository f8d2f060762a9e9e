"""What a training run builds from its flags: the tokenizer and the model config.

A checkpoint carries both, so evaluation, indexing and serving never come here.
"""

from __future__ import annotations

from models import build_bpe_tokenizer, load_tokenizer


def build_tokenizer(args, train_texts: list[str]):
    """A local tokenizer (``--tokenizer_path``, else the CLIP / GPT-2 folder), or a tiny BPE
    trained on the training captions or questions."""
    weights = args.clip_path if args.kind == "retriever" else args.gpt2_path
    path = args.tokenizer_path or weights
    if path:
        return load_tokenizer(path)
    return build_bpe_tokenizer(
        train_texts, vocab_size=1000, style="clip" if args.kind == "retriever" else "gpt2"
    )


def build_model_config(args, tokenizer):
    """The typed model config from the preset, the weight folders and the data flags."""
    if args.kind == "retriever":
        from models import RetrieverConfig

        common = dict(
            sim_header=args.sim_header,
            interaction=args.interaction,
            max_words=args.max_words,
            max_frames=args.max_frames,
            temporal_layers=args.cross_num_hidden_layers,
        )
        if args.preset == "base":
            return RetrieverConfig.base(args.clip_path, **common)
        return RetrieverConfig.tiny(vocab_size=len(tokenizer), image_size=args.image_size, **common)
    from models import NUM_CLASSES, PitVQAConfig

    common = dict(num_classes=NUM_CLASSES[args.dataset], max_length=args.max_length)
    if args.preset == "base":
        return PitVQAConfig.base(
            args.vit_path,
            args.blip_path,
            args.gpt2_path,
            vocab_size=len(tokenizer),
            text_encoder_init=args.text_encoder_init,
            **common,
        )
    return PitVQAConfig.tiny(vocab_size=len(tokenizer), image_size=args.image_size, **common)
