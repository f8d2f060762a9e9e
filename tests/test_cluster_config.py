"""The cluster definitions and the shared cluster pieces: every YAML is valid for the Ray
that is installed (its own schema files and checks), the job runtime_env ships the code and
not the data, the sizing rules follow the GPUs, and a job pointed at a cluster that is not
there says so in one line."""

import copy
import json
import os
import socket
import subprocess
import sys
import threading
import time
import zipfile
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_YAMLS = [ROOT / "ray_cluster.yaml", ROOT / "cluster" / "onprem.yaml"]


@pytest.mark.parametrize("path", CLUSTER_YAMLS, ids=lambda p: p.name)
def test_cluster_yaml_is_valid_for_ray_up(path):
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load(path.read_text())
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    jsonschema.validate(config, schema)
    # What `ray up` does before it starts anything: fill the provider's defaults, check again.
    validate_config(prepare_config(copy.deepcopy(config)))
    assert config["file_mounts"] == {"/home/ray/vqa-wti-ray": "."}
    assert any("pip install -q -e /home/ray/vqa-wti-ray" in c for c in config["setup_commands"])
    assert config["idle_timeout_minutes"] > 0


def test_the_cloud_cluster_has_a_cpu_head_and_gpu_workers_at_this_ray_version():
    config = yaml.safe_load((ROOT / "ray_cluster.yaml").read_text())
    assert config["docker"]["image"].startswith(f"rayproject/ray:{ray.__version__}-")
    types = config["available_node_types"]
    head = types[config["head_node_type"]]["resources"]
    assert head.get("GPU", 0) == 0
    # Ray Train places each dataset's SplitCoordinator (a default actor: it needs a CPU to be
    # placed) on the driver's node, the head under `ray job submit`; on a CPU: 0 head it
    # fails with ActorUnschedulableError.
    assert head.get("CPU", 1) >= 1
    gpu_types = {name: t for name, t in types.items() if t["resources"].get("GPU", 0) > 0}
    assert sorted(t["resources"]["GPU"] for t in gpu_types.values()) == [
        1,
        8,
    ]  # single- and multi-GPU
    for node_type in gpu_types.values():
        assert 0 <= node_type["min_workers"] <= node_type["max_workers"] <= config["max_workers"]


def test_the_serve_cluster_config_is_valid_and_gives_each_shard_a_gpu():
    from ray.serve.schema import ServeDeploySchema

    from serve import AppArgs, build_app

    config = ServeDeploySchema(**yaml.safe_load((ROOT / "cluster" / "serve.yaml").read_text()))
    assert config.http_options.request_timeout_s > 0
    (app_config,) = config.applications
    args = AppArgs(**app_config.args)
    deployments = {}

    def walk(node):  # the bound deployments of the application graph
        if isinstance(node, (list, tuple)):
            for item in node:
                walk(item)
        elif hasattr(node, "_bound_deployment"):
            deployment = node._bound_deployment
            deployments[deployment.name] = deployment
            walk(list(deployment.init_args))

    walk(build_app(args))
    shards = {name: d for name, d in deployments.items() if name.startswith("IndexShard")}
    assert len(shards) == args.num_shards == 8
    assert all(d.ray_actor_options["num_gpus"] == 1 for d in shards.values())
    for entry in app_config.deployments:  # every override names a deployment of the app
        assert entry.name in deployments
    scaled = {d.name: d.autoscaling_config for d in app_config.deployments}
    assert scaled["Ingress"]["max_replicas"] > scaled["Ingress"]["min_replicas"] >= 1


def test_the_job_runtime_env_ships_the_code_and_not_the_data(tmp_path):
    import shutil
    import subprocess

    from ray._private.runtime_env.packaging import create_package

    from cluster import runtime_env

    env = runtime_env()
    assert Path(env["working_dir"]) == ROOT
    # A working tree as a user has it: the code, plus data, outputs and a virtual environment.
    tree = tmp_path / "tree"
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    for name in tracked.stdout.split():
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, tree / name)
    for junk in (
        ".venv/lib/site.py",
        "data_cache/clips/part-0.parquet",
        "runs/wti/checkpoint/model.safetensors",
        "runs/wti/index/shard_000/frames.npy",
        "videos/video0.mp4",
        "bench/results/search.json",
    ):
        (tree / junk).parent.mkdir(parents=True, exist_ok=True)
        (tree / junk).write_bytes(b"x" * 1000)
    package = tmp_path / "package.zip"
    # Without .gitignore, so that the excludes in cluster/runtime_env.yaml are what is tested.
    create_package(str(tree), package, include_gitignore=False, excludes=env["excludes"])
    names = zipfile.ZipFile(package).namelist()
    assert {"jobs/train.py", "serve/page.html", "cluster/runtime_env.yaml"} <= set(names)
    for name in names:
        assert not name.startswith((".venv/", "data_cache/", "runs/", "bench/results/")), name
        assert not name.endswith((".parquet", ".safetensors", ".mp4", ".npy")), name


