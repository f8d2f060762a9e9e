"""The base-preset loading path, on tiny HF models saved with save_pretrained.

No hub access here: the tests write small real HF checkpoints into tmp folders and load
them exactly as a user's local ViT / BLIP / GPT-2 / CLIP folders would be loaded.
"""

import json

import pytest
import torch
from transformers import (
    BlipConfig,
    BlipForQuestionAnswering,
    CLIPConfig,
    CLIPModel,
    GPT2Config,
    GPT2Model,
    ViTConfig,
    ViTModel,
)

from models import (
    PitVQAConfig,
    PitVQANet,
    Retriever,
    RetrieverConfig,
    load_checkpoint,
    load_tokenizer,
    save_checkpoint,
)

WIDTH = 32
BLIP_VOCAB = 120


@pytest.fixture(scope="module")
def pitvqa_folders(tmp_path_factory):
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("hf")
    vit = ViTModel(
        ViTConfig(
            image_size=32,
            patch_size=16,
            hidden_size=WIDTH,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
        ),
        add_pooling_layer=True,
    )
    blip = BlipForQuestionAnswering(
        BlipConfig(
            text_config=dict(
                vocab_size=BLIP_VOCAB,
                hidden_size=WIDTH,
                encoder_hidden_size=WIDTH,
                num_hidden_layers=1,
                num_attention_heads=2,
                intermediate_size=64,
                max_position_embeddings=40,
                bos_token_id=1,
                eos_token_id=2,
                pad_token_id=0,
                sep_token_id=2,
            ),
            vision_config=dict(
                hidden_size=WIDTH,
                image_size=32,
                patch_size=16,
                num_hidden_layers=1,
                num_attention_heads=2,
                intermediate_size=64,
            ),
        )
    )
    gpt2 = GPT2Model(
        GPT2Config(
            vocab_size=300,
            n_embd=WIDTH,
            n_layer=1,
            n_head=2,
            n_positions=40,
            bos_token_id=0,
            eos_token_id=0,
        )
    )
    for name, model in (("vit", vit), ("blip", blip), ("gpt2", gpt2)):
        model.save_pretrained(root / name)
    return root, vit, blip, gpt2


def build_base(root, vocab_size, init):
    return PitVQANet(
        PitVQAConfig.base(
            str(root / "vit"),
            str(root / "blip"),
            str(root / "gpt2"),
            num_classes=18,
            vocab_size=vocab_size,
            text_encoder_init=init,
        )
    )


def same(a: torch.nn.Module, b: torch.nn.Module, skip=()) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return all(
        torch.equal(sa[k], sb[k]) for k in sa if k in sb and not any(k.startswith(s) for s in skip)
    )


def test_pitvqa_loads_vit_gpt2_and_pretrained_blip_text(pitvqa_folders, gpt2_tokenizer):
    root, vit, blip, gpt2 = pitvqa_folders
    model = build_base(root, len(gpt2_tokenizer), "pretrained")
    assert same(model.visual_encoder, vit)  # pooler dropped, everything else arrived
    assert "pooler.dense.weight" not in model.visual_encoder.state_dict()
    assert same(model.gpt_decoder, gpt2)
    assert same(model.text_encoder, blip.text_encoder, skip=("embeddings.word_embeddings",))
    new, old = (
        model.text_encoder.embeddings.word_embeddings.weight,
        blip.text_encoder.embeddings.word_embeddings.weight,
    )
    assert new.shape == (len(gpt2_tokenizer), WIDTH)
    assert torch.equal(new[:BLIP_VOCAB], old)  # the resize keeps the old rows


