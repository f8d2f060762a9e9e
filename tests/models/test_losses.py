import math

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from models import WTIHead, all_gather_with_grad, cdcr_loss, clamp_logit_scale_, info_nce


def test_info_nce_is_symmetric_cross_entropy():
    torch.manual_seed(0)
    scores = torch.randn(5, 5)
    scale = torch.tensor(math.log(20.0))
    logits = 20.0 * scores
    rows = -torch.log_softmax(logits, dim=1).diag().mean()
    cols = -torch.log_softmax(logits, dim=0).diag().mean()
    assert torch.allclose(info_nce(scores, scale), (rows + cols) / 2, atol=1e-6)


def test_logit_scale_is_clamped_to_100():
    scores = torch.randn(4, 4)
    assert torch.allclose(
        info_nce(scores, torch.tensor(math.log(1000.0))),
        info_nce(scores, torch.tensor(math.log(100.0))),
    )
    param = torch.nn.Parameter(torch.tensor(math.log(500.0)))
    clamp_logit_scale_(param)
    assert math.isclose(param.exp().item(), 100.0, rel_tol=1e-5)


def case(B=6, L=5, F=4, D=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    head = WTIHead(D)
    text_raw, video_raw = torch.randn(B, L, D, generator=g), torch.randn(B, F, D, generator=g)
    text_mask = (torch.arange(L) < torch.randint(1, L + 1, (B, 1), generator=g)).long()
    video_mask = (torch.arange(F) < torch.randint(1, F + 1, (B, 1), generator=g)).long()
    text, text_w = head.prepare_text(text_raw, text_mask)
    video, video_w = head.prepare_video(video_raw, video_mask)
    return text, text_mask, video, video_mask, text_w, video_w


def standardize(x):
    return (x - x.mean(0)) / x.std(0)


def penalty(c, alpha1, alpha2):
    D = c.shape[0]
    on = sum((c[i, i] - 1) ** 2 for i in range(D))
    off = sum(c[i, j] ** 2 for i in range(D) for j in range(D) if i != j)
    return alpha1 * on + alpha2 * off


def best_pairs(text, text_mask, video, video_mask):
    """DRL's selection for the matched pairs, written per item."""
    tokens, token_frames, frames, frame_tokens, tw_index, vw_index = [], [], [], [], [], []
    for b in range(text.shape[0]):
        sim = text[b] @ video[b].T  # padded rows/cols are zero vectors -> 0, as in DRL
        for t in range(text.shape[1]):
            if text_mask[b, t]:
                tokens.append(text[b, t])
                token_frames.append(video[b, sim[t].argmax()])
                tw_index.append((b, t))
        for f in range(video.shape[1]):
            if video_mask[b, f]:
                frames.append(video[b, f])
                frame_tokens.append(text[b, sim[:, f].argmax()])
                vw_index.append((b, f))
    return (
        torch.stack(tokens),
        torch.stack(token_frames),
        torch.stack(frames),
        torch.stack(frame_tokens),
        tw_index,
        vw_index,
    )


@pytest.mark.parametrize("variant", [2, 3])
def test_cdcr_matches_drl_formulation(variant):
    text, text_mask, video, video_mask, text_w, video_w = case()
    t, tv, v, vt, tw_index, vw_index = best_pairs(text, text_mask, video, video_mask)
    za, zb, xa, xb = map(standardize, (t, tv, v, vt))
    if variant == 2:
        c = (za.T @ zb / len(za) + xa.T @ xb / len(xa)) / 2
    else:  # DRL: einsum('acd,a->cd', outer products, weights) / B
        wt = torch.stack([text_w[i] for i in tw_index])
        wv = torch.stack([video_w[i] for i in vw_index])
        c1 = torch.einsum("acd,a->cd", torch.einsum("ac,ad->acd", za, zb), wt) / text.shape[0]
        c2 = torch.einsum("acd,a->cd", torch.einsum("ac,ad->acd", xa, xb), wv) / text.shape[0]
        c = (c1 + c2) / 2
    got = cdcr_loss(
        variant, text, text_mask, video, video_mask, text_w, video_w, alpha1=0.14, alpha2=0.01
    )
    assert torch.allclose(got, penalty(c, 0.14, 0.01), atol=1e-5)


def test_cdcr_variant1_uses_one_real_token_and_frame():
    text, text_mask, video, video_mask, *_ = case(seed=1)
    got = cdcr_loss(
        1,
        text,
        text_mask,
        video,
        video_mask,
        alpha1=1.0,
        alpha2=0.5,
        generator=torch.Generator().manual_seed(7),
    )
    g = torch.Generator().manual_seed(7)
    token = torch.randint(0, 10000, (6,), generator=g) % text_mask.sum(-1)
    frame = torch.randint(0, 10000, (6,), generator=g) % video_mask.sum(-1)
    za, zb = standardize(text[torch.arange(6), token]), standardize(video[torch.arange(6), frame])
    assert torch.allclose(got, penalty(za.T @ zb / 6, 1.0, 0.5), atol=1e-5)


def test_cdcr_is_differentiable_and_checks_its_inputs():
    text, text_mask, video, video_mask, text_w, video_w = case(seed=2)
    text.requires_grad_(True)
    cdcr_loss(3, text, text_mask, video, video_mask, text_w, video_w).backward()
    assert text.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="1, 2 or 3"):
        cdcr_loss(4, text, text_mask, video, video_mask)
    with pytest.raises(ValueError, match="WTI weights"):
        cdcr_loss(3, text.detach(), text_mask, video, video_mask)