def test_sizes_follow_the_gpus(ray_local, monkeypatch):
    from cluster import index_shards, per_gpu, resources, training_scale, use_gpus

    # A cluster of 4 GPUs, as the sizing rules see it (they ask ``cluster_gpus`` only).
    monkeypatch.setattr(resources, "cluster_gpus", lambda: 4)
    assert (index_shards(), index_shards(3)) == (4, 3)
    assert (per_gpu(True), per_gpu(False, cpu_default=2)) == (4, 2)
    assert use_gpus(None) is True and use_gpus(False) is False
    assert training_scale(None, None) == (4, True) and training_scale(2, None) == (2, True)
    assert training_scale(8, None) == "--num_workers 8 needs 8 GPUs; the cluster has 4"
    assert training_scale(None, False) == (1, False)
    monkeypatch.undo()

    assert ray_local.cluster_resources().get("GPU", 0) == 0  # the session's cluster: CPUs only
    assert (index_shards(), index_shards(5)) == (2, 5)
    assert (per_gpu(False), per_gpu(False, cpu_default=2), per_gpu(True)) == (1, 2, 1)
    assert use_gpus(None) is False and use_gpus(True) == "--use_gpu: the Ray cluster has no GPU"
    assert training_scale(None, None) == (1, False) and training_scale(2, False) == (2, False)
    assert training_scale(64, None) == "--num_workers 64 needs 64 CPUs; the cluster has 2"


def test_wait_until_released_waits_for_a_finished_stages_cpu(ray_local):
    import threading

    from cluster.resources import note_free_resources, wait_until_released

    note_free_resources()

    @ray_local.remote(num_cpus=1)
    class Stage:
        def ready(self):
            return True

    stage = Stage.remote()
    ray_local.get(stage.ready.remote())  # holds one CPU, as a pool that is still being torn down
    threading.Timer(1.0, ray_local.kill, args=(stage,)).start()
    started = time.time()
    wait_until_released(timeout_s=20)
    waited = time.time() - started
    assert 0.9 <= waited < 15, waited
    assert ray_local.available_resources().get("CPU", 0) >= 2


def one_line_and_exit_2(command: list[str], address: str, why: str) -> None:
    """``command`` with ``RAY_ADDRESS=address`` exits 2 within a minute, its stderr one line:
    the address and ``why``."""
    began = time.time()
    done = subprocess.run(
        [sys.executable, *command],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "RAY_ADDRESS": address},
    )
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    assert done.stderr.strip().splitlines() == [
        f"{command[0]}: error: RAY_ADDRESS={address}: {why}"
    ]
    assert time.time() - began < 60


@pytest.mark.parametrize(
    "command",
    [
        ["jobs/train.py", "--epochs", "1", "--output_dir", "{tmp}/run"],
        ["jobs/decode.py", "clips", "--features_path", "{tmp}", "--output_dir", "{tmp}/clips"],
    ],
    ids=["train", "decode"],
)
def test_a_ray_address_where_nothing_answers_is_one_line_and_exit_2(command, tmp_path):
    """Ray itself retries such an address for minutes, a warning every few seconds."""
    with socket.socket() as s:  # a port that nothing listens on once closed
        s.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{s.getsockname()[1]}"
    (tmp_path / "a.mp4").write_bytes(b"")  # decode's folder holds a video file
    one_line_and_exit_2(
        [word.format(tmp=tmp_path) for word in command],
        address,
        "no Ray cluster answers there (Connection refused); start one (ray start --head) or "
        "unset RAY_ADDRESS to run on a Ray of its own",
    )


def test_a_ray_address_that_is_not_a_gcs_is_one_line_and_exit_2(ray_cluster, tmp_path):
    """Something answers, but not as Ray's GCS (an HTTP server, as the dashboard's 8265 is):
    Ray would retry it for minutes. The session's own GCS passes the same check."""
    from cluster.connect import unreachable

    assert unreachable(ray_cluster.address) is None
    server = ThreadingHTTPServer(("127.0.0.1", 0), SimpleHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        one_line_and_exit_2(
            ["jobs/train.py", "--epochs", "1", "--output_dir", str(tmp_path)],
            f"127.0.0.1:{server.server_address[1]}",
            "something answers there, but not a Ray cluster's GCS (the address `ray start "
            "--head` prints, port 6379 by default; the dashboard's port, 8265, is the one "
            "`ray job submit` takes)",
        )
    finally:
        server.shutdown()
