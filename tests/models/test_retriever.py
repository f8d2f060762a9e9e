import pytest
import torch

from models import Retriever, RetrieverConfig, dot_product_scores, info_nce, tokenize

CAPTIONS = ["a red circle moves to the left", "a blue square moves up", "a green triangle"]


def build(tokenizer, **kw):
    torch.manual_seed(0)
    return Retriever(RetrieverConfig.tiny(vocab_size=len(tokenizer), max_frames=4, **kw))


def batch(tokenizer, seed=0):
    g = torch.Generator().manual_seed(seed)
    enc = tokenize(tokenizer, CAPTIONS, max_length=16)
    pixels = torch.randn(3, 4, 3, 64, 64, generator=g)
    frame_mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]])
    return enc["input_ids"], enc["attention_mask"], pixels, frame_mask


@pytest.mark.parametrize("sim_header", ["meanP", "seqTransf"])
@pytest.mark.parametrize("interaction", ["dp", "ti", "wti"])
def test_encoders_and_scores_shapes(clip_tokenizer, sim_header, interaction):
    model = build(clip_tokenizer, sim_header=sim_header, interaction=interaction).eval()
    ids, mask, pixels, frame_mask = batch(clip_tokenizer)
    with torch.no_grad():
        text_feat, text_mask = model.encode_text(ids, mask)
        video_feat, video_mask = model.encode_video(pixels, frame_mask)
        scores = model.similarity(text_feat, video_feat, text_mask, video_mask)
    assert text_feat.shape == (3, 16, 64) and torch.equal(text_mask, mask)
    assert video_feat.shape == (3, 4, 64) and torch.equal(video_mask, frame_mask)
    assert scores.shape == (3, 3)
    assert scores.abs().max() <= 1 + 1e-5  # cosine-based


def test_backward_reaches_every_trainable_part(clip_tokenizer):
    model = build(clip_tokenizer, sim_header="seqTransf", interaction="wti").train()
    ids, mask, pixels, frame_mask = batch(clip_tokenizer)
    info_nce(model(ids, mask, pixels, frame_mask), model.logit_scale).backward()
    # A softmax is shift-invariant, so the last bias before each weight softmax gets no
    # gradient (in DRL too), up to rounding; everything else must get one.
    shift_invariant = {"head.text_weight_fc.2.bias", "head.video_weight_fc.2.bias"}
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert all(grads[n].abs().max() < 1e-6 for n in shift_invariant)
    silent = [
        n
        for n, g in grads.items()
        if n not in shift_invariant and (g is None or g.abs().sum() == 0)
    ]
    assert silent == []


def test_pinned_scores(clip_tokenizer):
    model = build(clip_tokenizer).eval()
    ids, mask, pixels, frame_mask = batch(clip_tokenizer)
    with torch.no_grad():
        scores = model(ids, mask, pixels, frame_mask)
    # Computed by this code at seed 0 (torch 2.13.0, transformers 5.23.0), then pinned.
    want = torch.tensor(PINNED)
    assert torch.allclose(scores[0], want, atol=1e-4), scores[0].tolist()


PINNED = [0.04702146, 0.05448378, -0.00965950]


def test_padded_frames_change_nothing(clip_tokenizer):
    """seqTransf masks padded frames out of attention; scores ignore them too."""
    model = build(clip_tokenizer, sim_header="seqTransf").eval()
    ids, mask, pixels, frame_mask = batch(clip_tokenizer)
    noisy = pixels.clone()
    noisy[1, 2:] = torch.randn_like(noisy[1, 2:]) * 5  # video 1 has 2 real frames
    with torch.no_grad():
        a, _ = model.encode_video(pixels, frame_mask)
        b, _ = model.encode_video(noisy, frame_mask)
        assert torch.allclose(a[1, :2], b[1, :2], atol=1e-5)
        text_feat, text_mask = model.encode_text(ids, mask)
        sa = model.similarity(text_feat, a, text_mask, frame_mask)
        sb = model.similarity(text_feat, b, text_mask, frame_mask)
    assert torch.allclose(sa, sb, atol=1e-5)


