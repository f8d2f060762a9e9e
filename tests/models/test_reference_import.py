"""The references' files in, exactly: OpenAI CLIP archives (checked against open_clip), the
CLIP BPE vocabulary, DRL / CLIP4Clip state dicts and PitVQA's pickled model object.

Each reference side is computed the way the reference repositories compute it (OpenAI-layout
modules from open_clip, CLIP4Clip's seqTransf with ``nn.MultiheadAttention`` and its -1e6
mask, DRL's einsum WTI), from the very weights that were written to the file.
"""

import contextlib
import functools
import io
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import save_torchscript, tiny_openai_clip
from open_clip_ref import open_clip
from torch import nn

from models import load_checkpoint, load_tokenizer, safe_load, tokenize
from models.openai_clip import load_clip_file

ROOT = Path(__file__).resolve().parents[2]
TEXTS = [
    "a red circle moves to the left",
    "Two DOGS, playing!  in   the park's grass",
    "x-ray 123 café",
]


def run_import(*args, cli: bool = False) -> subprocess.CompletedProcess:
    """``jobs/import_checkpoint.py ARGS``: as its own process with ``cli=True`` (what a user
    runs, a few seconds of imports), else its ``main`` in this process with the same exit
    code and output; an exception escapes and fails the test (the CLI would print a traceback)."""
    args = [str(a) for a in args]
    if cli:
        return subprocess.run(
            [sys.executable, "jobs/import_checkpoint.py", *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
    from jobs import import_checkpoint

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = import_checkpoint.main(args)
        except SystemExit as exit_:  # argparse
            code = exit_.code
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


@pytest.fixture(scope="module")
def oc():
    return open_clip()


@pytest.fixture(scope="module")
def bpe_path(oc):
    from open_clip.tokenizer import default_bpe

    return default_bpe()


def reference_text_tokens(clip, ids):
    """Every token's projected state, as CLIP4Clip / DRL's ``encode_text(return_hidden=True)``."""
    L = ids.shape[1]
    x = clip.token_embedding(ids) + clip.positional_embedding[:L]
    x = clip.ln_final(clip.transformer(x, attn_mask=clip.attn_mask[:L, :L]))
    return x @ clip.text_projection  # (A, L, D)


def reference_ids(bpe_tokenizer, texts, max_words=32):
    """CLIP4Clip's ids: [start] + words[:max_words - 2] + [end], padded with 0."""
    rows = []
    for text in texts:
        ids = [49406] + bpe_tokenizer.encode(text)[: max_words - 2] + [49407]
        rows.append(ids + [0] * (max_words - len(ids)))
    return torch.tensor(rows)


# --- OpenAI CLIP archives and the BPE vocabulary -----------------------------------------


@pytest.mark.parametrize("layout", ["torchscript", "state_dict_fp32", "state_dict_fp16"])
def test_openai_clip_file_computes_open_clips_features(oc, tmp_path, layout):
    clip = tiny_openai_clip()
    path = tmp_path / "ViT-tiny.pt"
    if layout == "torchscript":
        save_torchscript(clip, path)
    elif layout == "state_dict_fp32":
        torch.save(clip.state_dict(), path)
    else:  # as OpenAI ships it: fp16; open_clip then computes with the rounded weights in fp32
        half = {k: v.half() for k, v in clip.state_dict().items()}
        torch.save(half, path)
        clip.load_state_dict({k: v.float() for k, v in half.items()})
    converted = load_clip_file(path).eval()
    ids = oc.get_tokenizer("ViT-B-32")(TEXTS, context_length=77)
    images = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours_text = converted.text_projection(
            converted.text_model(input_ids=ids, attention_mask=(ids != 0).long()).last_hidden_state
        )[torch.arange(3), ids.argmax(-1)]
        ours_image = converted.visual_projection(
            converted.vision_model(pixel_values=images).pooler_output
        )
        theirs_text, theirs_image = clip.encode_text(ids), clip.encode_image(images)
    text_diff = (ours_text - theirs_text).abs().max().item()
    image_diff = (ours_image - theirs_image).abs().max().item()
    print(f"{layout}: text {text_diff:.2e}, image {image_diff:.2e}")
    assert text_diff < 1e-5 and image_diff < 1e-5
    assert converted.logit_scale.item() == pytest.approx(clip.logit_scale.item(), abs=1e-3)


def test_bpe_file_tokenizes_as_the_references_simple_tokenizer(oc, bpe_path):
    from open_clip.tokenizer import SimpleTokenizer

    tokenizer = load_tokenizer(bpe_path)
    assert len(tokenizer) == 49408
    assert tokenizer.convert_tokens_to_ids(["<|startoftext|>", "<|endoftext|>"]) == [49406, 49407]
    texts = TEXTS + ["a " * 40, "what's THE man doing?"]
    ours = tokenize(tokenizer, texts, 32)
    reference = reference_ids(SimpleTokenizer(bpe_path), texts)
    real = ours["attention_mask"].bool()
    assert torch.equal(real, reference != 0)
    assert torch.equal(ours["input_ids"][real], reference[real])


# --- DRL and CLIP4Clip state dicts -------------------------------------------------------


class ReferenceRetriever(nn.Module):
    """DRL's modules, under its key names, computing as its code does."""

    def __init__(
        self, clip, sim_header="seqTransf", interaction="wti", wti_arch=2, seed=1, linear_patch="2d"
    ):
        super().__init__()
        from open_clip.transformer import LayerNorm, QuickGELU, Transformer

        torch.manual_seed(seed)
        self.clip, self.sim_header, self.interaction = clip, sim_header, interaction
        self.linear_patch = linear_patch
        if linear_patch == "3d":  # CLIP4Clip's VisualTransformer.conv2, beside conv1
            conv1 = clip.visual.conv1
            clip.visual.conv2 = nn.Conv3d(
                3,
                conv1.out_channels,
                (3, *conv1.kernel_size),
                stride=(1, *conv1.stride),
                padding=(1, 0, 0),
                bias=False,
            )
        width = clip.text_projection.shape[1]
        if sim_header == "seqTransf":
            self.frame_position_embeddings = nn.Embedding(77, width)
            self.transformerClip = Transformer(
                width,
                4,
                width // 64,
                act_layer=QuickGELU,
                norm_layer=functools.partial(LayerNorm, eps=1e-12),
            )
        if interaction == "wti":

            def head():
                if wti_arch == 1:
                    return nn.Linear(width, 1)
                hidden = [
                    m
                    for _ in range(wti_arch - 1)
                    for m in (nn.Linear(width, width), nn.ReLU(inplace=True))
                ]
                return nn.Sequential(*hidden, nn.Linear(width, 1))

            self.text_weight_fc, self.video_weight_fc = head(), head()
        with torch.no_grad():  # trained-looking, not the init
            for name, param in self.named_parameters():
                if not name.startswith("clip."):
                    param.add_(0.05 * torch.randn_like(param))

    def encode_frames(self, pixels):
        """``[V, F, 3, H, W]`` -> ``[V, F, D]``. With 3d patches, CLIP4Clip's
        ``VisualTransformer.forward(x, video_frame)`` (conv2 over the frames, then the rest of
        CLIP), one video at a time (CLIP4Clip with a batch of one video)."""
        V, num_frames = pixels.shape[:2]
        if self.linear_patch == "2d":
            return self.clip.encode_image(pixels.flatten(0, 1)).view(V, num_frames, -1)
        visual, conv1 = self.clip.visual, self.clip.visual.conv1
        out = []
        try:
            for video in pixels:
                x_3d = visual.conv2(video.unsqueeze(0).permute(0, 2, 1, 3, 4))
                x_3d = x_3d.permute(0, 2, 1, 3, 4)  # (1, frames, width, grid, grid)
                patches = x_3d.reshape(-1, *x_3d.shape[-3:])
                visual._modules["conv1"] = Fixed(patches)  # CLIP4Clip's x = conv2(...) line
                out.append(self.clip.encode_image(video))
        finally:
            visual._modules["conv1"] = conv1
        return torch.stack(out)

    def video(self, pixels, video_mask):
        V, num_frames = video_mask.shape
        frames = self.encode_frames(pixels)
        if self.sim_header != "seqTransf":
            return frames
        x = frames + self.frame_position_embeddings(torch.arange(num_frames))
        mask = ((1.0 - video_mask.unsqueeze(1).float()) * -1000000.0).expand(-1, num_frames, -1)
        x = self.transformerClip(
            x, attn_mask=mask.repeat_interleave(self.transformerClip.resblocks[0].attn.num_heads, 0)
        )
        return x + frames

    def scores(self, ids, text_mask, pixels, video_mask):
        text_feat = reference_text_tokens(self.clip, ids)
        video_feat = self.video(pixels, video_mask)
        text_mask, video_mask = text_mask.float(), video_mask.float()
        if self.interaction == "dp":  # CLIP4Clip's meanP similarity
            sequence = F.normalize(text_feat[torch.arange(len(ids)), ids.argmax(-1)], dim=-1)
            visual = F.normalize(video_feat, dim=-1) * video_mask.unsqueeze(-1)
            visual = F.normalize(visual.sum(1) / video_mask.sum(1, keepdim=True), dim=-1)
            return sequence @ visual.T
        if self.interaction == "wti":
            text_weight = self.text_weight_fc(text_feat).squeeze(2)
            text_weight = torch.softmax(
                text_weight.masked_fill((1 - text_mask).bool(), float("-inf")), dim=-1
            )
            video_weight = self.video_weight_fc(video_feat).squeeze(2)
            video_weight = torch.softmax(
                video_weight.masked_fill((1 - video_mask).bool(), float("-inf")), dim=-1
            )
        text_feat = text_feat / text_feat.norm(dim=-1, keepdim=True)
        video_feat = video_feat / video_feat.norm(dim=-1, keepdim=True)
        logits = torch.einsum("atd,bvd->abtv", [text_feat, video_feat])
        logits = torch.einsum("abtv,at->abtv", [logits, text_mask])
        logits = torch.einsum("abtv,bv->abtv", [logits, video_mask])
        t2v, _ = logits.max(dim=-1)
        v2t, _ = logits.max(dim=-2)
        if self.interaction == "ti":
            t2v = t2v.sum(2) / text_mask.sum(-1).unsqueeze(1)
            v2t = v2t.sum(2) / video_mask.sum(-1).unsqueeze(0)
        else:
            t2v = torch.einsum("abt,at->ab", [t2v, text_weight])
            v2t = torch.einsum("abv,bv->ab", [v2t, video_weight])
        return (t2v + v2t) / 2.0


class Fixed(nn.Module):
    """A module that returns the tensor it was given, whatever its input."""

    def __init__(self, value):
        super().__init__()
        self.value = value

    def forward(self, x):
        return self.value


def save_reference(model: nn.Module, path: Path) -> None:
    """As the references save: ``model.state_dict()`` with CLIP largely fp16 (CLIP4Clip's
    ``convert_weights``); the reference model then computes with the rounded values."""
    state = {
        k: (v.half() if k.startswith("clip.") and v.is_floating_point() and "ln" not in k else v)
        for k, v in model.state_dict().items()
        if not k.endswith("attn_mask")
    }
    torch.save(state, path)
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)


def retrieval_inputs(bpe_path):
    from open_clip.tokenizer import SimpleTokenizer

    ids = reference_ids(SimpleTokenizer(bpe_path), TEXTS)
    generator = torch.Generator().manual_seed(2)
    pixels = torch.randn(4, 6, 3, 64, 64, generator=generator)
    video_mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2, [1] * 2 + [0] * 4, [1] * 5 + [0]])
    return ids, pixels, video_mask


