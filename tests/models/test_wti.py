"""WTIHead and the blockwise scoring against the formula, written out plainly here."""

import pytest
import torch

from models import WTIHead, normalize_masked, token_wise_scores, token_wise_topk


def formula_scores(head, text_feat, video_feat, text_mask, video_mask):
    """models.md section 2, one text-video pair at a time, no blocking, no tricks."""
    A, L, _ = text_feat.shape
    V, num_frames, _ = video_feat.shape
    out = torch.zeros(A, V)
    for a in range(A):
        real_tokens = text_mask[a].bool()
        if head.interaction == "wti":
            logits = head.text_weight_fc(text_feat[a]).squeeze(-1)  # from un-normalised features
            text_w = torch.zeros(L)
            text_w[real_tokens] = torch.softmax(logits[real_tokens], dim=0)
        else:
            text_w = text_mask[a].float() / text_mask[a].sum()
        for b in range(V):
            real_frames = video_mask[b].bool()
            if head.interaction == "wti":
                logits = head.video_weight_fc(video_feat[b]).squeeze(-1)
                video_w = torch.zeros(num_frames)
                video_w[real_frames] = torch.softmax(logits[real_frames], dim=0)
            else:
                video_w = video_mask[b].float() / video_mask[b].sum()
            sim = torch.zeros(L, num_frames)
            for i in range(L):
                for f in range(num_frames):
                    t = text_feat[a, i] / text_feat[a, i].norm()
                    v = video_feat[b, f] / video_feat[b, f].norm()
                    sim[i, f] = (t @ v) * text_mask[a, i] * video_mask[b, f]  # padded pair -> 0
            t2v = (sim.max(dim=1).values * text_w).sum()
            v2t = (sim.max(dim=0).values * video_w).sum()
            out[a, b] = (t2v + v2t) / 2
    return out