def test_dp_is_eot_against_masked_mean(clip_tokenizer):
    torch.manual_seed(1)
    text_feat, video_feat = torch.randn(2, 5, 8), torch.randn(3, 4, 8)
    text_mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    video_mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]])
    got = dot_product_scores(text_feat, video_feat, text_mask, video_mask)
    for a, eot in enumerate([2, 4]):
        t = text_feat[a, eot] / text_feat[a, eot].norm()
        for b in range(3):
            n = int(video_mask[b].sum())
            frames = video_feat[b, :n] / video_feat[b, :n].norm(dim=-1, keepdim=True)
            v = frames.mean(0)
            assert torch.allclose(got[a, b], t @ (v / v.norm()), atol=1e-6)


def test_bad_options_are_rejected():
    with pytest.raises(ValueError, match="sim_header"):
        RetrieverConfig.tiny(sim_header="seqLSTM")
    with pytest.raises(ValueError, match="interaction"):
        RetrieverConfig.tiny(interaction="xti")


def test_freeze_layer_num_freezes_as_clip4clip():
    """CLIP4Clip's rule on HF names: the embeddings, the pre-norm and the blocks below N stop
    training; the final norms, projections, logit scale, blocks N and up, and everything
    outside CLIP (header, weight heads) train. -1 and 3d patches freeze nothing."""
    from models import freeze_clip_layers

    model = Retriever(RetrieverConfig.tiny(vocab_size=50, max_frames=4))
    frozen_count = freeze_clip_layers(model, 1)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen_count == len(frozen) > 0
    for name in (
        "clip.text_model.embeddings.token_embedding.weight",
        "clip.text_model.embeddings.position_embedding.weight",
        "clip.vision_model.embeddings.class_embedding",
        "clip.vision_model.embeddings.patch_embedding.weight",
        "clip.vision_model.pre_layrnorm.weight",
        "clip.text_model.encoder.layers.0.mlp.fc1.weight",
        "clip.vision_model.encoder.layers.0.self_attn.q_proj.weight",
    ):
        assert name in frozen, name
    assert all(".layers.1." not in n and ".layers.2." not in n for n in frozen)
    assert not any(
        n.startswith(("temporal.", "head.", "clip.text_projection", "clip.visual_projection"))
        or "final_layer_norm" in n
        or "post_layernorm" in n
        or n == "clip.logit_scale"
        for n in frozen
    )
    for off in (-1,):
        fresh = Retriever(RetrieverConfig.tiny(vocab_size=50, max_frames=4))
        assert freeze_clip_layers(fresh, off) == 0
    patch3d = Retriever(RetrieverConfig.tiny(vocab_size=50, max_frames=4, linear_patch="3d"))
    assert freeze_clip_layers(patch3d, 0) == 0


def test_3d_patches_start_as_clips_2d_and_keep_videos_apart():
    """CLIP4Clip's initialisation (CLIP's kernel in the middle frame) encodes as the 2d model
    does; once the side taps are trained, a video's features still depend on its own frames
    only (each video is convolved on its own)."""
    torch.manual_seed(0)
    flat = Retriever(RetrieverConfig.tiny(vocab_size=50, max_frames=4)).eval()
    torch.manual_seed(0)
    deep = Retriever(RetrieverConfig.tiny(vocab_size=50, max_frames=4, linear_patch="3d")).eval()
    patch = "clip.vision_model.embeddings.patch_embedding.weight"
    # The same weights everywhere else (building the Conv3d drew from the RNG).
    deep.load_state_dict({**flat.state_dict(), patch: deep.state_dict()[patch]})
    pixels = torch.randn(3, 4, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    mask = torch.ones(3, 4, dtype=torch.long)
    with torch.no_grad():
        torch.testing.assert_close(
            deep.encode_video(pixels, mask)[0], flat.encode_video(pixels, mask)[0]
        )
        deep.clip.vision_model.embeddings.patch_embedding.weight.add_(0.05)
        before = deep.encode_video(pixels, mask)[0]
        changed = pixels.clone()
        changed[1] = torch.randn_like(changed[1])
        after = deep.encode_video(changed, mask)[0]
    torch.testing.assert_close(after[0], before[0])
    torch.testing.assert_close(after[2], before[2])
    assert (after[1] - before[1]).abs().max() > 1e-3
