"""``ray job submit --runtime-env cluster/runtime_env.yaml -- python jobs/train.py ...`` against a real local head
node started with ``ray start --head`` (a cluster of its own, beside the tests' Ray)."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # a whole job (or cluster) per test: the full suite only

ROOT = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).parent / "ray")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def head_node(tmp_path):
    """``ray start --head --block`` in its own process group; killed with its daemons afterwards
    (SIGKILL to the group: a graceful stop takes half a minute, and nothing of it is reused)."""
    gcs_port, dashboard_port = free_port(), free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "token"}
    # The tests' own Ray already holds the default agent ports (52365 and others); a second
    # head on the same machine needs its own, or its job agent never comes up.
    ports = [
        f"--{name}={free_port()}"
        for name in (
            "dashboard-agent-listen-port",
            "dashboard-agent-grpc-port",
            "runtime-env-agent-port",
            "metrics-export-port",
        )
    ]
    log = (tmp_path / "head.log").open("w")  # the child holds its own descriptor once started
    head = subprocess.Popen(
        [
            RAY,
            "start",
            "--head",
            f"--port={gcs_port}",
            f"--dashboard-port={dashboard_port}",
            *ports,
            "--num-cpus=2",
            "--include-dashboard=true",
            "--disable-usage-stats",
            "--block",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    log.close()
    address = f"http://127.0.0.1:{dashboard_port}"
    for _ in range(90):
        try:
            urllib.request.urlopen(f"{address}/api/version", timeout=1)
            break
        except urllib.error.HTTPError:  # up, and asking for the token
            break
        except OSError:
            time.sleep(1)
    else:
        head.kill()
        pytest.fail(f"the head node did not start: {(tmp_path / 'head.log').read_text()[-2000:]}")
    yield address, env
    os.killpg(head.pid, signal.SIGKILL)
    head.wait(timeout=60)
    # `ray start` left its address for later bare ray.init() calls; it now points at nothing.
    current = Path("/tmp/ray/ray_current_cluster")
    if current.is_file() and current.read_text().strip().endswith(f":{gcs_port}"):
        current.unlink()


def test_ray_job_submit_runs_the_training_job(head_node, synthetic_dir, tmp_path):
    address, env = head_node
    out = tmp_path / "run"
    # Ray 2.60 turns on token authentication for `ray start`; the job CLI reads the token
    # (~/.ray/auth_token) when RAY_AUTH_MODE=token.
    # The job's runtime_env ships this repository's code and leaves data and outputs behind.
    command = [
        RAY,
        "job",
        "submit",
        "--address",
        address,
        "--runtime-env",
        "cluster/runtime_env.yaml",
        "--",
        sys.executable,
        "jobs/train.py",
        "--synthetic_dir",
        str(synthetic_dir),
        "--synthetic_train",
        "16",
        "--synthetic_test",
        "8",
        "--epochs",
        "1",
        "--batch_size",
        "8",
        "--n_display",
        "0",
        "--index",
        "0",
        "--output_dir",
        str(out),
    ]
    for _ in range(30):  # the head answers HTTP a while before its job agent is up
        done = subprocess.run(
            command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=480
        )
        if "No available agent" not in done.stdout + done.stderr:
            break
        time.sleep(2)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "succeeded" in done.stdout + done.stderr
    assert "results in" in done.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_videos"] == 8
    assert (out / "checkpoint" / "model.safetensors").is_file()
