"""A live index: ``serve run`` serving an index while ``jobs/index.py --append`` and
``--remove`` change it. The service picks up each version within 30 s, without a restart and
without a failed or partial answer while it does; a removed video is never returned after
that, and the added ones are found."""

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from serve_helpers import call

from cluster.processes import stop_serve_run

pytestmark = pytest.mark.slow  # a `serve run` on a Ray of its own

ROOT = Path(__file__).resolve().parents[2]
PORT = 8000  # serve run's default; the session's Serve is on a free port
PICKUP_S = 30
# The settings docs/serving.md gives for production (Serve's HAProxy ingress and its
# throughput-optimised data plane; bench/serve.py: /search p50 x0.62 at concurrency 1): the
# other Serve tests run Serve as it comes, this one as a deployment would.
PRODUCTION = {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}


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
    ]
    started = time.time()
    server = subprocess.Popen(
        command,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env={**os.environ, "RAY_ADDRESS": "local", **PRODUCTION},
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
        assert health["search"]["index_size"] == 21 and health["search"]["index_on_disk"] == {
            "version": 2,
            "count": 21,
        }
        status, out = ids_found(base, "a big red circle is moving to the left")
        ids = [hit["video_id"] for hit in out["results"]]
        assert (
            status == 200
            and {"added0", "added1", "added2"} <= set(ids)
            and len(ids) == len(set(ids)) == 21
        )
        assert call(f"{base}/thumbnail/added1")[0] == 200

        assert index.main(["--output_dir", str(folder), "--remove", "video3", "added1"]) == 0
        took, health = wait_for_version(base, 3)
        removed_at = time.time()
        print(f"version 3 (remove) served {took:.1f} s after it was written")
        assert health["search"]["index_size"] == 19
        time.sleep(2)  # the burst goes on against version 3
        stop.set()
        querier.join(timeout=30)

        assert len(answers) > 20
        failed = [(s, o) for _, s, o, _ in answers if s != 200 or o["partial"]]
        assert not failed, failed[:3]
        versions = [o["index_version"] for _, _, o, _ in answers]
        assert versions == sorted(versions) and set(versions) == {1, 2, 3}  # in order
        # What each version holds: an exact answer (top_k above the index size) lists exactly
        # that; a probed one (top_k 5 of the few candidates its lists hold) only videos of it.
        live = {1: {f"video{i}" for i in range(18)}}
        live[2] = live[1] | {"added0", "added1", "added2"}
        live[3] = live[2] - {"video3", "added1"}
        for _, _, out, exact in answers:
            ids = [hit["video_id"] for hit in out["results"]]
            assert len(ids) == len(set(ids)), ids
            if exact:
                assert set(ids) == live[out["index_version"]], (out["index_version"], ids)
            else:
                assert len(ids) == 5 and set(ids) <= live[out["index_version"]], ids
        after = [(o, e) for t, _, o, e in answers if t > removed_at]  # once /healthz showed v3
        assert {True, False} <= {exact for _, exact in after}  # both paths asked after it
        assert all(
            {"video3", "added1"}.isdisjoint(h["video_id"] for h in o["results"]) for o, _ in after
        )
        assert call(f"{base}/thumbnail/video3")[0] == 404
    finally:
        stop.set()
        stop_serve_run(server)  # serve run and the Ray it started
