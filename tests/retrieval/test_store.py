"""The index on disk: segments, versions, the writer's commit, the reader, thumbnails, and how
serving shards split the segments."""

import numpy as np
from helpers import random_rows, written

from retrieval.lists import num_lists
from retrieval.ranges import even_ranges
from retrieval.store import (
    IndexReader,
    IndexWriter,
    load_index,
    read_manifest,
    remove_videos,
    serving_parts,
)
from retrieval.thumbnails import Thumbnails


def test_writer_rolls_over_and_rows_read_back_across_segments(tmp_path):
    parts = [random_rows(5, 0, seed=1), random_rows(9, 5, seed=2), random_rows(3, 14, seed=3)]
    manifest = written(tmp_path, parts)
    assert manifest["count"] == 17 and [s["rows"] for s in manifest["segments"]] == [7, 7, 3]
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
    crashed = IndexWriter(tmp_path, rows_per_segment=4, append=True)
    crashed.add(random_rows(9, 100, seed=2))  # two segments written, then the process dies:
    crashed.claim.close()  # its lock on its staging folder goes with it
    assert len(list(crashed.staging.glob("part_*"))) == 2
    stray = tmp_path / "segment_007"  # and one of a commit that died before its manifest
    stray.mkdir()
    assert read_manifest(tmp_path) == before and len(load_index(tmp_path)) == 10
    # The next change never reuses a stray segment's name, and deletes the strays.
    manifest = written(tmp_path, [random_rows(2, 200, seed=3)], append=True)
    assert manifest["version"] == 2 and manifest["count"] == 12
    assert manifest["segments"][-1]["name"] == "segment_008"
    assert sorted(p.name for p in tmp_path.glob("segment_*")) == [
        s["name"] for s in manifest["segments"]
    ]
    assert not crashed.staging.exists() and not list(tmp_path.glob(".writing_*"))


def test_a_commit_never_deletes_a_running_writers_segments(tmp_path):
    """An append that has written segments and still encodes, while a removal and another
    append commit: every change lands, in the order of the commits."""
    written(tmp_path, [random_rows(10, 0, seed=1)])
    running = IndexWriter(tmp_path, rows_per_segment=4, append=True)
    running.add(random_rows(9, 100, seed=2))  # v100..v107 in two segments on disk, v108 pending
    assert remove_videos(tmp_path, ["v0", "v1"])[0]["version"] == 2
    update = random_rows(2, 5, seed=3)  # another append, replacing v5 and adding v6 anew
    update.video_ids = ["v5", "v100"]
    assert written(tmp_path, [update], append=True)["version"] == 3
    assert len(list(running.staging.glob("part_*"))) == 2  # the running writer's files are there
    manifest = running.close()
    assert manifest["version"] == 4
    rows = load_index(tmp_path)
    expected = {f"v{i}" for i in range(2, 10)} | {f"v{i}" for i in range(100, 109)}
    assert sorted(rows.video_ids) == sorted(expected)  # nothing lost, nothing twice
    assert manifest["count"] == len(expected)
    # v100 was last written by the running append (it committed last); v5 by the other one.
    at = {v: i for i, v in enumerate(rows.video_ids)}
    np.testing.assert_array_equal(rows.frames[at["v100"]], random_rows(9, 100, seed=2).frames[0])
    np.testing.assert_array_equal(rows.frames[at["v5"]], update.frames[0])
    names = [s["name"] for s in manifest["segments"]]
    assert len(names) == len(set(names)) and not list(tmp_path.glob(".writing_*"))


def test_two_builds_into_one_folder_both_land_and_the_last_commit_is_served(tmp_path):
    first = IndexWriter(tmp_path, rows_per_segment=4, info={"checkpoint": "a"})
    second = IndexWriter(tmp_path, rows_per_segment=4, info={"checkpoint": "b"})
    first.add(random_rows(6, 0, seed=1))
    second.add(random_rows(5, 50, seed=2))
    assert second.close()["version"] == 1
    manifest = first.close()
    assert manifest["version"] == 2 and manifest["checkpoint"] == "a"
    assert sorted(load_index(tmp_path).video_ids) == [f"v{i}" for i in range(6)]


def test_a_commit_that_fails_its_checks_writes_nothing(tmp_path):
    written(tmp_path, [random_rows(4, 0, seed=1)])
    before = sorted(p.name for p in tmp_path.iterdir())
    wrong = IndexWriter(tmp_path, append=True)
    wrong.add(random_rows(2, 10, frames=5, seed=2))  # 5 frames into an index of 3
    try:
        wrong.close()
        raise AssertionError("an append of another shape committed")
    except ValueError as err:
        assert "do not fit" in str(err)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert read_manifest(tmp_path)["version"] == 1


def test_serving_shards_split_every_segment_and_keep_their_rows_as_it_grows(tmp_path):
    written(tmp_path, [random_rows(20, 0, seed=1)], rows_per_segment=8)  # segments of 8, 8, 4
    before = [serving_parts(read_manifest(tmp_path), i, 3) for i in range(3)]
    written(tmp_path, [random_rows(5, 20, seed=2)], append=True)
    manifest = read_manifest(tmp_path)
    after = [serving_parts(manifest, i, 3) for i in range(3)]
    assert all(a[: len(b)] == b for a, b in zip(after, before))  # no shard gives up or moves a row
    sizes = [sum(hi - lo for _, lo, hi in parts) for parts in after]
    assert (
        sum(sizes) == 25 and max(sizes) - min(sizes) <= 3
    )  # balanced: each segment split in three
    readers = [IndexReader(tmp_path, i, 3) for i in range(3)]
    ids = [v for r in readers for v in r.rows(manifest).video_ids]
    assert sorted(ids) == sorted(f"v{i}" for i in range(25))
    # A new version reads only its new parts: the ones read before are the same objects.
    kept = dict(readers[0].parts)
    remove_videos(tmp_path, ["v0"])
    assert "v0" not in readers[0].rows(read_manifest(tmp_path)).video_ids
    assert all(readers[0].parts[key] is part for key, part in kept.items())


def test_even_ranges_cover_every_row_once_in_order_and_differ_by_at_most_one():
    for count, parts, rotate in ((10, 3, 0), (10, 3, 2), (2, 4, 1), (100_000, 7, 5), (0, 3, 0)):
        ranges = even_ranges(count, parts, rotate)
        assert len(ranges) == parts and ranges[0][0] == 0 and ranges[-1][1] == count
        assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
        sizes = [hi - lo for lo, hi in ranges]
        assert max(sizes) - min(sizes) <= 1
        # The larger ranges start at part ``rotate``.
        if count % parts:
            assert sizes[rotate] == max(sizes)
