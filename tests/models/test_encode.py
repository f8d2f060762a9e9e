"""models.encode: the one encoding evaluation, indexing, serving and the benchmarks use."""

import pytest
import torch

from models import Retriever, RetrieverConfig, token_wise_scores, tokenize
from models.encode import encode_texts, encode_videos

CAPTIONS = ["a red circle moves to the left", "a blue square moves up", "a green triangle"]


@pytest.mark.parametrize("interaction", ["dp", "ti", "wti"])
def test_encodings_score_as_the_model_does(clip_tokenizer, interaction):
    torch.manual_seed(0)
    model = Retriever(
        RetrieverConfig.tiny(
            vocab_size=len(clip_tokenizer),
            max_frames=4,
            max_words=16,
            sim_header="meanP",
            interaction=interaction,
        )
    ).eval()
    pixels = torch.randn(3, 4, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    frame_mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]])
    texts = encode_texts(model, clip_tokenizer, CAPTIONS)
    videos = encode_videos(
        model, pixels.numpy(), frame_mask.numpy()
    )  # arrays, as Ray Data hands them
    frames = 1 if interaction == "dp" else 4
    assert texts.features.shape == (
        3,
        1 if interaction == "dp" else 16,
        64,
    ) and videos.features.shape == (3, frames, 64)
    # The kernel on the encodings gives the model's own scores.
    ids = tokenize(clip_tokenizer, CAPTIONS, 16)
    with torch.no_grad():
        want = model(ids["input_ids"], ids["attention_mask"], pixels, frame_mask)
    got = token_wise_scores(texts.features, texts.weights, videos.features, videos.weights)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    # The pooled vector is the unit-length weighted mean of the prepared tokens.
    mean = torch.einsum("ntd,nt->nd", videos.features, videos.weights)
    torch.testing.assert_close(videos.pooled, mean / mean.norm(dim=-1, keepdim=True))
    assert (
        set(texts.numpy()) == {"features", "weights", "pooled"}
        and texts.numpy()["features"].dtype.name == "float32"
    )