def test_pitvqa_reference_init_builds_blip_text_from_config(pitvqa_folders, gpt2_tokenizer):
    root, vit, blip, _ = pitvqa_folders
    torch.manual_seed(1)
    model = build_base(root, len(gpt2_tokenizer), "config")
    assert same(model.visual_encoder, vit)
    encoder_weight = "encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(
        model.text_encoder.state_dict()[encoder_weight],
        blip.text_encoder.state_dict()[encoder_weight],
    )
    assert model.text_encoder.embeddings.word_embeddings.num_embeddings == len(gpt2_tokenizer)
    pixels = torch.rand(2, 3, 32, 32)
    ids = torch.randint(0, len(gpt2_tokenizer), (2, 30))
    assert model.eval()(pixels, ids, torch.ones_like(ids)).shape == (2, 18)


def test_base_checkpoint_needs_no_pretrained_folders(pitvqa_folders, gpt2_tokenizer, tmp_path):
    root, *_ = pitvqa_folders
    model = build_base(root, len(gpt2_tokenizer), "pretrained").eval()
    save_checkpoint(tmp_path / "ckpt", model, gpt2_tokenizer)
    saved = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert saved["config"]["text_config"]["vocab_size"] == len(gpt2_tokenizer)
    hidden = tmp_path / "moved"
    root.rename(hidden)  # the pretrained folders are gone: the checkpoint must suffice
    try:
        loaded, tokenizer = load_checkpoint(tmp_path / "ckpt")
    finally:
        hidden.rename(root)
    pixels = torch.rand(2, 3, 32, 32)
    ids = torch.randint(0, len(gpt2_tokenizer), (2, 30))
    with torch.no_grad():
        assert torch.equal(
            model(pixels, ids, torch.ones_like(ids)), loaded(pixels, ids, torch.ones_like(ids))
        )
    assert len(tokenizer) == len(gpt2_tokenizer)


def test_retriever_loads_clip_and_seeds_seqtransf_from_text_layers(tmp_path, clip_tokenizer):
    torch.manual_seed(2)
    clip = CLIPModel(
        CLIPConfig(
            text_config=dict(
                vocab_size=len(clip_tokenizer),
                hidden_size=WIDTH,
                intermediate_size=64,
                num_hidden_layers=4,
                num_attention_heads=2,
                max_position_embeddings=40,
                bos_token_id=0,
                eos_token_id=1,
                pad_token_id=1,
            ),
            vision_config=dict(
                image_size=32,
                patch_size=16,
                hidden_size=WIDTH,
                intermediate_size=64,
                num_hidden_layers=1,
                num_attention_heads=2,
            ),
            projection_dim=WIDTH,
        )
    )
    clip.save_pretrained(tmp_path / "clip")
    model = Retriever(
        RetrieverConfig.base(str(tmp_path / "clip"), sim_header="seqTransf", max_frames=12)
    )
    assert same(model.clip, clip)
    for i, layer in enumerate(model.temporal.layers):
        assert same(layer, clip.text_model.encoder.layers[i])
    positions = clip.text_model.embeddings.position_embedding.weight
    assert torch.equal(model.temporal.frame_position_embeddings.weight, positions[:12])
    assert model.config.image_size == 32 and model.config.embed_dim == WIDTH


def test_real_gpt2_tokenizer_folder(tmp_path, gpt2_tokenizer):
    """A GPT-2 folder has vocab.json + merges.txt and no pad token; PitVQA pads with eos."""
    folder = tmp_path / "gpt2_tok"
    folder.mkdir()
    gpt2_tokenizer.backend_tokenizer.model.save(str(folder))  # vocab.json, merges.txt
    (folder / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "GPT2Tokenizer",
                "bos_token": "<|endoftext|>",
                "eos_token": "<|endoftext|>",
                "unk_token": "<|endoftext|>",
                "model_max_length": 1024,
            }
        )
    )
    tokenizer = load_tokenizer(str(folder))
    assert tokenizer.pad_token == tokenizer.eos_token == "<|endoftext|>"
    text = "what instrument is being used"
    assert tokenizer(text)["input_ids"] == gpt2_tokenizer(text)["input_ids"]
