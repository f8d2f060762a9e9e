"""The two models, their scoring, losses, tokenizers and checkpoints. Knows nothing of Ray.

Names are imported on first use (module ``__getattr__``), so that ``import models.wti``
(the scoring kernel, all that an evaluation shard needs) does not load transformers.
"""

from importlib import import_module

_WHERE = {
    "load_checkpoint": "checkpoint",
    "save_checkpoint": "checkpoint",
    "ContrastiveObjective": "losses",
    "all_gather_with_grad": "losses",
    "cdcr_loss": "losses",
    "clamp_logit_scale_": "losses",
    "info_nce": "losses",
    "NUM_CLASSES": "pitvqa",
    "PitVQAConfig": "pitvqa",
    "PitVQANet": "pitvqa",
    "Retriever": "retriever",
    "RetrieverConfig": "retriever",
    "freeze_clip_layers": "retriever",
    "dot_product_scores": "retriever",
    "build_bpe_tokenizer": "tokenizer",
    "load_tokenizer": "tokenizer",
    "tokenize": "tokenizer",
    "WTIHead": "wti",
    "normalize_masked": "wti",
    "token_wise_rank_counts": "wti",
    "token_wise_scores": "wti",
    "token_wise_topk": "wti",
    "token_wise_true_scores": "wti",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'models' has no attribute {name!r}")
    value = getattr(import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
