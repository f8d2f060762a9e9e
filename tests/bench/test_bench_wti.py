"""bench/wti.py runs end to end at a small size (a smoke test, never a speed assertion)."""

import json

import pytest

from bench.wti import main

pytestmark = pytest.mark.slow  # a whole job (or cluster) per test: the full suite only


def test_wti_bench_runs_and_agrees(capsys):
    assert (
        main(
            [
                "--texts",
                "40",
                "--videos",
                "70",
                "--tokens",
                "8",
                "--frames",
                "4",
                "--dim",
                "32",
                "--repeat",
                "1",
            ]
        )
        == 0
    )
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["max_abs_diff"] <= 1e-5
    assert summary["top10_identical"] == 1.0
    assert set(summary["seconds"]) == {"reference", "wti_head", "bare_matmul"}
