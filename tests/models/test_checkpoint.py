import json

import pytest
import torch

from models import (
    PitVQAConfig,
    PitVQANet,
    Retriever,
    RetrieverConfig,
    load_checkpoint,
    save_checkpoint,
    tokenize,
)


def files_in(folder):
    return sorted(p.name for p in folder.iterdir())


def test_pitvqa_round_trip(tmp_path, gpt2_tokenizer):
    torch.manual_seed(0)
    model = PitVQANet(PitVQAConfig.tiny(num_classes=18, vocab_size=len(gpt2_tokenizer))).eval()
    save_checkpoint(tmp_path, model, gpt2_tokenizer)
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= set(
        files_in(tmp_path)
    )
    assert not [n for n in files_in(tmp_path) if n.endswith((".bin", ".pt", ".pth", ".pkl"))]
    loaded, tokenizer = load_checkpoint(tmp_path)
    enc = tokenize(tokenizer, ["what instrument is being used", "where"], 30)
    pixels = torch.rand(2, 3, 64, 64)
    # Every tensor comes back bit for bit; the outputs agree to float precision (two model
    # instances' matmuls may take differently aligned kernel paths: seen once in CI).
    saved, back = model.state_dict(), loaded.state_dict()
    assert saved.keys() == back.keys() and all(torch.equal(saved[k], back[k]) for k in saved)
    with torch.no_grad():
        assert torch.allclose(model(pixels, **enc), loaded(pixels, **enc), atol=1e-6)
    assert loaded.config == model.config


@pytest.mark.parametrize("sim_header,interaction", [("seqTransf", "wti"), ("meanP", "dp")])
def test_retriever_round_trip(tmp_path, clip_tokenizer, sim_header, interaction):
    torch.manual_seed(0)
    config = RetrieverConfig.tiny(
        vocab_size=len(clip_tokenizer), sim_header=sim_header, interaction=interaction
    )
    model = Retriever(config).eval()
    save_checkpoint(tmp_path, model, clip_tokenizer, extra={"epoch": 3})
    assert json.loads((tmp_path / "config.json").read_text())["epoch"] == 3
    loaded, tokenizer = load_checkpoint(tmp_path)
    enc = tokenize(tokenizer, ["a red circle moves to the left", "a blue square"], 16)
    pixels, frame_mask = torch.randn(2, 12, 3, 64, 64), torch.ones(2, 12, dtype=torch.long)
    with torch.no_grad():
        assert torch.equal(
            model(enc["input_ids"], enc["attention_mask"], pixels, frame_mask),
            loaded(enc["input_ids"], enc["attention_mask"], pixels, frame_mask),
        )


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_checkpoint(tmp_path)


def test_a_retriever_saved_before_the_eps_field_keeps_the_eps_it_was_trained_with(
    tmp_path, clip_tokenizer
):
    model = Retriever(RetrieverConfig.tiny(vocab_size=len(clip_tokenizer)))
    assert (
        model.temporal.layers[0].layer_norm1.eps == 1e-12
    )  # the references' value, for new models
    save_checkpoint(tmp_path, model, clip_tokenizer)
    saved = json.loads((tmp_path / "config.json").read_text())
    del saved["config"]["temporal_layer_norm_eps"]  # as written before the field existed
    (tmp_path / "config.json").write_text(json.dumps(saved))
    loaded, _ = load_checkpoint(tmp_path)
    assert {layer.layer_norm1.eps for layer in loaded.temporal.layers} == {1e-5}