def _gather_worker(rank, world_size, port, results):
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size
    )
    local = torch.full((2, 3), float(rank + 1), requires_grad=True)
    gathered = all_gather_with_grad(local)  # (world*2, 3)
    weights = torch.arange(gathered.numel(), dtype=torch.float32).view_as(gathered)
    (gathered * weights).sum().backward()
    results[rank] = (gathered.detach().clone(), local.grad.clone())
    dist.destroy_process_group()


def test_all_gather_keeps_gradients_across_two_workers():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    results = mp.Manager().dict()
    mp.spawn(_gather_worker, args=(2, port, results), nprocs=2)
    weights = torch.arange(12, dtype=torch.float32).view(4, 3)
    for rank in range(2):
        gathered, grad = results[rank]
        assert torch.equal(gathered, torch.cat([torch.full((2, 3), 1.0), torch.full((2, 3), 2.0)]))
        # Both ranks' losses depend on this rank's slice: its gradient is summed over them.
        assert torch.equal(grad, 2 * weights[2 * rank : 2 * rank + 2])


def test_all_gather_is_identity_on_one_process():
    x = torch.randn(3, 2)
    assert all_gather_with_grad(x) is x


@pytest.mark.parametrize("variant", [1, 2, 3])
def test_cdcr_through_the_real_objective(variant):
    """``--cdcr 1|2|3`` as training runs it: a tiny Retriever's ``ContrastiveObjective`` adds
    lambda * CDCR of the prepared token and frame features to InfoNCE, and the gradient
    reaches the encoders (and, for variant 3, DRL's weight heads)."""
    from models import ContrastiveObjective, Retriever, RetrieverConfig

    torch.manual_seed(0)
    model = Retriever(RetrieverConfig.tiny(vocab_size=64, image_size=32, max_words=8, max_frames=3))
    ids = torch.randint(2, 60, (4, 8))
    mask = (torch.arange(8) < torch.tensor([[8], [5], [3], [6]])).long()
    pixels, frame_mask = torch.randn(4, 3, 3, 32, 32), torch.ones(4, 3, dtype=torch.long)
    objective = ContrastiveObjective(model, cdcr=variant, cdcr_lambda=0.5)
    plain = ContrastiveObjective(model, cdcr=0)
    out = objective(ids, mask, pixels, frame_mask)
    assert out["cdcr"] > 0
    assert torch.allclose(
        out["loss"].detach(), plain(ids, mask, pixels, frame_mask)["loss"] + out["cdcr"]
    )
    if variant > 1:  # deterministic: recompute the regulariser from the model's own features
        with torch.no_grad():
            text_feat, text_mask = model.encode_text(ids, mask)
            video_feat, video_mask = model.encode_video(pixels, frame_mask)
            text, text_w = model.head.prepare_text(text_feat, text_mask)
            video, video_w = model.head.prepare_video(video_feat, video_mask)
            want = 0.5 * cdcr_loss(
                variant, text, text_mask, video, video_mask, text_w, video_w, 0.14, 0.0
            )
        assert torch.allclose(out["cdcr"], want, atol=1e-6)
    model.zero_grad()
    (
        out["loss"] - out["nce"]
    ).backward()  # "nce" is detached: this is the regulariser's own gradient
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.clip.parameters())
    if variant == 3:
        assert model.head.text_weight_fc[0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("variant", [2, 3])
def test_cdcr_stays_finite_when_a_channel_does_not_vary(variant):
    """Every frame's best token is the same vector (a causal text tower's first token is the
    same in every caption): DRL's standardisation divides by a zero std there (NaN loss,
    seen in a --cdcr 3 run at step 3); here the loss and its gradient stay finite."""
    text, text_mask, video, video_mask, text_w, video_w = case(seed=3)
    text = text.clone()
    text[:, 0] = text[0, 0] * 10  # the same first token in every text, far the best match
    text.requires_grad_(True)
    loss = cdcr_loss(variant, text, text_mask, video, video_mask, text_w, video_w)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(text.grad).all()
