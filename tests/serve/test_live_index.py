"""A live index: ``serve run`` serving an index while ``jobs/index.py --append`` and
``--remove`` change it. The service picks up each version within 30 s, without a restart and
without a failed or partial answer while it does; once ``/healthz`` reports a version, no
answer comes from an older one: a removed video is never returned after that (21 removals:
two videos together, then 20 one at a time, each queried on both paths), and the added ones
are found."""

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from serve_helpers import call, production

from cluster.processes import stop_serve_run

pytestmark = pytest.mark.slow  # a `serve run` on a Ray of its own

ROOT = Path(__file__).resolve().parents[2]
PORT = 8000  # serve run's default; the session's Serve is on a free port
PICKUP_S = 30
REMOVALS = 20  # one video at a time, each queried on both paths once /healthz shows it


def write_clip_videos(folder: Path, clips) -> None:
    from ingest.synthetic import draw_frame, write_video

    folder.mkdir(parents=True, exist_ok=True)
    for i, clip in enumerate(clips):
        noise = np.random.default_rng(1000 + i)
        write_video(
            folder / f"{clip.video_id}.mp4",
            [draw_frame(clip, k / 31, 80, 80, noise) for k in range(32)],
            8,
        )


def wait_for_version(base: str, version: int, timeout: float = PICKUP_S) -> tuple[float, dict]:
    started = time.time()
    while time.time() - started < timeout:
        status, health = call(f"{base}/healthz", timeout=10)
        if status == 200 and health["search"]["index_version"] == version:
            return time.time() - started, health
        time.sleep(0.2)
    raise AssertionError(
        f"version {version} not served {timeout} s after it was written: {health['search']}"
    )


def wait_for_size(base: str, size: int, timeout: float = PICKUP_S) -> dict:
    """/healthz once it reports ``size`` videos served (what a client watching it sees)."""
    started = time.time()
    while time.time() - started < timeout:
        status, health = call(f"{base}/healthz", timeout=10)
        if status == 200 and health["search"]["index_size"] == size:
            return health
        time.sleep(0.05)
    raise AssertionError(f"{size} videos not served {timeout} s on: {health['search']}")


def ids_found(base: str, text: str) -> tuple[int, dict]:
    """Every video the served version holds, ranked (exact, top_k above the index size)."""
    status, out = call(f"{base}/search", {"text": text, "top_k": 100, "exact": True})
    return status, out