SLOW = pytest.mark.slow  # the fast tier keeps one case of each reference


@pytest.mark.parametrize(
    "kind,sim_header,interaction,wti_arch,linear_patch",
    [
        ("drl", "seqTransf", "wti", 2, "2d"),
        pytest.param("drl", "meanP", "wti", 3, "2d", marks=SLOW),
        pytest.param("drl", "seqTransf", "ti", 2, "2d", marks=SLOW),
        ("clip4clip", "seqTransf", "dp", 2, "2d"),
        pytest.param("clip4clip", "meanP", "dp", 2, "2d", marks=SLOW),
        # CLIP4Clip's Conv3d (clip.visual.conv2), one video at a time as CLIP4Clip computes one
        ("clip4clip", "meanP", "dp", 2, "3d"),
    ],
)
def test_reference_state_dict_imports_exactly(
    oc, bpe_path, tmp_path, kind, sim_header, interaction, wti_arch, linear_patch
):
    reference = ReferenceRetriever(
        tiny_openai_clip(), sim_header, interaction, wti_arch, linear_patch=linear_patch
    ).eval()
    save_reference(reference, tmp_path / "pytorch_model.bin.4")
    result = run_import(
        kind,
        tmp_path / "pytorch_model.bin.4",
        "--output_dir",
        tmp_path / "ck",
        "--tokenizer_path",
        bpe_path,
        "--max_frames",
        6,
        cli=(kind, sim_header, interaction) == ("drl", "seqTransf", "wti"),
    )  # one case as a user runs it
    assert result.returncode == 0, result.stderr
    model, tokenizer = load_checkpoint(tmp_path / "ck")
    assert (model.config.sim_header, model.config.interaction) == (sim_header, interaction)
    assert model.config.linear_patch == linear_patch
    ids, pixels, video_mask = retrieval_inputs(bpe_path)
    tokens = tokenize(tokenizer, TEXTS, 32)
    with torch.no_grad():
        expected = reference.scores(ids, (ids != 0).long(), pixels, video_mask)
        text, text_mask = model.encode_text(tokens["input_ids"], tokens["attention_mask"])
        video, video_mask_out = model.encode_video(pixels, video_mask)
        got = model.similarity(text, video, text_mask, video_mask_out)
        # The file's 3d embedding is not CLIP's 2d one: the test tells the two apart.
        flat = reference.clip.encode_image(pixels.flatten(0, 1)).view(*pixels.shape[:2], -1)
    diff = (got - expected).abs().max().item()
    print(f"{kind} {sim_header} {interaction} {linear_patch}: max |score difference| {diff:.2e}")
    assert diff < 1e-5
    if linear_patch == "3d":
        assert (flat - reference.encode_frames(pixels)).abs().max() > 1e-3
    if interaction == "ti":  # DRL builds no weight heads for ti, and neither do we
        assert not any("weight_fc" in k for k in model.state_dict())


