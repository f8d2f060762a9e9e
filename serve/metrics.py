"""The service's own metrics, on Ray's metrics endpoint beside Serve's (``ray.serve.metrics``:
each carries Serve's ``deployment``, ``replica`` and ``application`` tags). Prometheus sees
them with Ray's ``ray_`` prefix (counters end in ``_total``; histograms in ``_bucket``,
``_sum`` and ``_count``). ``cluster/grafana/vqa_wti_dashboard.json`` charts every one of them,
and docs/serving.md says how to look at them on one machine.

Each replica process makes its metrics once (``ingress()`` / ``shard()``), when the first
request or index version needs them.
"""

from __future__ import annotations

import functools

PREFIX = "vqa_wti_"
LATENCY_MS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 15000)
CANDIDATES = (10, 100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000)
CONFIDENCE = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)
# name -> (kind, description, tag keys, histogram boundaries); the dashboard reads this too.
METRICS = {
    "requests": (
        "counter",
        "HTTP requests answered, by route and status",
        ("route", "status"),
        None,
    ),
    "errors": (
        "counter",
        "HTTP answers with a 4xx or 5xx status, by route and status",
        ("route", "status"),
        None,
    ),
    "latency_ms": (
        "histogram",
        "milliseconds per request (stage total) and per stage of a query: /search's encode, "
        "shards (the fan-out, both rounds) and merge; /vqa's model",
        ("route", "stage"),
        LATENCY_MS,
    ),
    "candidates_scored": (
        "histogram",
        "videos whose exact WTI score a /search computed, over every shard",
        (),
        CANDIDATES,
    ),
    "partial_answers": (
        "counter",
        "/search answers with a shard missing (partial: true)",
        (),
        None,
    ),
    "missing_shards": ("counter", "index shards left out of /search answers", (), None),
    "vqa_confidence": ("histogram", "the probability of each /vqa answer", (), CONFIDENCE),
    "index_version": ("gauge", "the newest index version each shard holds", ("shard",), None),
    "index_rows": ("gauge", "videos in that version, per shard", ("shard",), None),
}
INGRESS = ("requests", "errors", "latency_ms", "candidates_scored", "partial_answers",
           "missing_shards", "vqa_confidence")  # fmt: skip
SHARD = ("index_version", "index_rows")


def _make(names: tuple[str, ...]) -> dict:
    from ray.serve import metrics

    kinds = {"counter": metrics.Counter, "gauge": metrics.Gauge, "histogram": metrics.Histogram}
    out = {}
    for name in names:
        kind, description, tags, boundaries = METRICS[name]
        extra = {"boundaries": list(boundaries)} if boundaries else {}
        out[name] = kinds[kind](PREFIX + name, description=description, tag_keys=tags, **extra)
    return out


@functools.cache
def ingress() -> dict:
    return _make(INGRESS)


@functools.cache
def shard() -> dict:
    return _make(SHARD)


def request(route: str, status: int, ms: float) -> None:
    """One HTTP answer of the ingress."""
    m, tags = ingress(), {"route": route, "status": str(status)}
    m["requests"].inc(1, tags=tags)
    if status >= 400:
        m["errors"].inc(1, tags=tags)
    m["latency_ms"].observe(ms, tags={"route": route, "stage": "total"})


def stage(route: str, name: str, ms: float) -> None:
    ingress()["latency_ms"].observe(ms, tags={"route": route, "stage": name})


def search(scored: int, missing: int) -> None:
    """One /search answer: the candidates scored over its shards, the shards left out."""
    m = ingress()
    m["candidates_scored"].observe(scored)
    if missing:
        m["partial_answers"].inc(1)
        m["missing_shards"].inc(missing)


def vqa(confidence: float) -> None:
    ingress()["vqa_confidence"].observe(confidence)


def index(shard_number: int, version: int, rows: int) -> None:
    """The version a shard now serves as its newest, and its rows."""
    m, tags = shard(), {"shard": str(shard_number)}
    m["index_version"].set(version, tags=tags)
    m["index_rows"].set(rows, tags=tags)