def test_videos_added_and_removed_while_serving_are_picked_up(
    ray_local, trained_retriever, pitvqa_checkpoint, synthetic_msrvtt, tmp_path
):
    from ingest.synthetic import Clip
    from jobs import index

    checkpoint, folder = str(trained_retriever), tmp_path / "index"
    began = time.time()
    assert (
        index.main(
            [
                "--checkpoint",
                checkpoint,
                "--features_path",
                str(synthetic_msrvtt / "videos"),
                "--output_dir",
                str(folder),
            ]
        )
        == 0
    )
    print(f"index built in {time.time() - began:.1f} s")
    command = [
        str(Path(sys.executable).parent / "serve"),
        "run",
        "serve:build_app",
        f"checkpoint={checkpoint}",
        f"index={folder}",
        f"vqa_checkpoint={pitvqa_checkpoint}",
        "num_shards=2",
        # A shard re-scores 4 candidates: queries with a small top_k go through the first
        # stage's probing (with the default, an index this small is scored whole).
        "candidates=4",
        # Each shard looks for a new version every 0.5 s (2 s by default): the 21 versions
        # below are picked up sooner; the pick-up bound checked is the same.
        "index_poll_s=0.5",
    ]
    started = time.time()
    server = subprocess.Popen(
        command,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env={**os.environ, "RAY_ADDRESS": "local", **production()},
    )
    base = f"http://127.0.0.1:{PORT}"
    answers, stop = [], threading.Event()

    def burst():  # queries all along, one after the other, as a client would send them
        exact = False
        while not stop.is_set():
            exact = not exact  # both paths: every video scored, and the probed lists
            query = {"text": "a red circle moves to the left", "top_k": 100 if exact else 5}
            sent = time.time()
            try:
                status, out = call(f"{base}/search", {**query, "exact": exact})
            except OSError as err:
                status, out = 0, {"error": repr(err)}
            answers.append((sent, status, out, exact))
            time.sleep(0.02)  # a steady stream, leaving the cores to the index job

    try:
        deadline = time.time() + 180
        while True:
            try:
                status, health = call(f"{base}/healthz", timeout=10)
                if (
                    status == 200
                    and health["search"]["shards_up"] == 2
                    and health["search"]["index_version"] == 1
                ):
                    break
            except OSError:
                pass
            assert server.poll() is None and time.time() < deadline, server.stdout.read()[-3000:]
            time.sleep(0.5)
        assert health["search"]["index_size"] == 18
        print(f"serve run answered {time.time() - started:.1f} s after it was started")
        querier = threading.Thread(target=burst, daemon=True)
        querier.start()

        # Three new videos, and video5 again with other content (replaced, not duplicated).
        added = [
            Clip("added0", "red", "circle", "big", "left"),
            Clip("added1", "blue", "square", "small", "up"),
            Clip("added2", "green", "triangle", "big", "down"),
            Clip("video5", "yellow", "circle", "big", "right"),
            *(Clip(f"added{i}", "red", "square", "small", "left") for i in range(3, 7)),
        ]
        write_clip_videos(tmp_path / "new", added)
        began = time.time()
        assert (
            index.main(
                [
                    "--checkpoint",
                    checkpoint,
                    "--features_path",
                    str(tmp_path / "new"),
                    "--output_dir",
                    str(folder),
                    "--append",
                ]
            )
            == 0
        )
        print(f"--append took {time.time() - began:.1f} s")
        took, health = wait_for_version(base, 2)
        print(f"version 2 (append) served {took:.1f} s after it was written")
        assert health["search"]["index_size"] == 25 and health["search"]["index_on_disk"] == {
            "version": 2,
            "count": 25,
        }
        status, out = ids_found(base, "a big red circle is moving to the left")
        ids = [hit["video_id"] for hit in out["results"]]
        assert (
            status == 200
            and {"added0", "added1", "added2"} <= set(ids)
            and len(ids) == len(set(ids)) == 25
        )
        assert call(f"{base}/thumbnail/added1")[0] == 200

        live = {1: {f"video{i}" for i in range(18)}}
        live[2] = live[1] | {f"added{i}" for i in range(7)}
        live[3] = live[2] - {"video3", "added1"}
        assert index.main(["--output_dir", str(folder), "--remove", "video3", "added1"]) == 0
        took, health = wait_for_version(base, 3)
        served_at = {3: time.time()}
        print(f"version 3 (remove) served {took:.1f} s after it was written")
        assert health["search"]["index_size"] == 23

        # One video at a time: once /healthz reports its version (and its size), both paths
        # answer without it, whatever shard held it.
        for n, video in enumerate(sorted(live[3])[:REMOVALS]):
            version = 4 + n
            live[version] = live[version - 1] - {video}
            assert index.main(["--output_dir", str(folder), "--remove", video]) == 0
            # As a client would: the moment /healthz shows the new size, query.
            health = wait_for_size(base, len(live[version]))
            served_at[version] = time.time()
            assert health["search"]["index_version"] == version, health["search"]
            for exact in (True, False, True, False, True, False):
                status, out = call(
                    f"{base}/search",
                    {"text": "a red circle moves to the left", "top_k": 100, "exact": exact},
                )
                ids = {hit["video_id"] for hit in out["results"]}
                assert status == 200 and out["index_version"] >= version, out
                assert video not in ids and ids <= live[version], (version, exact, ids)
                assert ids == live[version] or not exact
        print(f"{REMOVALS} removals, each queried 6 times on both paths once /healthz showed it")
        time.sleep(1)  # the burst goes on against the last version
        stop.set()
        querier.join(timeout=30)

        assert len(answers) > 20
        print(f"{len(answers)} answers of the query stream, every one checked")
        failed = [(s, o) for _, s, o, _ in answers if s != 200 or o["partial"]]
        assert not failed, failed[:3]
        versions = [o["index_version"] for _, _, o, _ in answers]
        assert versions == sorted(versions) and {1, 2, 3} <= set(versions)  # in order
        # What each version holds: an exact answer (top_k above the index size) lists exactly
        # that; a probed one (top_k 5 of the few candidates its lists hold) only videos of it.
        for sent, _, out, exact in answers:
            ids = [hit["video_id"] for hit in out["results"]]
            assert len(ids) == len(set(ids)), ids
            if exact:
                assert set(ids) == live[out["index_version"]], (out["index_version"], ids)
            else:
                held = live[out["index_version"]]
                assert len(ids) == min(5, len(held)) and set(ids) <= held, ids
            # Sent after /healthz reported a version: answered from it or a newer one.
            shown = [v for v, at in served_at.items() if at < sent]
            assert out["index_version"] >= max(shown, default=0), (sent, out["index_version"])
        after = [e for t, _, _, e in answers if t > served_at[3]]
        assert {True, False} <= set(after)  # the burst asked both paths after the removals began
        assert call(f"{base}/thumbnail/video3")[0] == 404
    finally:
        stop.set()
        stop_serve_run(server)  # serve run and the Ray it started