def random_case(A=4, V=5, L=6, F=4, D=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    text = torch.randn(A, L, D, generator=g)
    video = torch.randn(V, F, D, generator=g)
    text_mask = torch.zeros(A, L, dtype=torch.long)
    video_mask = torch.zeros(V, F, dtype=torch.long)
    for a, n in enumerate(torch.randint(1, L + 1, (A,), generator=g)):
        text_mask[a, :n] = 1
    for b, n in enumerate(torch.randint(1, F + 1, (V,), generator=g)):
        video_mask[b, :n] = 1
    return text, video, text_mask, video_mask


@pytest.mark.parametrize("interaction", ["wti", "ti"])
def test_matches_formula_with_masks(interaction):
    torch.manual_seed(0)
    head = WTIHead(16, interaction)
    text, video, text_mask, video_mask = random_case()
    with torch.no_grad():
        got = head(text, video, text_mask, video_mask)
        want = formula_scores(head, text, video, text_mask, video_mask)
    assert got.shape == (4, 5)
    assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()


@pytest.mark.parametrize("interaction", ["wti", "ti"])
def test_one_token_texts_and_one_frame_videos(interaction):
    torch.manual_seed(1)
    head = WTIHead(16, interaction)
    text, video, text_mask, video_mask = random_case(seed=1)
    text_mask[:] = 0
    text_mask[:, 0] = 1
    video_mask[:] = 0
    video_mask[:, 0] = 1
    with torch.no_grad():
        got = head(text, video, text_mask, video_mask)
        want = formula_scores(head, text, video, text_mask, video_mask)
    assert torch.allclose(got, want, atol=1e-5)
    # One token against one frame, with padding on both sides: each direction is the
    # max of that cosine and the padded pairs' 0.
    cos = torch.nn.functional.cosine_similarity(text[:, 0, None], video[None, :, 0], dim=-1)
    assert (cos < 0).any()
    assert torch.allclose(got, cos.clamp(min=0), atol=1e-5)


@pytest.mark.parametrize("interaction", ["wti", "ti"])
def test_all_padding_except_one_position(interaction):
    torch.manual_seed(2)
    head = WTIHead(16, interaction)
    text, video, text_mask, video_mask = random_case(L=7, F=5, seed=2)
    g = torch.Generator().manual_seed(3)
    text_mask[:] = 0
    video_mask[:] = 0
    text_mask[torch.arange(4), torch.randint(0, 7, (4,), generator=g)] = (
        1  # anywhere, not only first
    )
    video_mask[torch.arange(5), torch.randint(0, 5, (5,), generator=g)] = 1
    with torch.no_grad():
        got = head(text, video, text_mask, video_mask)
        want = formula_scores(head, text, video, text_mask, video_mask)
    assert torch.allclose(got, want, atol=1e-5)


def test_padded_pair_scores_zero_not_minus_inf():
    """The reference multiplies masks in, so a padded frame's 0 beats a negative cosine."""
    head = WTIHead(8, "ti")
    v = torch.nn.functional.normalize(torch.randn(8), dim=0)
    text = (-v).view(1, 1, 8)  # anti-aligned with the only real frame: cosine -1
    video = torch.stack([v, torch.randn(8)]).view(1, 2, 8)
    got = head(text, video, torch.ones(1, 1), torch.tensor([[1, 0]]))
    # t2v = max(-1, 0) = 0 (the padded pair wins); v2t = -1 over the one real frame.
    assert torch.allclose(got, torch.tensor([[-0.5]]), atol=1e-6)


def test_weights_come_from_unnormalised_features():
    torch.manual_seed(4)
    head = WTIHead(8, "wti")
    text, video, text_mask, video_mask = random_case(D=8, seed=4)
    scaled = text * torch.linspace(0.5, 3.0, text.shape[1]).view(1, -1, 1)  # same directions
    w1 = head.text_token_weights(text, text_mask)
    w2 = head.text_token_weights(scaled, text_mask)
    assert not torch.allclose(w1, w2)
    assert torch.allclose(w1.sum(-1), torch.ones(4))
    assert (w1[text_mask == 0] == 0).all()


def test_weight_fc_layout_and_init():
    torch.manual_seed(5)
    head = WTIHead(512)
    for fc in (head.text_weight_fc, head.video_weight_fc):
        assert [type(m).__name__ for m in fc] == ["Linear", "ReLU", "Linear"]
        assert fc[0].weight.shape == (512, 512) and fc[2].weight.shape == (1, 512)
        assert abs(fc[0].weight.std().item() - 0.02) < 0.001
        assert abs(fc[0].weight.mean().item()) < 0.001
        assert fc[0].bias.abs().sum() == 0 and fc[2].bias.abs().sum() == 0


@pytest.mark.parametrize("interaction", ["wti", "ti"])
def test_blocked_topk_and_full_paths_agree(interaction):
    torch.manual_seed(6)
    head = WTIHead(16, interaction)
    text, video, text_mask, video_mask = random_case(A=37, V=53, L=6, F=4, seed=6)
    with torch.no_grad():
        t, tw = head.prepare_text(text, text_mask)
        v, vw = head.prepare_video(video, video_mask)
        one_block = token_wise_scores(t, tw, v, vw, block_elements=10**9)
        tiny_blocks = token_wise_scores(t, tw, v, vw, block_elements=6 * 4 * 3)  # 1 text x 3 videos
        assert torch.allclose(one_block, tiny_blocks, atol=1e-6)
        assert torch.allclose(one_block, head(text, video, text_mask, video_mask), atol=1e-6)
        scores, index = token_wise_topk(t, tw, v, vw, k=7, block_elements=6 * 4 * 5)
    want_scores, want_index = one_block.topk(7, dim=1)
    assert torch.allclose(scores, want_scores, atol=1e-6)
    assert torch.equal(index, want_index)
    assert torch.allclose(one_block.gather(1, index), scores, atol=1e-6)


def test_topk_larger_than_collection():
    torch.manual_seed(7)
    head = WTIHead(16)
    text, video, text_mask, video_mask = random_case(A=2, V=3, seed=7)
    t, tw = head.prepare_text(text, text_mask)
    v, vw = head.prepare_video(video, video_mask)
    scores, index = token_wise_topk(t, tw, v, vw, k=10)
    assert scores.shape == (2, 3) and sorted(index[0].tolist()) == [0, 1, 2]


def test_backward_reaches_the_weight_networks_except_the_shift_invariant_last_bias():
    torch.manual_seed(8)
    head = WTIHead(16)
    text, video, text_mask, video_mask = random_case(seed=8)
    text.requires_grad_(True)
    head(text, video, text_mask, video_mask).sum().backward()
    # A softmax is shift-invariant: the last bias before each weight softmax moves every
    # logit alike, so its gradient is analytically zero (float noise only). Every other
    # parameter of the weight networks gets a real gradient.
    shift_invariant = {"text_weight_fc.2.bias", "video_weight_fc.2.bias"}
    for name, p in head.named_parameters():
        assert p.grad is not None, name
        if name in shift_invariant:
            assert p.grad.abs().max() < 1e-6, name
        else:
            assert p.grad.abs().max() > 1e-4, (name, p.grad.abs().max())
    assert text.grad.abs().max() > 1e-4


def test_normalize_masked_zeroes_padding():
    feat = torch.randn(2, 3, 4)
    out = normalize_masked(feat, torch.tensor([[1, 1, 0], [1, 0, 0]]))
    assert torch.allclose(out[0, :2].norm(dim=-1), torch.ones(2))
    assert out[0, 2].abs().sum() == 0 and out[1, 1:].abs().sum() == 0


@pytest.mark.gpu
def test_fp16_topk_ranking_on_gpu():
    torch.manual_seed(9)
    head = WTIHead(64).cuda()
    text, video, text_mask, video_mask = (
        x.cuda() for x in random_case(A=64, V=2000, L=16, F=8, D=64, seed=9)
    )
    with torch.no_grad():
        t, tw = head.prepare_text(text, text_mask)
        v, vw = head.prepare_video(video, video_mask)
        _, fp32 = token_wise_topk(t, tw, v, vw, k=10, dtype=torch.float32)
        _, fp16 = token_wise_topk(t, tw, v, vw, k=10)
    assert (fp32 == fp16).all(dim=1).float().mean() >= 0.99


def test_explain_pair_parts_sum_to_the_exact_score():
    """Every text-video pair of a padded case: the parts give the blocked kernel's score
    within 1e-5, each token's best frame is its row's maximum, a frame's best its column's."""
    from models.wti import explain_pair

    torch.manual_seed(0)
    head = WTIHead(16, "wti")
    text, video, text_mask, video_mask = random_case(A=3, V=4)
    with torch.no_grad():
        t, tw = head.prepare_text(text, text_mask)
        v, vw = head.prepare_video(video, video_mask)
        scores = token_wise_scores(t, tw, v, vw)
    for a in range(3):
        for b in range(4):
            parts = explain_pair(t[a], tw[a], v[b], vw[b])
            assert abs(parts["score"] - scores[a, b]) < 1e-5
            t2v = (parts["token_weights"] * parts["token_best_similarity"]).sum()
            v2t = (parts["frame_weights"] * parts["frame_best_similarity"]).sum()
            assert abs((t2v + v2t) / 2 - scores[a, b]) < 1e-5
            sim = parts["similarity"]
            assert torch.equal(parts["token_best_similarity"], sim.amax(1))
            assert torch.equal(sim.gather(1, parts["token_best_frame"][:, None])[:, 0], sim.amax(1))
            assert torch.equal(sim.gather(0, parts["frame_best_token"][None])[0], sim.amax(0))
