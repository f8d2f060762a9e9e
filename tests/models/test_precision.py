"""``models.precision``: what ``auto`` resolves to, what is refused, and that encodings come
out fp32 whatever the models compute in."""

from pathlib import Path

import pytest
import torch

from models import Retriever, RetrieverConfig
from models.encode import encode_tokens, encode_videos
from models.precision import autocast, cpu_has_fast_bf16, resolve_precision


def test_auto_is_bf16_exactly_where_the_cpu_has_bf16_instructions_for_large_models():
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    native = "avx512_bf16" in flags or "amx_bf16" in flags
    assert cpu_has_fast_bf16() == native
    assert resolve_precision("auto", "cpu") == ("bf16" if native else "fp32")
    # The tiny presets stay fp32 on any CPU: bf16 made their small matmuls slower.
    assert resolve_precision("auto", "cpu", large=False) == "fp32"
    assert resolve_precision("fp32", "cpu") == "fp32"
    assert resolve_precision("bf16", "cpu") == "bf16"


def test_fp16_on_a_cpu_and_unknown_names_are_refused():
    with pytest.raises(ValueError, match="GPU"):
        resolve_precision("fp16", "cpu")
    with pytest.raises(ValueError, match="choose from"):
        resolve_precision("fp8", "cpu")


def test_encodings_are_fp32_under_bf16_autocast_and_near_fp32s():
    torch.manual_seed(0)
    model = Retriever(RetrieverConfig.tiny(vocab_size=64, image_size=32, max_frames=3)).eval()
    ids = torch.randint(2, 60, (4, 8))
    mask = torch.ones(4, 8, dtype=torch.long)
    pixels, frame_mask = torch.randn(4, 3, 3, 32, 32), torch.ones(4, 3, dtype=torch.long)
    full = encode_tokens(model, ids, mask), encode_videos(model, pixels, frame_mask)
    with autocast("bf16", "cpu"):
        half = encode_tokens(model, ids, mask), encode_videos(model, pixels, frame_mask)
    for a, b in zip(full, half):
        assert b.features.dtype == b.weights.dtype == b.pooled.dtype == torch.float32
        assert not torch.equal(a.features, b.features)  # computed in bf16 indeed
        cosine = torch.nn.functional.cosine_similarity(a.pooled, b.pooled, dim=-1)
        assert cosine.min() > 0.99, cosine
