"""Token-wise text-video scoring: DRL's TI and WTI, computed exactly and fast.

The reference (DRL's ``wti_interaction``) builds a 4-D ``[A, V, L, F]`` tensor with an
einsum and multiplies the masks in separately, in 32 x 32 blocks. Here the same numbers
come from one matrix product of the masked, L2-normalised token matrix by the masked,
L2-normalised frame matrix, followed by the two max-reductions, block by block, so that
peak memory is set by the block size and not by ``A x V``.

Semantics kept from the reference, on purpose:
- a padded token-frame pair scores 0 (not -inf), so a max can pick a padded pair;
- WTI weights are computed from the *un-normalised* features, padded positions get
  weight 0 through a -inf logit before the softmax;
- TI is WTI with uniform weights ``mask / count``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

INTERACTIONS = ("wti", "ti")

# One block of the token-by-frame matrix holds about this many floats. 32 texts x 32
# tokens x 64 videos x 12 frames (3 MB in fp32) stays in a 2-core CPU's cache while both
# max-reductions read it; measured in bench/wti.py.
BLOCK_ELEMENTS = 32 * 32 * 64 * 12
GPU_BLOCK_ELEMENTS = 64 * BLOCK_ELEMENTS
RANK_CHUNK = 256  # own texts compared per step in token_wise_rank_counts: [A, 256] booleans


def masked_softmax(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Softmax over the last axis with padded positions (mask 0) at -inf. Shapes ``[N, T]``."""
    logits = logits.masked_fill(mask == 0, float("-inf"))
    return torch.softmax(logits, dim=-1)


def uniform_weights(mask: torch.Tensor) -> torch.Tensor:
    """TI's weights: ``mask / count`` per row. ``[N, T]`` -> ``[N, T]``."""
    mask = mask.float()
    return mask / mask.sum(dim=-1, keepdim=True)