@pytest.mark.slow
def test_unrepresentable_reference_files_are_refused_whole(oc, bpe_path, tmp_path):
    reference = ReferenceRetriever(tiny_openai_clip(), "meanP", "dp")
    state = reference.state_dict()
    state["similarity_dense.weight"] = torch.zeros(1, 128)  # CLIP4Clip's tightTransf
    torch.save(state, tmp_path / "tight.bin")
    result = run_import(
        "clip4clip",
        tmp_path / "tight.bin",
        "--output_dir",
        tmp_path / "ck",
        "--tokenizer_path",
        bpe_path,
    )
    assert result.returncode == 2
    assert "similarity_dense.weight" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "ck").exists() and not list(tmp_path.glob(".ck.*"))
    state.pop("similarity_dense.weight")
    state["clip.some_new_thing"] = torch.zeros(2)
    torch.save(state, tmp_path / "odd.bin")
    result = run_import(
        "drl", tmp_path / "odd.bin", "--output_dir", tmp_path / "ck", "--tokenizer_path", bpe_path
    )
    assert result.returncode == 2 and "some_new_thing" in result.stderr
    result = run_import(
        "drl",
        tmp_path / "odd.bin",
        "--output_dir",
        tmp_path / "ck",
        "--tokenizer_path",
        bpe_path,
        "--interaction",
        "xti",
    )
    assert result.returncode == 2 and "xti" in result.stderr


