"""Training losses for the retriever: symmetric InfoNCE and DRL's CDCR regulariser.

The distributed gather lives here, not in the model (as in open_clip): with several
workers, each worker's features are gathered with gradient so that the contrastive batch
is the global batch.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .precision import full_precision

MAX_LOGIT_SCALE = 100.0


def all_gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` from every worker along dim 0, keeping gradients.

    A no-op outside a process group of more than one worker. Every rank's gradient flows
    back to the rank that produced the slice (``torch.distributed.nn.all_gather``).
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    if not tensor.is_floating_point():  # masks and ids: nothing to differentiate
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts, dim=0)
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(tensor.contiguous()), dim=0)


def clamp_logit_scale_(logit_scale: torch.nn.Parameter) -> None:
    """Keep CLIP's learned temperature at ``exp(s) <= 100`` (in place, as CLIP/DRL do)."""
    with torch.no_grad():
        logit_scale.clamp_(max=math.log(MAX_LOGIT_SCALE))


def info_nce(scores: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE on a square ``[B, B]`` score matrix whose diagonal holds the pairs.

    ``logit_scale`` is the log temperature (CLIP's parameter); its exp is clamped to 100.
    """
    logits = logit_scale.exp().clamp(max=MAX_LOGIT_SCALE) * scores
    target = torch.arange(scores.shape[0], device=scores.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def _standardize(x: torch.Tensor) -> torch.Tensor:
    """DRL's per-channel standardisation over the batch. A channel that does not vary (every
    token a text's first, whose causal feature is the same in every caption) has std 0: DRL
    divides by it and the loss is NaN from then on; here it stays 0 (a floor of 1e-6 on the
    std changes nothing else)."""
    return (x - x.mean(0)) / x.std(0).clamp_min(1e-6)


def _decorrelation(c: torch.Tensor, alpha1: float, alpha2: float) -> torch.Tensor:
    """Barlow-Twins-style penalty on a ``[D, D]`` cross-correlation matrix."""
    on_diag = (torch.diagonal(c) - 1).pow(2).sum()
    off_diag = (c - torch.diag_embed(torch.diagonal(c))).pow(2).sum()
    return alpha1 * on_diag + alpha2 * off_diag


def cdcr_loss(
    variant: int,
    text: torch.Tensor,
    text_mask: torch.Tensor,
    video: torch.Tensor,
    video_mask: torch.Tensor,
    text_weight: torch.Tensor | None = None,
    video_weight: torch.Tensor | None = None,
    alpha1: float = 0.14,
    alpha2: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """DRL's channel decorrelation regulariser over the matched pairs (text i, video i).

    text ``[B, L, D]`` and video ``[B, F, D]`` are the normalised, padding-zeroed features
    (``normalize_masked``); masks ``[B, L]``/``[B, F]``; weights as from ``WTIHead`` (used
    by variant 3). The returned value is not yet multiplied by lambda.

    - 1: one random real token against one random real frame per pair;
    - 2: every real token against its best frame, every real frame against its best token;
    - 3: as 2, each pair weighted by its WTI weight.
    """
    if variant not in (1, 2, 3):
        raise ValueError(f"cdcr variant must be 1, 2 or 3, got {variant}")
    B = text.shape[0]
    rows = torch.arange(B, device=text.device)
    if variant == 1:
        num_tokens, num_frames = text_mask.sum(-1).long(), video_mask.sum(-1).long()
        token = torch.randint(0, 10000, (B,), generator=generator).to(text.device) % num_tokens
        frame = torch.randint(0, 10000, (B,), generator=generator).to(text.device) % num_frames
        z_text, z_video = (
            _standardize(text[rows, token]),
            _standardize(video[rows, frame]),
        )  # (B, D)
        return _decorrelation(z_text.T @ z_video / B, alpha1, alpha2)

    # The matched pair's token-by-frame similarities, padded pairs at 0 as in the scoring.
    sim = torch.einsum("bld,bfd->blf", text, video)  # (B, L, F)
    best_frame = sim.argmax(dim=2)  # (B, L)
    best_token = sim.argmax(dim=1)  # (B, F)
    token_keep, frame_keep = text_mask.bool(), video_mask.bool()
    tokens = text[token_keep]  # (Nt, D)
    frames_of_tokens = video[rows.unsqueeze(1), best_frame][token_keep]  # (Nt, D)
    frames = video[frame_keep]  # (Nv, D)
    tokens_of_frames = text[rows.unsqueeze(1), best_token][frame_keep]  # (Nv, D)
    z_t, z_tv = _standardize(tokens), _standardize(frames_of_tokens)
    z_v, z_vt = _standardize(frames), _standardize(tokens_of_frames)
    if variant == 2:
        c_text = z_t.T @ z_tv / z_t.shape[0]
        c_video = z_v.T @ z_vt / z_v.shape[0]
    else:
        if text_weight is None or video_weight is None:
            raise ValueError("cdcr variant 3 needs the WTI weights")
        # Weights sum to 1 per text (per video), so dividing by B is a weighted mean.
        c_text = (z_t * text_weight[token_keep].unsqueeze(1)).T @ z_tv / B
        c_video = (z_v * video_weight[frame_keep].unsqueeze(1)).T @ z_vt / B
    return _decorrelation((c_text + c_video) / 2, alpha1, alpha2)


class ContrastiveObjective(nn.Module):
    """The retriever's training loss as one module, so that DDP sees every parameter used
    inside ``forward``: encode the local batch, gather features from every worker (the
    contrastive batch is the global batch), score, symmetric InfoNCE, optional CDCR.

    ``forward`` returns ``{"loss", "nce", "cdcr", "global_batch"}``.
    """

    def __init__(
        self,
        retriever,
        cdcr: int = 0,
        cdcr_alpha1: float = 0.14,
        cdcr_alpha2: float = 0.0,
        cdcr_lambda: float = 0.001,
    ):
        super().__init__()
        if cdcr and retriever.head is None:
            raise ValueError("CDCR needs token-wise features: use interaction 'wti' or 'ti'")
        self.retriever = retriever
        self.cdcr, self.cdcr_alpha1, self.cdcr_alpha2, self.cdcr_lambda = (
            cdcr,
            cdcr_alpha1,
            cdcr_alpha2,
            cdcr_lambda,
        )

    def forward(
        self, input_ids, attention_mask, pixel_values, frame_mask
    ) -> dict[str, torch.Tensor]:
        # The encoders run in the autocast dtype the caller set (``models.precision``); the
        # scores, the logit scale and the losses in fp32.
        text_feat, text_mask = self.retriever.encode_text(input_ids, attention_mask)  # (b, L, D)
        video_feat, video_mask = self.retriever.encode_video(pixel_values, frame_mask)  # (b, F, D)
        with full_precision(text_feat):
            return self._loss(text_feat.float(), text_mask, video_feat.float(), video_mask)

    def _loss(self, text_feat, text_mask, video_feat, video_mask) -> dict[str, torch.Tensor]:
        text_feat, text_mask, video_feat, video_mask = (
            all_gather_with_grad(t) for t in (text_feat, text_mask, video_feat, video_mask)
        )  # (B, ...), B = the global batch
        scores = self.retriever.similarity(text_feat, video_feat, text_mask, video_mask)  # (B, B)
        nce = info_nce(scores, self.retriever.logit_scale)
        regulariser = scores.new_zeros(())
        if self.cdcr:
            head = self.retriever.head
            text, text_weight = head.prepare_text(text_feat, text_mask)
            video, video_weight = head.prepare_video(video_feat, video_mask)
            regulariser = self.cdcr_lambda * cdcr_loss(
                self.cdcr,
                text,
                text_mask,
                video,
                video_mask,
                text_weight,
                video_weight,
                self.cdcr_alpha1,
                self.cdcr_alpha2,
            )
        return {
            "loss": nce + regulariser,
            "nce": nce.detach(),
            "cdcr": regulariser.detach(),
            "global_batch": torch.tensor(scores.shape[0]),
        }
