"""A real ``serve run serve:build_app run=best`` on the session's Ray: it serves the best
MLflow run of the store it is pointed at, and after a few queries Ray's metrics endpoint
holds each of the service's metrics (``serve.metrics``) with the right count, a killed
shard's partial answers among them (until it is back: the answers are full again). The Grafana
dashboard in ``cluster/grafana/`` charts exactly those metrics.

``--non-blocking``: the session's Serve runs other apps, and a blocking ``serve run`` shuts
all of Serve down when it is stopped (Ray's ``serve run`` calls ``serve.shutdown()`` on
Ctrl-C); the app is deleted by name at the end instead."""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from serve_helpers import call

from serve import metrics

ROOT = Path(__file__).resolve().parents[2]
APP = "tracked"


def _store(tmp_path, trained_retriever, rendered_index) -> str:
    """Two finished training runs in a local MLflow store: the better one's folder holds
    the test checkpoint and index; the other's folder is gone (and it has no artifacts), so
    a wrong choice of ``best`` cannot come up."""
    from cluster import tracking

    uri = tracking.local_store(tmp_path)
    for name, score, folder in (("good", 80.0, "good"), ("worse", 40.0, "gone")):
        out = tmp_path / folder
        args = argparse.Namespace(
            output_dir=str(out), mlflow=True, mlflow_tracking_uri=uri, experiment_name=None
        )
        run_id = tracking.start(args, "retriever", "train")
        if name == "good":
            out.mkdir()
            (out / "checkpoint").symlink_to(trained_retriever)
            (out / "index").symlink_to(rendered_index)
        history = [{"epoch": 1, "val_score": score}]
        tracking.finish(uri, run_id, out, {"t2v": {"R@1": score}}, history, files=())
    return uri


def _scrape(port: int) -> dict:
    """``{(name, frozenset(tags)): value}`` of this app's samples on Ray's endpoint."""
    from prometheus_client.parser import text_string_to_metric_families
    from serve_helpers import call as get

    status, text = get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200
    out = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            if sample.name.startswith("ray_" + metrics.PREFIX) and sample.labels.get(
                "application"
            ) in (APP, None):
                keep = {
                    k: v
                    for k, v in sample.labels.items()
                    if k in ("route", "status", "stage", "shard", "le", "replica")
                }
                key = (sample.name.removeprefix("ray_" + metrics.PREFIX), frozenset(keep.items()))
                out[key] = out.get(key, 0) + sample.value
    return out


def _value(samples: dict, name: str, **tags) -> float:
    """The sum over the series of ``name`` whose tags include ``tags``."""
    want = {(k, str(v)) for k, v in tags.items()}
    return sum(v for (n, labels), v in samples.items() if n == name and want <= labels)


def _gauges(samples: dict, name: str, shard: int) -> set:
    """The values of gauge ``name`` that shard ``shard``'s replicas reported."""
    return {v for (n, t), v in samples.items() if n == name and ("shard", str(shard)) in t}


def _to_json(value):
    return value.to_json() if hasattr(value, "to_json") else value.value


def _within(ours, theirs, where="") -> bool:
    """``ours`` is ``theirs`` less keys ``theirs`` adds (its defaults)."""
    if isinstance(ours, dict):
        assert isinstance(theirs, dict), where
        for key, value in ours.items():
            assert key in theirs, f"{where}/{key} is not in Grafana's dashboard model"
            _within(value, theirs[key], f"{where}/{key}")
    elif isinstance(ours, list):
        assert isinstance(theirs, list) and len(ours) == len(theirs), where
        for i, (a, b) in enumerate(zip(ours, theirs)):
            _within(a, b, f"{where}[{i}]")
    else:
        assert ours == theirs, f"{where}: {ours!r} became {theirs!r}"
    return True