# --- PitVQA's pickled model object ------------------------------------------------------


def reference_pitvqa_module(gpt2_tokenizer):
    """A module named ``model`` with PitVQA's ``PitVQANet``: its attribute names, a ViT built
    with its pooler, ``LayerNorm`` that is a BatchNorm1d, and its forward."""
    from transformers import (
        BlipTextConfig,
        BlipTextModel,
        GPT2Config,
        GPT2Model,
        ViTConfig,
        ViTModel,
    )

    module = types.ModuleType("model")

    class PitVQANet(nn.Module):
        def __init__(self, num_class=18):
            super().__init__()
            self.visual_encoder = ViTModel(
                ViTConfig(
                    image_size=64,
                    patch_size=16,
                    hidden_size=64,
                    num_hidden_layers=2,
                    num_attention_heads=2,
                    intermediate_size=128,
                )
            )
            self.tokenizer = gpt2_tokenizer
            self.text_encoder = BlipTextModel(
                BlipTextConfig(
                    vocab_size=500,
                    hidden_size=64,
                    encoder_hidden_size=64,
                    num_hidden_layers=2,
                    num_attention_heads=2,
                    intermediate_size=128,
                    max_position_embeddings=64,
                ),
                add_pooling_layer=False,
            )
            new = nn.Embedding(len(gpt2_tokenizer), 64)
            new.weight.data[:300] = self.text_encoder.embeddings.word_embeddings.weight.data[:300]
            self.text_encoder.embeddings.word_embeddings = new
            self.gpt_decoder = GPT2Model(
                GPT2Config(
                    vocab_size=len(gpt2_tokenizer), n_embd=64, n_layer=2, n_head=2, n_positions=64
                )
            )
            self.intermediate_layer = nn.Linear(64, 512)
            self.se_layer = nn.Sequential(nn.Linear(512, 512), nn.Sigmoid())
            self.LayerNorm = nn.BatchNorm1d(512)
            self.dropout = nn.Dropout(0.1)
            self.classifier = nn.Linear(512, num_class)

        def forward(self, image, question_inputs):
            image_embeds = self.visual_encoder(image).last_hidden_state
            image_atts = torch.ones(image_embeds.size()[:-1], dtype=torch.long)
            text_embeds = self.text_encoder(
                input_ids=question_inputs["input_ids"],
                attention_mask=question_inputs["attention_mask"],
                encoder_hidden_states=image_embeds,
                encoder_attention_mask=image_atts,
                return_dict=True,
            ).last_hidden_state
            decoder_output = self.gpt_decoder(inputs_embeds=text_embeds).last_hidden_state
            decoder_output = F.adaptive_avg_pool1d(decoder_output.swapaxes(1, 2), 1).squeeze(-1)
            out = self.intermediate_layer(decoder_output)
            out = torch.mul(out, self.se_layer(out))
            out = self.dropout(self.LayerNorm(out))
            return self.classifier(out)

    PitVQANet.__module__, PitVQANet.__qualname__ = "model", "PitVQANet"
    module.PitVQANet = PitVQANet
    return module