def normalize_masked(feat: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """L2-normalise each vector and zero the padded ones. ``[N, T, D]``, mask ``[N, T]``."""
    return F.normalize(feat, dim=-1) * mask.unsqueeze(-1).to(feat.dtype)


def _block_scores(
    text: torch.Tensor, text_weight: torch.Tensor, frames: torch.Tensor, frame_weight: torch.Tensor
) -> torch.Tensor:
    """Scores of one block.

    text ``[a, L, D]`` and frames in frame-major order ``[F, v, D]`` (so that both
    max-reductions are element-wise maxima over contiguous slabs), text_weight ``[a, L]``,
    frame_weight ``[v, F]``. Returns ``[a, v]`` in fp32.
    """
    a, L, D = text.shape
    num_frames, v, _ = frames.shape
    sim = (text.reshape(a * L, D) @ frames.reshape(num_frames * v, D).T).view(a, L, num_frames, v)
    t2v = sim.amax(dim=2).float()  # (a, L, v): best frame per token
    v2t = sim.amax(dim=1).float()  # (a, F, v): best token per frame
    t2v = torch.bmm(text_weight.float().unsqueeze(1), t2v).squeeze(1)  # (a, v)
    v2t = torch.einsum("afv,vf->av", v2t, frame_weight.float())  # (a, v)
    return (t2v + v2t) / 2


def frame_major_scores(
    text: torch.Tensor, text_weight: torch.Tensor, frames: torch.Tensor, frame_weight: torch.Tensor
) -> torch.Tensor:
    """The exact scores of ``text`` against videos held frame-major (``[F, v, D]``, as an
    index shard keeps each inverted list): the kernel of ``token_wise_scores`` without its
    per-block transpose. ``[a, v]`` in fp32."""
    return _block_scores(text, text_weight, frames, frame_weight)


def _block_sizes(
    num_tokens: int, num_frames: int, device: torch.device, block_elements: int | None
):
    budget = block_elements or (GPU_BLOCK_ELEMENTS if device.type == "cuda" else BLOCK_ELEMENTS)
    texts = max(1, min(32 if device.type != "cuda" else 256, budget // (num_tokens * num_frames)))
    videos = max(1, budget // (texts * num_tokens * num_frames))
    return texts, videos


def videos_per_block(num_tokens: int, num_frames: int, device: torch.device | str = "cpu") -> int:
    """The kernel's column-block width: a slice cut on multiples of it scores bit-identically
    to the whole collection (``token_wise_rank_counts``)."""
    return _block_sizes(num_tokens, num_frames, torch.device(device), None)[1]


def _compute_dtype(device: torch.device, dtype: torch.dtype | None) -> torch.dtype:
    # fp16 keeps 10 mantissa bits for cosines in [-1, 1]; `bench/wti.py --device cuda` and
    # the gpu-marked test check that the top-10 matches fp32.
    if dtype is not None:
        return dtype
    return torch.float16 if device.type == "cuda" else torch.float32


def _column_blocks(text, text_weight, video, video_weight, block_elements, offset: int = 0):
    """Yield ``(first_video, scores [A, v])`` for consecutive blocks of videos.

    ``offset`` is the position of ``video[0]`` in a larger collection: blocks are cut on
    that collection's grid, so a slice's scores are bit-identical to the same columns of
    the whole collection's (a score's last bits depend on which videos share its block).
    """
    A, L, _ = text.shape
    V, num_frames, _ = video.shape
    texts_per_block, videos_per_block = _block_sizes(L, num_frames, text.device, block_elements)
    cuts = [0, *range(videos_per_block - offset % videos_per_block, V, videos_per_block), V]
    for j, end in zip(cuts[:-1], cuts[1:]):
        if end <= j:
            continue
        frames = video[j:end].transpose(0, 1).contiguous()  # (F, v, D)
        vw = video_weight[j:end]
        yield (
            j,
            torch.cat(
                [
                    _block_scores(
                        text[i : i + texts_per_block],
                        text_weight[i : i + texts_per_block],
                        frames,
                        vw,
                    )
                    for i in range(0, A, texts_per_block)
                ]
            ),
        )  # (A, v)


def token_wise_scores(
    text: torch.Tensor,
    text_weight: torch.Tensor,
    video: torch.Tensor,
    video_weight: torch.Tensor,
    block_elements: int | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """The exact ``[A, V]`` score matrix from prepared features.

    text ``[A, L, D]`` and video ``[V, F, D]`` are normalised with padding zeroed
    (``normalize_masked``); text_weight ``[A, L]`` and video_weight ``[V, F]`` sum to 1 per
    row over real positions. Computes in the features' dtype unless ``dtype`` is given.
    Differentiable: training calls it through ``WTIHead``.
    """
    if dtype is not None:
        text, video = text.to(dtype), video.to(dtype)
    blocks = [
        block for _, block in _column_blocks(text, text_weight, video, video_weight, block_elements)
    ]
    return (
        torch.cat(blocks, dim=1)
        if blocks
        else text.new_zeros(text.shape[0], 0, dtype=torch.float32)
    )


@torch.no_grad()
def token_wise_topk(
    text: torch.Tensor,
    text_weight: torch.Tensor,
    video: torch.Tensor,
    video_weight: torch.Tensor,
    k: int,
    block_elements: int | None = None,
    dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k videos per text without ever holding the ``[A, V]`` matrix.

    Same inputs as ``token_wise_scores``; on a GPU it computes in fp16 unless ``dtype`` is
    given. Returns (scores ``[A, k']``, indices ``[A, k']``), best first, ``k' = min(k, V)``.
    """
    dtype = _compute_dtype(text.device, dtype)
    text, video = text.to(dtype), video.to(dtype)
    A = text.shape[0]
    best_scores = torch.full((A, 0), float("-inf"), device=text.device)
    best_index = torch.zeros((A, 0), dtype=torch.long, device=text.device)
    for j, block in _column_blocks(text, text_weight, video, video_weight, block_elements):
        index = torch.arange(j, j + block.shape[1], device=text.device).expand(A, -1)
        scores = torch.cat([best_scores, block], dim=1)
        indices = torch.cat([best_index, index], dim=1)
        best_scores, order = scores.topk(min(k, scores.shape[1]), dim=1)
        best_index = indices.gather(1, order)
    return best_scores, best_index


@torch.no_grad()
def token_wise_true_scores(
    text: torch.Tensor,
    text_weight: torch.Tensor,
    video: torch.Tensor,
    video_weight: torch.Tensor,
    text_column: torch.Tensor,
    offset: int = 0,
    block_elements: int | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Each text's score against its own video, for the texts whose video is in this slice.

    ``text_column [A]``: the position of text t's video in ``video``, or -1 when another
    slice holds it. Returns ``[A]`` fp32, NaN for the texts of other slices; the values are
    bit-identical to the same entries of ``token_wise_scores`` over the whole collection
    (``offset``: where the slice starts in it).
    """
    out = torch.full((text.shape[0],), float("nan"), device=text.device)
    own = (text_column >= 0).nonzero().squeeze(1)
    if len(own):
        columns = text_column[own]
        text, video = (text, video) if dtype is None else (text.to(dtype), video.to(dtype))
        sub, sub_weight = text[own], text_weight[own]
        for j, block in _column_blocks(
            sub, sub_weight, video, video_weight, block_elements, offset
        ):
            here = (columns >= j) & (columns < j + block.shape[1])
            out[own[here]] = block[here.nonzero().squeeze(1), columns[here] - j]
    return out


@torch.no_grad()
def token_wise_rank_counts(
    text: torch.Tensor,
    text_weight: torch.Tensor,
    video: torch.Tensor,
    video_weight: torch.Tensor,
    text_column: torch.Tensor,
    true_score: torch.Tensor,
    offset: int = 0,
    block_elements: int | None = None,
    dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """What the retrieval ranks need of one slice of the videos, without its ``[A, V]`` block.

    ``true_score [A]``: every text's score against its own video (``token_wise_true_scores``
    of the slice that holds it); ``text_column`` as there. Returns
    - ``higher [A]``: per text, how many videos of this slice score strictly above its own
      video (t2v rank = 1 + the sum over slices);
    - ``text_rank [A]``: for the texts whose video is in this slice, 1 + how many texts
      score strictly above them on that video (their v2t rank; 0 for other slices' texts).
    A tie counts in the true item's favour, as CLIP4Clip's and DRL's ``compute_metrics``.
    Memory: one column block ``[A, v]`` at a time.
    """
    A = text.shape[0]
    higher = torch.zeros(A, dtype=torch.long, device=text.device)
    text_rank = torch.zeros(A, dtype=torch.long, device=text.device)
    own = (text_column >= 0).nonzero().squeeze(1)
    columns = text_column[own]
    if dtype is not None:
        text, video = text.to(dtype), video.to(dtype)
    # A score that is not a number (a diverged model) loses to everything: a NaN compared
    # with ``>`` is False, which would rank it first.
    for j, block in _column_blocks(text, text_weight, video, video_weight, block_elements, offset):
        higher += (block > true_score[:, None]).sum(dim=1)
        higher += (block.isnan() | true_score.isnan()[:, None]).sum(dim=1)
        here = (columns >= j) & (columns < j + block.shape[1])
        texts, cols = own[here], columns[here] - j
        for k in range(0, len(texts), RANK_CHUNK):  # [A, n]: every text on n own texts' videos
            chunk = texts[k : k + RANK_CHUNK]
            pairs = block[:, cols[k : k + RANK_CHUNK]]
            text_rank[chunk] = 1 + (
                (pairs > true_score[chunk][None, :])
                | pairs.isnan()
                | true_score[chunk].isnan()[None, :]
            ).sum(dim=0)
    return higher, text_rank


@torch.no_grad()
def explain_pair(
    text: torch.Tensor, text_weight: torch.Tensor, frames: torch.Tensor, frame_weight: torch.Tensor
) -> dict[str, torch.Tensor]:
    """What one text-video WTI score is made of (DRL's ``demo/show_wti.py`` draws the same).

    Prepared features of one text (``[L, D]``, weights ``[L]``) and one video (``[F, D]``,
    ``[F]``), as the scoring takes them. Returns the token-by-frame ``similarity [L, F]``,
    each token's best frame and its similarity, each frame's best token and its similarity,
    and the two sides: ``text_to_video = sum(token_weights * token_best_similarity)``,
    ``video_to_text = sum(frame_weights * frame_best_similarity)``, ``score`` = their mean,
    the score ``token_wise_scores`` gives the pair (fp32).
    """
    sim = text.float() @ frames.float().T
    token_best, frame_best = sim.max(dim=1), sim.max(dim=0)
    text_weight, frame_weight = text_weight.float(), frame_weight.float()
    t2v = (text_weight * token_best.values).sum()
    v2t = (frame_weight * frame_best.values).sum()
    return {
        "similarity": sim,
        "token_weights": text_weight,
        "frame_weights": frame_weight,
        "token_best_frame": token_best.indices,
        "token_best_similarity": token_best.values,
        "frame_best_token": frame_best.indices,
        "frame_best_similarity": frame_best.values,
        "text_to_video": t2v,
        "video_to_text": v2t,
        "score": (t2v + v2t) / 2,
    }


WTI_ARCHS = (1, 2, 3)


def weight_head(dim: int, arch: int = 2) -> nn.Module:
    """DRL's ``wti_arch``: 1 is ``Linear(D, 1)``; 2 (its default) adds one ``Linear(D, D), ReLU``
    before it, 3 two (``.0/.2/.4``)."""
    if arch not in WTI_ARCHS:
        raise ValueError(f"wti_arch must be one of {WTI_ARCHS}, got {arch}")
    if arch == 1:
        return nn.Linear(dim, 1)
    hidden = [m for _ in range(arch - 1) for m in (nn.Linear(dim, dim), nn.ReLU(inplace=True))]
    return nn.Sequential(*hidden, nn.Linear(dim, 1))


class WTIHead(nn.Module):
    """DRL's token-wise interaction head (``wti`` or ``ti``).

    ``head(text_feat [A,L,D], video_feat [V,F,D], text_mask [A,L], video_mask [V,F])``
    returns the unscaled score matrix ``[A, V]``.
    """

    def __init__(
        self, dim: int, interaction: str = "wti", block_elements: int | None = None, arch: int = 2
    ):
        super().__init__()
        if interaction not in INTERACTIONS:
            raise ValueError(f"interaction must be one of {INTERACTIONS}, got {interaction!r}")
        self.interaction = interaction
        self.block_elements = block_elements
        # As DRL: weight heads only for wti (ti's weights are uniform), of its wti_arch.
        self.text_weight_fc = weight_head(dim, arch) if interaction == "wti" else None
        self.video_weight_fc = weight_head(dim, arch) if interaction == "wti" else None
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
                nn.init.zeros_(module.bias)

    def text_token_weights(self, text_feat: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        """``[A, L, D]`` (un-normalised) -> ``[A, L]`` weights summing to 1 over real tokens."""
        if self.interaction == "ti":
            return uniform_weights(text_mask)
        return masked_softmax(self.text_weight_fc(text_feat).squeeze(-1), text_mask)

    def video_frame_weights(
        self, video_feat: torch.Tensor, video_mask: torch.Tensor
    ) -> torch.Tensor:
        """``[V, F, D]`` (un-normalised) -> ``[V, F]`` weights summing to 1 over real frames."""
        if self.interaction == "ti":
            return uniform_weights(video_mask)
        return masked_softmax(self.video_weight_fc(video_feat).squeeze(-1), video_mask)

    def prepare_text(self, text_feat: torch.Tensor, text_mask: torch.Tensor):
        """What the scoring needs of the texts: (normalised masked ``[A,L,D]``, weights ``[A,L]``)."""
        return normalize_masked(text_feat, text_mask), self.text_token_weights(text_feat, text_mask)

    def prepare_video(self, video_feat: torch.Tensor, video_mask: torch.Tensor):
        """What the scoring needs of the videos; depends on the video only, so an index stores it."""
        return normalize_masked(video_feat, video_mask), self.video_frame_weights(
            video_feat, video_mask
        )

    def forward(
        self,
        text_feat: torch.Tensor,
        video_feat: torch.Tensor,
        text_mask: torch.Tensor,
        video_mask: torch.Tensor,
    ) -> torch.Tensor:
        text, text_weight = self.prepare_text(text_feat, text_mask)
        video, video_weight = self.prepare_video(video_feat, video_mask)
        return token_wise_scores(text, text_weight, video, video_weight, self.block_elements)
