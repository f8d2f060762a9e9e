"""The first stage: centroids, inverted lists, probing, and the exact scores it returns."""

import numpy as np
import torch

from models import token_wise_topk
from retrieval.lists import (
    InvertedLists,
    lists_for,
    nearest_centroid,
    num_lists,
    search_lists,
    train_centroids,
    trim_padding,
)


def random_features(seed, videos, dim=8):
    """Prepared features of 3 queries (5 tokens) and ``videos`` videos (4 frames): tokens,
    weights and pooled vectors of each side."""
    torch.manual_seed(seed)
    text = torch.nn.functional.normalize(torch.randn(3, 5, dim), dim=-1)
    weight = torch.softmax(torch.randn(3, 5), dim=-1)
    frames = torch.nn.functional.normalize(torch.randn(videos, 4, dim), dim=-1)
    frame_weight = torch.softmax(torch.randn(videos, 4), dim=-1)
    return text, weight, torch.randn(3, dim), frames, frame_weight, torch.randn(videos, dim)


def test_inverted_lists_probing_every_list_is_exhaustive_and_probing_is_by_centroid():
    text, weight, pooled_t, frames, frame_weight, pooled_v = random_features(2, 60)
    pooled_v = torch.nn.functional.normalize(pooled_v, dim=-1)
    centroids = train_centroids(pooled_v.numpy(), 6)
    order, lists = InvertedLists.build(
        nearest_centroid(pooled_v.numpy(), centroids), centroids, frames, frame_weight
    )
    exact = token_wise_topk(text, weight, frames[order], frame_weight[order], 5)
    for every in (
        search_lists(text, weight, pooled_t, lists, 5, candidates=60),
        search_lists(text, weight, pooled_t, lists, 5, exact=True),
    ):
        torch.testing.assert_close(exact[0], every[0])
        assert torch.equal(exact[1], every[1])
    # A small budget probes the best-scoring centroid's list first, and only rows of the lists probed.
    best = int((lists.centroids @ pooled_t[0]).argmax())
    probed = lists.probe(pooled_t[0], 1)
    assert probed.tolist() == [best] or lists.offsets[best + 1] == lists.offsets[best]
    found = search_lists(text[:1], weight[:1], pooled_t[:1], lists, 3, candidates=10)
    assert set(found[1][0].tolist()) <= set(lists.rows(lists.probe(pooled_t[0], 10)).tolist())


def test_trimming_the_padding_keeps_every_score():
    torch.manual_seed(0)
    text = torch.nn.functional.normalize(torch.randn(2, 10, 16), dim=-1)
    weight = torch.softmax(torch.randn(2, 10), dim=-1)
    text[:, 6:], weight[:, 6:] = 0, 0
    weight = weight / weight.sum(-1, keepdim=True)
    frames = torch.nn.functional.normalize(torch.randn(50, 4, 16), dim=-1)
    frame_weight = torch.softmax(torch.randn(50, 4), dim=-1)
    short, short_weight = trim_padding(text, weight)
    assert short.shape[1] == 7
    full = token_wise_topk(text, weight, frames, frame_weight, 50)
    trimmed = token_wise_topk(short, short_weight, frames, frame_weight, 50)
    torch.testing.assert_close(full[0], trimmed[0], atol=1e-6, rtol=0)


def test_lists_for_an_old_index_follow_the_build_rule():
    pooled = torch.nn.functional.normalize(
        torch.randn(50, 8, generator=torch.Generator().manual_seed(3)), dim=-1
    )
    centroids, lists = lists_for(pooled.numpy())
    assert len(centroids) == num_lists(50)
    np.testing.assert_array_equal(lists, nearest_centroid(pooled.numpy(), centroids))


def test_the_bound_holds_for_every_video_and_the_bounded_search_is_the_exact_top_k():
    """Clustered features with padded tokens and frames, fp16-rounded as an index stores
    them: each list's bound is at least the exact score of every video in it, and the
    default search (by the bounds) returns exhaustive search's top-k, while scoring fewer
    videos than there are when the clusters separate."""
    from retrieval.lists import bounded_search

    generator = torch.Generator().manual_seed(3)
    dim, videos = 16, 400
    topics = torch.nn.functional.normalize(torch.randn(8, dim, generator=generator), dim=-1)
    topic = torch.randint(0, 8, (videos,), generator=generator)
    frames = topics[topic][:, None] + 0.05 * torch.randn(videos, 4, dim, generator=generator)
    frames = torch.nn.functional.normalize(frames, dim=-1).half().float()  # the index's rounding
    frame_mask = torch.ones(videos, 4)
    frame_mask[::3, 3] = 0  # a video of 3 frames: the 4th is zero with weight 0
    frames = frames * frame_mask[..., None]
    frame_weight = torch.softmax(torch.randn(videos, 4, generator=generator), -1) * frame_mask
    frame_weight = frame_weight / frame_weight.sum(1, keepdim=True)
    pooled_v = torch.nn.functional.normalize(
        torch.einsum("vfd,vf->vd", frames, frame_weight), dim=-1
    )
    centroids = train_centroids(pooled_v.numpy(), 8)
    order, lists = InvertedLists.build(
        nearest_centroid(pooled_v.numpy(), centroids), centroids, frames, frame_weight
    )
    text = topics[:3, None] + 0.05 * torch.randn(3, 6, dim, generator=generator)
    text = torch.nn.functional.normalize(text, dim=-1)
    text[:, 4:] = 0  # two padded tokens
    weight = torch.softmax(torch.randn(3, 6, generator=generator), -1)
    weight[:, 4:] = 0
    weight = weight / weight.sum(1, keepdim=True)
    every = np.flatnonzero(np.diff(lists.offsets))
    for a in range(3):
        scores = lists.scores(text[a : a + 1], weight[a : a + 1], every)[0]
        rows = lists.rows(every)
        bounds = lists.bounds(text[a], weight[a])
        for k in every:
            inside = (rows >= int(lists.offsets[k])) & (rows < int(lists.offsets[k + 1]))
            assert scores[inside].max() <= bounds[k] + 1e-6, (k, scores[inside].max(), bounds[k])
    exact = token_wise_topk(text, weight, frames[order], frame_weight[order], 10)
    found = search_lists(text, weight, torch.zeros(3, dim), lists, 10)
    torch.testing.assert_close(found[0], exact[0])
    assert [set(r.tolist()) for r in found[1]] == [set(r.tolist()) for r in exact[1]]
    # It stops early: the best-bounded list of a topic's query holds its top-10.
    scored = []
    original = lists.scores
    lists.scores = lambda *args: scored.append(len(args[2])) or original(*args)
    bounded_search(text[:1], weight[:1], lists, 10)
    assert sum(scored) < len(every), scored