def test_pickled_pitvqa_imports_exactly_without_its_classes(gpt2_tokenizer, tmp_path, monkeypatch):
    import argparse

    module = reference_pitvqa_module(gpt2_tokenizer)
    monkeypatch.setitem(sys.modules, "model", module)
    torch.manual_seed(0)
    reference = module.PitVQANet(num_class=18)
    with torch.no_grad():  # BatchNorm statistics as after training
        reference.LayerNorm.running_mean.normal_()
        reference.LayerNorm.running_var.uniform_(0.5, 2)
    reference.eval()
    optimizer = torch.optim.Adam(reference.parameters(), lr=2e-5)
    path = tmp_path / "pitvqa_endo18_weights.pth.tar"
    torch.save(
        {
            "epoch": 3,
            "epochs_since_improvement": 0,
            "Acc": 0.5,
            "model": reference,
            "optimizer": optimizer,
            "final_args": argparse.Namespace(dataset="endo18", lr=2e-5),
        },
        path,
    )
    images = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    questions = [
        "what instrument is being used",
        "where is the suction located",
        "what is the surgical phase",
    ]
    inputs = tokenize(gpt2_tokenizer, questions, 30)
    with torch.no_grad():
        expected = reference(images, inputs)
    monkeypatch.delitem(sys.modules, "model")  # the importer never has PitVQA's code

    result = run_import("pitvqa", path, "--output_dir", tmp_path / "ck", "--dataset", "endo18")
    assert result.returncode == 0, result.stderr
    model, tokenizer = load_checkpoint(tmp_path / "ck")
    assert model.config.num_classes == 18 and model.config.dropout == 0.1
    tokens = tokenize(tokenizer, questions, 30)
    assert torch.equal(
        tokens["input_ids"], inputs["input_ids"]
    )  # the pickled tokenizer, rebuilt from its data
    with torch.no_grad():
        got = model(images, tokens["input_ids"], tokens["attention_mask"])
    assert (got - expected).abs().max().item() < 1e-5

    result = run_import("pitvqa", path, "--output_dir", tmp_path / "ck59", "--dataset", "pit24")
    assert result.returncode == 2 and "18 classes" in result.stderr


class RunsCode:
    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return self.func, (self.arg,)


@pytest.mark.parametrize(
    "func",
    [os.system, pytest.param(eval, marks=SLOW), pytest.param(subprocess.getoutput, marks=SLOW)],
)
def test_a_pickle_that_would_run_code_is_refused_unrun(tmp_path, func):
    marker = tmp_path / "ran"
    payload = f"touch {marker}" if func is not eval else f"open({str(marker)!r}, 'w')"
    torch.save({"epoch": 1, "model": RunsCode(func, payload)}, tmp_path / "evil.pth.tar")
    # As a user runs it (its own process) once; the payload would run in this process too.
    result = run_import(
        "pitvqa", tmp_path / "evil.pth.tar", "--output_dir", tmp_path / "ck", cli=func is os.system
    )
    assert result.returncode == 2, result.stderr
    assert "refused" in result.stderr and "Traceback" not in result.stderr
    assert not marker.exists() and not (tmp_path / "ck").exists()
    with pytest.raises(safe_load.UnsafeFile):
        safe_load.load(tmp_path / "evil.pth.tar")
    if func is os.system:  # the same file through an open unpickler runs: the payload is real
        torch.load(tmp_path / "evil.pth.tar", weights_only=False)
        assert marker.exists()
