"""jobs/evaluate.py on a dataset in the real MSR-VTT layout that grows between two runs."""

import csv
import json
import shutil

import pytest

from jobs import evaluate

pytestmark = pytest.mark.slow  # two whole evaluation jobs


def _checkpoint(folder, corpus):
    """A tiny random-init retriever saved as a checkpoint folder, as training leaves one."""
    import torch

    from models import Retriever, RetrieverConfig, build_bpe_tokenizer, save_checkpoint

    torch.manual_seed(0)
    tokenizer = build_bpe_tokenizer(corpus, vocab_size=300, style="clip")
    model = Retriever(
        RetrieverConfig.tiny(vocab_size=len(tokenizer), image_size=32, max_words=16, max_frames=4)
    )
    return save_checkpoint(folder, model, tokenizer)


def test_a_video_added_to_the_dataset_is_decoded_alone_and_evaluated(
    ray_local, synthetic_msrvtt, tmp_path, capsys
):
    data = tmp_path / "msrvtt"
    shutil.copytree(synthetic_msrvtt, data)
    test_csv = data / "MSRVTT_JSFUSION_test.csv"
    rows = list(csv.DictReader(test_csv.open()))
    checkpoint = _checkpoint(tmp_path / "checkpoint", [r["sentence"] for r in rows] * 10)
    out = tmp_path / "eval"
    argv = [
        "--checkpoint",
        str(checkpoint),
        "--train_csv",
        str(data / "MSRVTT_train.9k.csv"),
        "--val_csv",
        str(test_csv),
        "--data_path",
        str(data / "MSRVTT_data.json"),
        "--features_path",
        str(data / "videos"),
        "--output_dir",
        str(out),
    ]
    assert evaluate.main(argv) == 0
    first = capsys.readouterr().out
    assert f"reused 0 decoded clips, decoded {len(rows)} new or changed videos" in first
    assert json.loads((out / "metrics.json").read_text())["num_videos"] == len(rows)

    # A new video and its caption, as a user adds them; the same --output_dir.
    shutil.copy(data / "videos" / "video0.mp4", data / "videos" / "video_new.mp4")
    with test_csv.open("a", newline="") as f:
        csv.writer(f).writerow(["ret_new", "msr_new", "video_new", "a red square moves up"])
    assert evaluate.main(argv) == 0
    second = capsys.readouterr().out
    assert f"reused {len(rows)} decoded clips, decoded 1 new or changed videos" in second
    metrics = json.loads((out / "metrics.json").read_text())
    assert (
        metrics["num_videos"] == metrics["num_texts"] == len(rows) + 1
    )  # the new video is evaluated
