"""``jobs/index.py`` on real video files: a build, and what a bad change answers."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import random_rows, written

from models import Retriever, RetrieverConfig, save_checkpoint
from retrieval.store import load_index, read_manifest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_index_job_on_real_videos(ray_local, synthetic_msrvtt, clip_tokenizer, tmp_path):
    torch.manual_seed(0)
    checkpoint = save_checkpoint(
        tmp_path / "checkpoint",
        Retriever(RetrieverConfig.tiny(vocab_size=len(clip_tokenizer), max_frames=4)),
        clip_tokenizer,
    )
    videos = synthetic_msrvtt / "videos"
    (videos / "broken.mp4").write_bytes(b"not a video")
    from jobs import index

    try:
        assert (
            index.main(
                [
                    "--checkpoint",
                    str(checkpoint),
                    "--features_path",
                    str(videos),
                    "--rows_per_segment",
                    "7",
                ]
            )
            == 0
        )
    finally:
        (videos / "broken.mp4").unlink()
    manifest = read_manifest(tmp_path / "index")
    assert manifest["count"] == 18 and manifest["max_frames"] == 4 and manifest["dim"] == 64
    assert [s["rows"] for s in manifest["segments"]] == [7, 7, 4]
    assert len(manifest["checkpoint_sha256"]) == 64
    assert "broken.mp4" in (tmp_path / "index" / "skipped.jsonl").read_text()
    rows = load_index(tmp_path / "index")
    assert sorted(rows.video_ids) == sorted(f"video{i}" for i in range(18))
    np.testing.assert_allclose(
        np.linalg.norm(rows.frames.astype(np.float32), axis=-1), 1, atol=2e-3
    )
    np.testing.assert_allclose(rows.weights.sum(-1), 1, atol=1e-5)


def test_index_job_bad_input_is_one_line_and_exit_2(tmp_path):
    for argv, message in (
        (["--checkpoint", str(tmp_path / "none")], "no config.json"),
        (["--rows_per_shard", "0"], "must be at least 1"),
    ):
        done = subprocess.run(
            [sys.executable, "jobs/index.py", *argv],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr


def test_append_with_another_checkpoint_and_bad_removals_are_one_line_and_exit_2(
    clip_tokenizer, tmp_path, capsys
):
    from jobs import index

    torch.manual_seed(0)
    checkpoint = save_checkpoint(
        tmp_path / "checkpoint",
        Retriever(RetrieverConfig.tiny(vocab_size=len(clip_tokenizer), max_frames=4)),
        clip_tokenizer,
    )
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "new.mp4").write_bytes(b"")
    folder = tmp_path / "index"
    written(folder, [random_rows(4)])  # built with another model ("checkpoint_sha256" absent)
    cases = [
        (
            [
                "--checkpoint",
                str(checkpoint),
                "--features_path",
                str(videos),
                "--output_dir",
                str(folder),
                "--append",
            ],
            "was built with a checkpoint of sha256",
        ),
        (
            [
                "--checkpoint",
                str(checkpoint),
                "--features_path",
                str(videos),
                "--output_dir",
                str(tmp_path / "none"),
                "--append",
            ],
            "no index at",
        ),
        (["--output_dir", str(folder), "--remove", "nope"], "holds none of nope"),
        (["--output_dir", str(tmp_path / "none"), "--remove", "v1"], "not a finished index"),
        (["--output_dir", str(folder), "--remove", "v1", "--append"], "one change at a time"),
    ]
    for argv, message in cases:
        assert index.main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
    assert read_manifest(folder)["version"] == 1  # nothing changed
