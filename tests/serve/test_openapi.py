"""The OpenAPI document is the contract: schemathesis (every check, its four phases)
against the live app on loopback finds no status, header or body that the document does not
list, no 5xx, no valid request refused and no invalid one accepted."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # a few hundred requests through Serve

CONFIG = Path(__file__).with_name("schemathesis.toml")


def test_schemathesis_with_every_check_passes_against_the_live_app(app_url, tmp_path):
    assert app_url.startswith("http://127.0.0.1:")  # loopback only
    command = [
        str(Path(sys.executable).parent / "st"),
        "--config-file",
        str(CONFIG),
        "run",
        f"{app_url}/openapi.json",
        "--checks",
        "all",
        "--max-examples",
        "40",
        "--seed",
        "1",
        "--workers",
        "1",
        "--request-timeout",
        "30",
        "--max-time",
        "30",
        "--generation-database",
        "none",
        "--report",
        "junit",
        "--report-dir",
        str(tmp_path),
    ]
    run = subprocess.run(command, capture_output=True, text=True, timeout=400, cwd=tmp_path)
    print(run.stdout[-3000:])
    assert run.returncode == 0, run.stdout[-8000:] + run.stderr[-2000:]
    cases = re.search(r"(\d+) generated", run.stdout)
    assert cases and int(cases.group(1)) > 100, run.stdout[-3000:]
