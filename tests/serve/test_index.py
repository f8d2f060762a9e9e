"""The index format, the two-stage search math, and ``jobs/index.py`` on real video files."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from models import Retriever, RetrieverConfig, save_checkpoint, token_wise_topk
from models.index import (
    IndexReader,
    IndexRows,
    IndexWriter,
    Thumbnails,
    load_index,
    nearest_centroid,
    num_lists,
    read_manifest,
    remove_videos,
    serving_parts,
    slice_bounds,
    train_centroids,
)
from models.search import InvertedLists, merge, search, search_lists, trim_padding

ROOT = Path(__file__).resolve().parents[2]


def random_rows(n, first=0, frames=3, dim=8, seed=0):
    rng = np.random.default_rng(seed)
    return IndexRows(
        [f"v{first + i}" for i in range(n)],
        rng.standard_normal((n, frames, dim)).astype(np.float16),
        rng.random((n, frames)).astype(np.float32),
        np.ones((n, frames), np.uint8),
        rng.standard_normal((n, dim)).astype(np.float32),
    )


def written(folder, parts, rows_per_shard=7, append=False):
    writer = IndexWriter(
        folder, rows_per_shard=rows_per_shard, info={"checkpoint": "x"}, append=append
    )
    for part in parts:
        writer.add(part, [f"jpeg{v}".encode() for v in part.video_ids])
    return writer.close()


def test_writer_rolls_over_and_rows_read_back_across_shards(tmp_path):
    parts = [random_rows(5, 0, seed=1), random_rows(9, 5, seed=2), random_rows(3, 14, seed=3)]
    manifest = written(tmp_path, parts)
    assert manifest["count"] == 17 and [s["rows"] for s in manifest["shards"]] == [7, 7, 3]
    assert manifest["version"] == 1 and manifest["lists"] == num_lists(17)
    assert read_manifest(tmp_path)["checkpoint"] == "x"
    rows = load_index(tmp_path)
    assert rows.video_ids == [f"v{i}" for i in range(17)]
    np.testing.assert_array_equal(rows.frames, np.concatenate([p.frames for p in parts]))
    # Each row's list is its nearest centroid.
    centroids = np.load(tmp_path / manifest["centroids"])
    np.testing.assert_array_equal(rows.lists, (rows.pooled @ centroids.T).argmax(1))
    thumbnails = Thumbnails(tmp_path)
    assert thumbnails.get("v16") == b"jpegv16" and thumbnails.get("../manifest.json") is None


def test_append_adds_and_replaces_remove_takes_out_each_a_new_version(tmp_path):
    written(tmp_path, [random_rows(10, 0, seed=1)])
    old = load_index(tmp_path)
    # v3 and v4 again (new features) and v10..v12 new.
    update = random_rows(5, 8, seed=9)
    update.video_ids = ["v3", "v4", "v10", "v11", "v12"]
    manifest = written(tmp_path, [update], append=True)
    assert manifest["version"] == 2 and manifest["count"] == 13
    rows = load_index(tmp_path)
    assert sorted(rows.video_ids) == sorted(f"v{i}" for i in range(13))  # nothing twice
    at = {v: i for i, v in enumerate(rows.video_ids)}
    np.testing.assert_array_equal(
        rows.frames[at["v3"]], update.frames[0]
    )  # the new row, not the old
    np.testing.assert_array_equal(rows.frames[at["v5"]], old.frames[5])
    assert (
        manifest["centroids"] == read_manifest(tmp_path)["centroids"]
    )  # an append keeps the lists' centroids

    manifest, missing = remove_videos(tmp_path, ["v0", "v11", "nope"])
    assert manifest["version"] == 3 and manifest["count"] == 11 and missing == ["nope"]
    assert (
        "v0" not in load_index(tmp_path).video_ids and "v11" not in load_index(tmp_path).video_ids
    )
    assert Thumbnails(tmp_path).get("v0") is None and Thumbnails(tmp_path).get("v1") == b"jpegv1"
    assert remove_videos(tmp_path, ["nope"])[0]["version"] == 3  # nothing to remove: no new version


def test_a_change_that_crashes_before_its_manifest_leaves_the_previous_version(tmp_path):
    written(tmp_path, [random_rows(10, 0, seed=1)])
    before = read_manifest(tmp_path)
    crashed = IndexWriter(tmp_path, rows_per_shard=4, append=True)
    crashed.add(random_rows(9, 100, seed=2))  # two storage shards written, then the process dies
    assert len(list(tmp_path.glob("shard_*"))) == 4
    assert read_manifest(tmp_path) == before and len(load_index(tmp_path)) == 10
    # The next change never reuses the stray shards' names, and deletes them.
    manifest = written(tmp_path, [random_rows(2, 200, seed=3)], append=True)
    assert manifest["version"] == 2 and manifest["count"] == 12
    assert sorted(p.name for p in tmp_path.glob("shard_*")) == [
        s["name"] for s in manifest["shards"]
    ]


def test_serving_shards_split_every_storage_shard_and_keep_their_rows_as_it_grows(tmp_path):
    written(tmp_path, [random_rows(20, 0, seed=1)], rows_per_shard=8)  # storage shards of 8, 8, 4
    before = [serving_parts(read_manifest(tmp_path), i, 3) for i in range(3)]
    written(tmp_path, [random_rows(5, 20, seed=2)], append=True)
    manifest = read_manifest(tmp_path)
    after = [serving_parts(manifest, i, 3) for i in range(3)]
    assert all(a[: len(b)] == b for a, b in zip(after, before))  # no shard gives up or moves a row
    sizes = [sum(hi - lo for _, lo, hi in parts) for parts in after]
    assert (
        sum(sizes) == 25 and max(sizes) - min(sizes) <= 3
    )  # balanced: each storage shard split in three
    readers = [IndexReader(tmp_path, i, 3) for i in range(3)]
    ids = [v for r in readers for v in r.rows(manifest).video_ids]
    assert sorted(ids) == sorted(f"v{i}" for i in range(25))
    # A new version reads only its new parts: the ones read before are the same objects.
    kept = dict(readers[0].parts)
    remove_videos(tmp_path, ["v0"])
    assert "v0" not in readers[0].rows(read_manifest(tmp_path)).video_ids
    assert all(readers[0].parts[key] is part for key, part in kept.items())


def random_features(seed, videos, dim=8):
    """Prepared features of 3 queries (5 tokens) and ``videos`` videos (4 frames): tokens,
    weights and pooled vectors of each side."""
    torch.manual_seed(seed)
    text = torch.nn.functional.normalize(torch.randn(3, 5, dim), dim=-1)
    weight = torch.softmax(torch.randn(3, 5), dim=-1)
    frames = torch.nn.functional.normalize(torch.randn(videos, 4, dim), dim=-1)
    frame_weight = torch.softmax(torch.randn(videos, 4), dim=-1)
    return text, weight, torch.randn(3, dim), frames, frame_weight, torch.randn(videos, dim)


def test_inverted_lists_probing_every_list_is_exhaustive_and_probing_is_by_centroid():
    text, weight, pooled_t, frames, frame_weight, pooled_v = random_features(2, 60)
    pooled_v = torch.nn.functional.normalize(pooled_v, dim=-1)
    centroids = train_centroids(pooled_v.numpy(), 6)
    order, lists = InvertedLists.build(
        nearest_centroid(pooled_v.numpy(), centroids), centroids, frames, frame_weight
    )
    exact = search(
        text, weight, pooled_t, frames[order], frame_weight[order], pooled_v[order], 5, exact=True
    )
    for every in (
        search_lists(text, weight, pooled_t, lists, 5, candidates=60),
        search_lists(text, weight, pooled_t, lists, 5, exact=True),
    ):
        torch.testing.assert_close(exact[0], every[0])
        assert torch.equal(exact[1], every[1])
    # A small budget probes the best-scoring centroid's list first, and only rows of the lists probed.
    best = int((lists.centroids @ pooled_t[0]).argmax())
    probed = lists.probe(pooled_t[0], 1)
    assert probed.tolist() == [best] or lists.offsets[best + 1] == lists.offsets[best]
    found = search_lists(text[:1], weight[:1], pooled_t[:1], lists, 3, candidates=10)
    assert set(found[1][0].tolist()) <= set(lists.rows(lists.probe(pooled_t[0], 10)).tolist())


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
    text, weight, pooled_t, frames, frame_weight, pooled_v = random_features(1, 40)
    exact = search(text, weight, pooled_t, frames, frame_weight, pooled_v, 5, exact=True)
    every = search(text, weight, pooled_t, frames, frame_weight, pooled_v, 5, candidates=39)
    torch.testing.assert_close(exact[0], every[0])
    assert torch.equal(exact[1], every[1])
    halves = [
        search(
            text[:1],
            weight[:1],
            pooled_t[:1],
            frames[lo:hi],
            frame_weight[lo:hi],
            pooled_v[lo:hi],
            5,
            exact=True,
        )
        for lo, hi in ((0, 20), (20, 40))
    ]
    merged = merge(
        [
            [(int(r) + lo, float(s)) for s, r in zip(h[0][0], h[1][0])]
            for h, lo in zip(halves, (0, 20))
        ],
        5,
    )
    assert [r for r, _ in merged] == exact[1][0].tolist()


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
                    "--rows_per_shard",
                    "7",
                ]
            )
            == 0
        )
    finally:
        (videos / "broken.mp4").unlink()
    manifest = read_manifest(tmp_path / "index")
    assert manifest["count"] == 18 and manifest["max_frames"] == 4 and manifest["dim"] == 64
    assert [s["rows"] for s in manifest["shards"]] == [7, 7, 4]
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


def test_importing_serve_starts_nothing_and_the_config_is_valid():
    code = (
        "import ray, serve; app = serve.app; from ray.serve import Application; "
        "assert isinstance(app, Application); assert not ray.is_initialized(); print('ok')"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
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
        assert shard.info()["rows"] == 300
        shard.check_health()
        view = shard.views[max(shard.views)]
        view.lists.slabs[:] = view.lists.slabs.flip(0)  # the slice's memory corrupted
        with pytest.raises(RuntimeError, match="probe query"):
            shard.check_health()
    finally:
        torch.set_num_threads(threads)
