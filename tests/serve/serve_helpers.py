"""HTTP helpers for the Serve tests (imported by name: pytest puts this folder on sys.path)."""

import json
import random
import socket
import time
import urllib.error
import urllib.request

INDEX_VIDEOS = 600
CANDIDATES = 96  # per shard of 300: two-stage really chooses (a third of the shard)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def quiet_port() -> int:
    """A free port below the kernel's ephemeral range (32768 up) and above Ray's worker
    ports (10002-19999), for a server that binds it later: a port from ``free_port()`` is
    ephemeral, and Ray's own processes took one before HAProxy bound it (a CI run)."""
    for _ in range(100):
        port = random.randint(20000, 32767)
        with socket.socket() as s:
            try:
                s.bind(("0.0.0.0", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 20000-32767")


def production() -> dict:
    """The environment of the settings docs/serving.md gives for production (Serve's HAProxy
    ingress and its throughput-optimised data plane; bench/serve.py: /search p50 x0.62 at
    concurrency 1), which the live-index and several-node tests run as a deployment would
    (the other Serve tests run Serve as it comes). HAProxy's stats and metrics go to quiet
    ports: its defaults, 8404 and 9101, may be taken on a test machine (they were, by an
    HAProxy that a killed `serve run` had left behind)."""
    return {
        "RAY_SERVE_ENABLE_HA_PROXY": "1",
        "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
        "RAY_SERVE_HAPROXY_STATS_PORT": str(quiet_port()),
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(quiet_port()),
    }


def call(url: str, body=None, raw: bytes | None = None, timeout: float = 30, headers=None):
    """(status, parsed JSON or bytes) for a GET (no body) or a JSON POST."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(
        url, data=data, headers={"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, payload, kind = (
                response.status,
                response.read(),
                response.headers.get("Content-Type", ""),
            )
    except urllib.error.HTTPError as err:
        status, payload, kind = err.code, err.read(), err.headers.get("Content-Type", "")
    return status, json.loads(payload) if "json" in kind else payload


def run_app(port: int, name: str, **args) -> str:
    """Deploy ``build_app(AppArgs(**args))`` as application ``name``; returns its base URL."""
    from ray import serve

    from serve import AppArgs, build_app

    prefix = "/" if name == "default" else f"/{name}"
    serve.run(build_app(AppArgs(**args)), name=name, route_prefix=prefix, blocking=False)
    base = f"http://127.0.0.1:{port}{prefix.rstrip('/')}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            status, health = call(f"{base}/healthz", timeout=10)
            if (
                status == 200
                and health["search"]["shards_up"] + len(health["search"]["problems"]) >= 1
            ):
                return base
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"application {name} did not come up")
