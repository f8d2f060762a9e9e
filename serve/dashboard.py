"""The Grafana dashboard of the service's metrics (``serve.metrics``), written to
``cluster/grafana/vqa_wti_dashboard.json``:

    python -m serve.dashboard          # after changing serve/metrics.py

Import the file in Grafana (Dashboards -> New -> Import) with Ray's Prometheus as the data
source; docs/serving.md says how to run both on one machine. Serve's own dashboards (Ray's
``/tmp/ray/session_latest/metrics/grafana``) sit beside it.
"""

from __future__ import annotations

import json
from pathlib import Path

from serve.metrics import METRICS, PREFIX

DASHBOARD = Path(__file__).resolve().parents[1] / "cluster" / "grafana" / "vqa_wti_dashboard.json"
RATE = "[$__rate_interval]"
P = f"ray_{PREFIX}"


def _quantiles(metric: str, by: str, match: str = "", qs=(0.5, 0.95, 0.99)) -> list[dict]:
    return [
        (
            f"histogram_quantile({q}, sum by (le{', ' + by if by else ''}) "
            f"(rate({P}{metric}_bucket{{{match}}}{RATE})))",
            f"p{round(q * 100)}" + (f" {{{{{by}}}}}" if by else ""),
        )
        for q in qs
    ]


# (title, unit, [(PromQL, legend), ...]): one time series panel each, two to a row.
PANELS = [
    (
        "Requests by route and status",
        "reqps",
        [(f"sum by (route, status) (rate({P}requests_total{RATE}))", "{{route}} {{status}}")],
    ),
    (
        "Errors (4xx, 5xx) by route and status",
        "reqps",
        [(f"sum by (route, status) (rate({P}errors_total{RATE}))", "{{route}} {{status}}")],
    ),
    ("Latency end to end, by route", "ms", _quantiles("latency_ms", "route", 'stage="total"')),
    (
        "/search latency by stage (p95): encode, shards, merge",
        "ms",
        _quantiles("latency_ms", "stage", 'route="/search"', qs=(0.95,)),
    ),
    ("Candidates scored per /search", "short", _quantiles("candidates_scored", "")),
    (
        "Partial answers and missing shards",
        "short",
        [
            (f"sum(rate({P}partial_answers_total{RATE}))", "partial answers/s"),
            (f"sum(rate({P}missing_shards_total{RATE}))", "missing shards/s"),
        ],
    ),
    (
        "Index version per shard",
        "none",
        [(f"max by (shard) ({P}index_version)", "shard {{shard}}")],
    ),
    ("Videos per shard", "short", [(f"max by (shard) ({P}index_rows)", "shard {{shard}}")]),
    ("VQA answer confidence", "percentunit", _quantiles("vqa_confidence", "", qs=(0.1, 0.5, 0.9))),
]


def _panel(number: int, title: str, unit: str, queries: list) -> dict:
    source = {"type": "prometheus", "uid": "${datasource}"}
    return {
        "id": number + 1,
        "type": "timeseries",
        "title": title,
        "datasource": source,
        "gridPos": {"h": 8, "w": 12, "x": 12 * (number % 2), "y": 8 * (number // 2)},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": [
            {"refId": chr(ord("A") + i), "datasource": source, "expr": expr, "legendFormat": legend}
            for i, (expr, legend) in enumerate(queries)
        ],
    }


def build() -> dict:
    described = "; ".join(f"{PREFIX}{name}: {spec[1]}" for name, spec in METRICS.items())
    return {
        "uid": "vqa-wti-serve",
        "title": "vqa-wti-ray: search and VQA service",
        "description": f"The service's own metrics (serve/metrics.py): {described}",
        "tags": ["ray", "serve", "vqa-wti-ray"],
        "editable": True,
        "schemaVersion": 39,
        "refresh": "10s",
        "time": {"from": "now-30m", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                }
            ]
        },
        "panels": [_panel(i, *spec) for i, spec in enumerate(PANELS)],
    }


if __name__ == "__main__":
    DASHBOARD.parent.mkdir(exist_ok=True)
    DASHBOARD.write_text(json.dumps(build(), indent=2) + "\n")
    print(f"wrote {DASHBOARD}")
