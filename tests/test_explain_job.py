"""jobs/explain.py: the picture of one WTI score, from a checkpoint folder and a video file."""

import re

import pytest
import torch

from jobs import explain
from models import Retriever, RetrieverConfig, save_checkpoint, token_wise_scores
from models.encode import encode_texts, encode_videos


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, clip_tokenizer):
    torch.manual_seed(0)
    config = RetrieverConfig.tiny(vocab_size=len(clip_tokenizer), max_frames=4)
    folder = tmp_path_factory.mktemp("explain") / "checkpoint"
    save_checkpoint(folder, Retriever(config).eval(), clip_tokenizer)
    return folder


def test_writes_the_picture_and_its_score_is_the_exact_one(
    checkpoint, synthetic_msrvtt, tmp_path, capsys
):
    from ingest.datasets import normalize_clips
    from ingest.video import ClipSpec, decode_clip
    from models import load_checkpoint

    video = synthetic_msrvtt / "videos" / "video0.mp4"
    text = "a red circle moves to the left"
    output = tmp_path / "wti.png"
    argv = ["--checkpoint", str(checkpoint), "--video", str(video), "--text", text]
    assert explain.main([*argv, "--output", str(output)]) == 0
    assert output.stat().st_size > 10_000
    printed = capsys.readouterr().out
    score, t2v, v2t = (float(x) for x in re.findall(r"-?\d+\.\d{4}", printed)[:3])
    assert abs((t2v + v2t) / 2 - score) < 1e-4  # the parts, as printed (4 decimals)
    # The score the index and evaluation give this pair, computed here the long way.
    model, tokenizer = load_checkpoint(checkpoint)
    frames, mask = decode_clip(video, ClipSpec(1.0, 4, 2, 64))
    pixels = normalize_clips({"frames": frames[None]})["pixel_values"]
    v = encode_videos(model, pixels, mask[None])
    t = encode_texts(model, tokenizer, [text])
    exact = token_wise_scores(t.features, t.weights, v.features, v.weights)[0, 0].item()
    assert abs(exact - score) < 1e-4


@pytest.mark.parametrize(
    "problem, message",
    [("video", "cannot open"), ("text", "--text is blank"), ("checkpoint", "--checkpoint")],
)
def test_bad_input_is_one_line_and_exit_2(checkpoint, tmp_path, capsys, problem, message):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all")
    good = {"video": str(bad), "text": "a red circle", "checkpoint": str(checkpoint)}
    good[problem] = {"video": str(bad), "text": "  ", "checkpoint": str(tmp_path)}[problem]
    if problem != "video":
        good["video"] = str(bad)  # never reached: the flag checked first fails
    with pytest.raises(SystemExit) as exit_info:
        code = explain.main([f"--{k}={v}" for k, v in good.items()])
        raise SystemExit(code)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
