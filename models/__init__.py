"""The two models, their scoring, losses, tokenizers and checkpoints. Knows nothing of Ray."""
from .checkpoint import load_checkpoint, save_checkpoint
from .losses import ContrastiveObjective, all_gather_with_grad, cdcr_loss, clamp_logit_scale_, info_nce
from .pitvqa import NUM_CLASSES, PitVQAConfig, PitVQANet
from .retriever import Retriever, RetrieverConfig, dot_product_scores
from .tokenizer import build_bpe_tokenizer, load_tokenizer, tokenize
from .wti import (
    WTIHead, normalize_masked, token_wise_rank_counts, token_wise_scores, token_wise_topk, token_wise_true_scores,
)

__all__ = [
    "ContrastiveObjective", "NUM_CLASSES", "PitVQAConfig", "PitVQANet", "Retriever", "RetrieverConfig", "WTIHead",
    "all_gather_with_grad", "build_bpe_tokenizer", "cdcr_loss", "clamp_logit_scale_", "dot_product_scores",
    "info_nce", "load_checkpoint", "load_tokenizer", "normalize_masked", "save_checkpoint", "token_wise_rank_counts",
    "token_wise_scores", "token_wise_topk", "token_wise_true_scores", "tokenize",
]