@pytest.mark.slow  # a `serve run` process of its own
def test_serve_run_best_serves_the_best_run_and_reports_its_metrics(
    ray_cluster, serve_port, trained_retriever, rendered_index, tmp_path
):
    import ray
    from ray import serve

    uri = _store(tmp_path, trained_retriever, rendered_index)
    command = [
        str(Path(sys.executable).parent / "serve"),
        "run",
        "--non-blocking",
        "--address",
        ray_cluster.address,
        "--name",
        APP,
        "--route-prefix",
        f"/{APP}",
        "serve:build_app",
        "run=best",
        f"mlflow_tracking_uri={uri}",
        "num_shards=2",
        "shard_cpus=0",
        "timeout_s=1",
    ]
    server = subprocess.run(
        command,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert server.returncode == 0, server.stdout + server.stderr
    assert "serving MLflow run best (retriever)" in server.stdout + server.stderr
    base = f"http://127.0.0.1:{serve_port}/{APP}"
    port = next(
        n["MetricsExportPort"] for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU") == 2
    )
    try:
        deadline, health = time.time() + 120, {}
        while time.time() < deadline:
            try:
                status, health = call(f"{base}/healthz", timeout=10)
                if status == 200 and health["search"]["shards_up"] == 2:
                    break
            except OSError:
                pass
            time.sleep(0.5)
        assert health.get("search", {}).get("shards_up") == 2, health
        shards_up = time.time()  # each shard has set its index gauges by now
        # run=best is the better run: its folder's checkpoint and index.
        assert health["search"]["checkpoint"] == str((tmp_path / "good" / "checkpoint").resolve())
        assert health["search"]["index"] == str((tmp_path / "good" / "index").resolve())

        searches = [
            {"text": "a red circle moves to the left", "top_k": 5},
            {"text": "a blue square moves up", "top_k": 3},
            {"text": "a green triangle", "top_k": 5, "exact": True},
        ]
        answers = [call(f"{base}/search", query) for query in searches]
        assert [status for status, _ in answers] == [200, 200, 200]
        assert call(f"{base}/search", {"text": ""})[0] == 422
        assert call(f"{base}/thumbnail/no-such-video")[0] == 404

        # One shard killed: with a 1 s wait per shard, the answers while its replacement
        # starts (a new process, torch, its rows: several seconds) are the other shard's,
        # marked partial, never a hang or a 500; then full again, the same as before.
        shard = next(
            a["name"]
            for a in ray.util.list_named_actors(all_namespaces=True)
            if APP in a["name"] and "IndexShard0" in a["name"] and a["namespace"] == "serve"
        )
        ray.kill(ray.get_actor(shard, namespace="serve"), no_restart=True)
        seen, deadline = [], time.time() + 90
        while time.time() < deadline:
            status, out = call(f"{base}/search", searches[0], timeout=20)
            assert status in (200, 503), out
            answers.append((status, out))
            seen.append("503" if status != 200 else "partial" if out["partial"] else "full")
            if seen[-1] == "partial":
                assert out["missing_shards"] == 1 and len(out["results"]) == 5, out
            if seen[-1] == "full" and "partial" in seen:
                break
            time.sleep(0.2)
        assert "partial" in seen, f"no partial answer while the shard was down: {seen}"
        assert seen[-1] == "full", f"the shard was not back within 90 s: {seen}"
        assert out["results"] == answers[0][1]["results"]
        assert call(f"{base}/healthz")[1]["search"]["shards_up"] == 2
        partial = seen.count("partial")
        ok = sum(status == 200 for status, _ in answers)
        unavailable = sum(status == 503 for status, _ in answers)

        want = {
            ("requests_total", "/search", 200): ok,
            ("requests_total", "/search", 422): 1,
            ("requests_total", "/search", 503): unavailable,
            ("requests_total", "/thumbnail/{video_id}", 404): 1,
            ("requests_total", "/healthz", None): None,  # polled above: present, any count
            ("errors_total", "/search", 422): 1,
            ("errors_total", "/thumbnail/{video_id}", 404): 1,
        }
        deadline, samples = time.time() + 30, {}
        while time.time() < deadline:  # Ray's agent exports what the replicas report each second
            samples = _scrape(port)
            if _value(samples, "requests_total", route="/search", status=200) == ok:
                break
            time.sleep(1)
        for (name, route, status), count in want.items():
            tags = {"route": route, **({"status": status} if status else {})}
            got = _value(samples, name, **tags)
            assert got == count if count is not None else got > 0, (name, tags, got, samples)
        assert _value(samples, "errors_total", route="/search", status=200) == 0
        # Latency: every answer end to end; each stage of each answered search once.
        search_answers = ok + 1 + unavailable
        assert _value(samples, "latency_ms_count", route="/search", stage="total") == search_answers
        for stage in ("encode", "shards", "merge"):
            assert _value(samples, "latency_ms_count", route="/search", stage=stage) == ok, stage
        assert _value(samples, "latency_ms_count", route="/search", stage="encode") == ok
        # Candidates: one observation per answered search; the exact one scored all 600.
        assert _value(samples, "candidates_scored_count") == ok
        assert _value(samples, "candidates_scored_sum") >= 600
        assert _value(samples, "partial_answers_total") == partial
        assert _value(samples, "missing_shards_total") == partial
        # The live index per shard (the killed one's replacement too, once it is up): each
        # shard's version and rows as /healthz says.
        deadline = time.time() + 60
        while time.time() < deadline:
            status, health = call(f"{base}/healthz")
            if health["search"]["index_version"] is not None:
                break
            time.sleep(0.5)

        # Ray drops a gauge series its process has not set again for about 20 s (measured on
        # a Ray reporting each second, as the session's does: a gauge set once was on the
        # endpoint from 1 s to 20 s after): the shard that was not killed must still report
        # its gauges 30 s after it came up. The replacement's reach the endpoint with its
        # next report (each second; later on a loaded machine): scraped until every shard's
        # are there, for up to 30 s.
        time.sleep(max(0.0, shards_up + 30 - time.time()))
        expected = [
            (health["search"]["index_version"], rows) for rows in health["search"]["shard_rows"]
        ]
        deadline = time.time() + 30
        while True:
            samples = _scrape(port)
            seen = [
                (_gauges(samples, "index_version", i), _gauges(samples, "index_rows", i))
                for i in range(len(expected))
            ]
            if all(v in vs and r in rs for (v, r), (vs, rs) in zip(expected, seen)):
                break
            assert time.time() < deadline, (expected, seen)
            time.sleep(0.5)
    finally:
        serve.delete(APP)


def test_the_dashboard_charts_every_service_metric():
    """``cluster/grafana/vqa_wti_dashboard.json`` is what ``python -m serve.dashboard``
    writes, Grafana's own dashboard model (grafana-foundation-sdk) reads it, and its queries
    name each metric of ``serve.metrics`` (with Prometheus' suffixes) and no other of ours."""
    from grafana_foundation_sdk.models.dashboard import Dashboard

    from serve.dashboard import DASHBOARD, build

    data = json.loads(DASHBOARD.read_text())
    assert data == build()
    # Every field survives Grafana's model with its value (the model adds its defaults).
    model = json.loads(json.dumps(Dashboard.from_json(data).to_json(), default=_to_json))
    assert _within(data, model)
    assert model["title"] and model["uid"] and len(model["panels"]) == len(data["panels"])
    exprs = " ".join(t["expr"] for p in data["panels"] for t in p["targets"])
    suffix = {"counter": "_total", "histogram": "_bucket", "gauge": ""}
    for name, (kind, *_) in metrics.METRICS.items():
        assert f"ray_{metrics.PREFIX}{name}{suffix[kind]}" in exprs, name
    import re

    named = set(re.findall(rf"ray_{metrics.PREFIX}(\w+?)(?:_total|_bucket|_sum|_count)?\b", exprs))
    assert named <= set(metrics.METRICS), named - set(metrics.METRICS)
