"""HTTP helpers for the Serve tests (imported by name: pytest puts this folder on sys.path)."""

import json
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
