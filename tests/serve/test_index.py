"""The index format, the two-stage search math, and ``jobs/index.py`` on real video files."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from models import Retriever, RetrieverConfig, build_bpe_tokenizer, save_checkpoint, token_wise_topk
from models.index import IndexRows, IndexWriter, Thumbnails, load_rows, read_manifest, slice_bounds
from models.search import merge, search, trim_padding

ROOT = Path(__file__).resolve().parents[2]


def random_rows(n, first=0, frames=3, dim=8, seed=0):
    rng = np.random.default_rng(seed)
    return IndexRows([f"v{first + i}" for i in range(n)], rng.standard_normal((n, frames, dim)).astype(np.float16),
                     rng.random((n, frames)).astype(np.float32), np.ones((n, frames), np.uint8),
                     rng.standard_normal((n, dim)).astype(np.float32))


def test_writer_rolls_over_and_rows_read_back_across_shards(tmp_path):
    writer = IndexWriter(tmp_path, rows_per_shard=7, info={"checkpoint": "x"})
    parts = [random_rows(5, 0, seed=1), random_rows(9, 5, seed=2), random_rows(3, 14, seed=3)]
    for part in parts:
        writer.add(part, [f"jpeg{v}".encode() for v in part.video_ids])
    manifest = writer.close()
    assert manifest["count"] == 17 and [s["rows"] for s in manifest["shards"]] == [7, 7, 3]
    assert read_manifest(tmp_path)["checkpoint"] == "x"
    every = np.concatenate([p.frames for p in parts])
    middle = load_rows(tmp_path, 4, 15)  # spans all three storage shards
    assert middle.video_ids == [f"v{i}" for i in range(4, 15)]
    np.testing.assert_array_equal(middle.frames, every[4:15])
    thumbnails = Thumbnails(tmp_path)
    assert thumbnails.get("v16") == b"jpegv16" and thumbnails.get("../manifest.json") is None


def test_slices_cover_the_index_once():
    for count, n in ((10, 3), (2, 4), (100_000, 7)):
        bounds = slice_bounds(count, n)
        assert bounds[0][0] == 0 and bounds[-1][1] == count
        assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))


def test_trimming_the_padding_keeps_every_score():
    torch.manual_seed(0)
    text = torch.nn.functional.normalize(torch.randn(2, 10, 16), dim=-1)
    weight = torch.softmax(torch.randn(2, 10), dim=-1)
    text[:, 6:], weight[:, 6:] = 0, 0
    weight = weight / weight.sum(-1, keepdim=True)
    frames = torch.nn.functional.normalize(torch.randn(50, 4, 16), dim=-1)
    frame_weight = torch.softmax(torch.randn(50, 4), dim=-1)
    short, short_weight = trim_padding(text, weight)
    assert short.shape[1] == 7
    full = token_wise_topk(text, weight, frames, frame_weight, 50)
    trimmed = token_wise_topk(short, short_weight, frames, frame_weight, 50)
    torch.testing.assert_close(full[0], trimmed[0], atol=1e-6, rtol=0)


def test_two_stage_with_every_candidate_is_exhaustive_and_merge_is_global():
    torch.manual_seed(1)
    text = torch.nn.functional.normalize(torch.randn(3, 5, 8), dim=-1)
    weight = torch.softmax(torch.randn(3, 5), dim=-1)
    frames = torch.nn.functional.normalize(torch.randn(40, 4, 8), dim=-1)
    frame_weight = torch.softmax(torch.randn(40, 4), dim=-1)
    pooled_t, pooled_v = torch.randn(3, 8), torch.randn(40, 8)
    exact = search(text, weight, pooled_t, frames, frame_weight, pooled_v, 5, exact=True)
    every = search(text, weight, pooled_t, frames, frame_weight, pooled_v, 5, candidates=39)
    torch.testing.assert_close(exact[0], every[0])
    assert torch.equal(exact[1], every[1])
    halves = [search(text[:1], weight[:1], pooled_t[:1], frames[lo:hi], frame_weight[lo:hi], pooled_v[lo:hi], 5,
                     exact=True) for lo, hi in ((0, 20), (20, 40))]
    merged = merge([[(int(r) + lo, float(s)) for s, r in zip(h[0][0], h[1][0])] for h, lo in zip(halves, (0, 20))], 5)
    assert [r for r, _ in merged] == exact[1][0].tolist()


@pytest.mark.slow
def test_index_job_on_real_videos(ray_local, synthetic_msrvtt, clip_tokenizer, tmp_path):
    torch.manual_seed(0)
    checkpoint = save_checkpoint(tmp_path / "checkpoint", Retriever(RetrieverConfig.tiny(
        vocab_size=len(clip_tokenizer), max_frames=4)), clip_tokenizer)
    videos = synthetic_msrvtt / "videos"
    (videos / "broken.mp4").write_bytes(b"not a video")
    from jobs import index

    try:
        assert index.main(["--checkpoint", str(checkpoint), "--features_path", str(videos),
                           "--rows_per_shard", "7"]) == 0
    finally:
        (videos / "broken.mp4").unlink()
    manifest = read_manifest(tmp_path / "index")
    assert manifest["count"] == 18 and manifest["max_frames"] == 4 and manifest["dim"] == 64
    assert [s["rows"] for s in manifest["shards"]] == [7, 7, 4]
    assert len(manifest["checkpoint_sha256"]) == 64
    assert "broken.mp4" in (tmp_path / "index" / "skipped.jsonl").read_text()
    rows = load_rows(tmp_path / "index", 0, 18)
    assert sorted(rows.video_ids) == sorted(f"video{i}" for i in range(18))
    np.testing.assert_allclose(np.linalg.norm(rows.frames.astype(np.float32), axis=-1), 1, atol=2e-3)
    np.testing.assert_allclose(rows.weights.sum(-1), 1, atol=1e-5)


def test_index_job_bad_input_is_one_line_and_exit_2(tmp_path):
    for argv, message in ((["--checkpoint", str(tmp_path / "none")], "no config.json"),
                          (["--rows_per_shard", "0"], "must be at least 1")):
        done = subprocess.run([sys.executable, "jobs/index.py", *argv], cwd=ROOT, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr


def test_importing_serve_starts_nothing_and_the_config_is_valid():
    code = ("import ray, serve; app = serve.app; from ray.serve import Application; "
            "assert isinstance(app, Application); assert not ray.is_initialized(); print('ok')")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "ok", done.stderr[-2000:]
    from ray.serve.schema import ServeDeploySchema

    from serve import AppArgs

    config = ServeDeploySchema(**yaml.safe_load((ROOT / "serve" / "config.yaml").read_text()))
    AppArgs(**config.applications[0].args)
    with pytest.raises(ValueError):
        AppArgs(num_shards=0)


def test_a_shards_health_check_runs_a_real_query_and_can_fail(rendered_index):
    """The shard's class outside Serve: healthy on its slice, unhealthy once its frames are
    no longer the ones it answered from at start-up."""
    import torch

    from serve.replicas import IndexShard

    threads = torch.get_num_threads()  # a CPU replica sets one thread for its process
    try:
        shard = IndexShard.func_or_class(str(rendered_index), 0, 2, candidates=96)
        assert shard.rows == 300
        shard.check_health()
        shard.frames[:, :, :] = shard.frames.flip(0)  # the slice's memory corrupted
        with pytest.raises(RuntimeError, match="probe query"):
            shard.check_health()
    finally:
        torch.set_num_threads(threads)
