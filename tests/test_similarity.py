"""Sharded retrieval ranks against the full matrix: same ranks, ties included."""

import numpy as np
import torch

from jobs.metrics import metrics_from_ranks, retrieval_metrics, retrieval_ranks
from jobs.similarity import slice_bounds, sliced_ranks
from models import WTIHead, token_wise_scores


def _features(num_texts, num_videos, seed=0, tokens=8, frames=5, dim=32):
    torch.manual_seed(seed)
    head = WTIHead(dim)
    text, video = torch.randn(num_texts, tokens, dim), torch.randn(num_videos, frames, dim)
    text_mask = (torch.arange(tokens) < torch.randint(1, tokens + 1, (num_texts, 1))).long()
    video_mask = (torch.arange(frames) < torch.randint(1, frames + 1, (num_videos, 1))).long()
    with torch.no_grad():
        return (*head.prepare_text(text, text_mask), *head.prepare_video(video, video_mask))


def test_slice_bounds_cut_on_the_block_grid_and_cover_every_video():
    bounds = slice_bounds(1500, 3, 8, 5, use_gpu=False)  # blocks of 614 videos here
    assert bounds[0] == 0 and bounds[-1] == 1500
    assert all(b % 614 == 0 for b in bounds[:-1])
    assert slice_bounds(10, 4, 8, 5, use_gpu=False) == [
        0,
        10,
    ]  # fewer videos than a block: one shard


def test_sliced_ranks_equal_the_full_matrix_exactly(ray_local):
    """Several captions per video in shuffled order, three shards of uneven size: every t2v
    and v2t rank equals the full matrix's, and so every metric."""
    text, text_weight, video, video_weight = _features(90, 1500)
    rng = np.random.default_rng(0)
    text_video = rng.integers(0, 1500, 90)
    text_video[:30] = text_video[30:60]  # some videos with two or three captions
    full = token_wise_scores(text, text_weight, video, video_weight).numpy()
    want_t2v, want_v2t = retrieval_ranks(full, text_video)
    for shards in (1, 3):
        t2v, v2t, used = sliced_ranks(
            text, text_weight, video, video_weight, text_video, num_slices=shards
        )
        assert used == shards
        np.testing.assert_array_equal(t2v, want_t2v)
        np.testing.assert_array_equal(v2t, want_v2t)
    assert metrics_from_ranks(t2v, v2t, 1500) == retrieval_metrics(full, text_video)


def test_ties_rank_the_true_item_first_in_both_paths(ray_local):
    """One-hot features make scores exact, so ties are real: 3 texts, 4 videos where videos
    0 and 1 are identical and text 0 (of video 1) ties with video 0. CLIP4Clip's rule gives
    the tied ground truth rank 1; one strictly better video gives rank 2."""
    eye = torch.eye(4)
    text = eye[[0, 0, 2]].unsqueeze(1)  # [3, 1, 4]: one token each
    video = eye[[0, 0, 1, 2]].unsqueeze(1)  # [4, 1, 4]: one frame each
    weights_t, weights_v = torch.ones(3, 1), torch.ones(4, 1)
    text_video = np.array(
        [1, 2, 3]
    )  # text 0 -> video 1 (tied with 0); text 1 -> video 2 (scores 0, two beat it)
    full = token_wise_scores(text, weights_t, video, weights_v).numpy()
    assert full[0, 0] == full[0, 1] == 1.0
    t2v, v2t, _ = sliced_ranks(text, weights_t, video, weights_v, text_video, num_slices=2)
    want_t2v, want_v2t = retrieval_ranks(full, text_video)
    np.testing.assert_array_equal(t2v, want_t2v)
    np.testing.assert_array_equal(v2t, want_v2t)
    assert t2v.tolist() == [
        1,
        3,
        1,
    ]  # tie -> 1; text 1 scores 0 on its video, videos 0 and 1 score 1
    # v2t: video 1's column [1, 1, 0]: text 0 ties text 1 -> 1; video 2's column is all 0 -> 1;
    # video 3's column [0, 0, 1] -> 1
    assert v2t.tolist() == [1, 1, 1]


def test_a_score_that_is_not_a_number_ranks_last(ray_local):
    """A diverged model's NaN scores rank below every candidate, their own included (1 + V
    for t2v, 1 + A for v2t), not first (a NaN compared with ``>`` is False, which would
    count nothing above it: R@1 100)."""
    text = torch.full((3, 1, 4), float("nan"))
    video = torch.eye(4)[[0, 1, 2, 3]].unsqueeze(1)
    t2v, v2t, _ = sliced_ranks(
        text, torch.ones(3, 1), video, torch.ones(4, 1), np.array([0, 1, 2]), num_slices=2
    )
    assert t2v.tolist() == [5, 5, 5] and v2t.tolist() == [4, 4, 4]
