"""The several-node Serve test under the production settings (Serve's HAProxy ingress and its
throughput-optimised data plane, docs/serving.md): a Ray of three nodes of its own (those
settings are read when Serve starts, so not the session's Serve), the index shards spread
over the nodes, HAProxy on the head forwarding to the ingress, the ingress reaching shards on
other nodes; a node holding a shard is lost and ``/search`` answers fully again in bounded
time, with the same answer."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from serve_helpers import free_port, production

pytestmark = pytest.mark.slow  # a Ray cluster of its own

ROOT = Path(__file__).resolve().parents[2]
RECOVERY_BOUND_S = 120

SCRIPT = r"""
import json, sys, time
sys.path.insert(0, {root!r})
sys.path.insert(0, {tests!r})
import ray
from ray import serve
from ray.cluster_utils import Cluster
from serve_helpers import call, run_app

cluster = Cluster(initialize_head=True, head_node_args={{"num_cpus": 2, "include_dashboard": False}})
workers = [cluster.add_node(num_cpus=1, object_store_memory=512 * 1024**2) for _ in range(2)]
cluster.wait_for_nodes()
ray.init(address=cluster.address, log_to_driver=False)
serve.start(proxy_location="HeadOnly", http_options={{"host": "127.0.0.1", "port": {port}}})
base = run_app({port}, "default", checkpoint={checkpoint!r}, index={index!r},
               vqa_checkpoint={vqa!r}, num_shards=3)
query = {{"text": "a red circle moves to the left", "top_k": 10}}
out = {{"head": ray.get_runtime_context().get_node_id()}}
_, health = call(f"{{base}}/healthz")
out["shard_nodes"] = health["search"]["shard_nodes"]
out["shards_up"] = health["search"]["shards_up"]
status, before = call(f"{{base}}/search", query, timeout=20)
out["before"] = [status, before]
lost = next(n for n in workers if n.node_id in out["shard_nodes"])
cluster.remove_node(lost)
removed, statuses = time.time(), []
while time.time() - removed < {bound}:
    try:
        status, after = call(f"{{base}}/search", query, timeout=20)
    except OSError as err:
        status, after = type(err).__name__, {{}}
    statuses.append(status if status != 200 else ("partial" if after["partial"] else "full"))
    if statuses[-1] == "full":
        break
    time.sleep(0.5)
out.update(lost=lost.node_id, recovered_s=time.time() - removed, statuses=statuses, after=after)
_, health = call(f"{{base}}/healthz")
out["shard_nodes_after"] = health["search"]["shard_nodes"]
out["shards_up_after"] = health["search"]["shards_up"]
print("RESULT " + json.dumps(out), flush=True)
serve.shutdown()
ray.shutdown()
cluster.shutdown()
"""


def test_shards_spread_over_nodes_and_come_back_under_haproxy(
    trained_retriever, rendered_index, pitvqa_checkpoint, tmp_path
):
    script = tmp_path / "nodes.py"
    script.write_text(
        SCRIPT.format(
            root=str(ROOT),
            tests=str(Path(__file__).parent),
            port=free_port(),
            checkpoint=str(trained_retriever),
            index=str(rendered_index),
            vqa=str(pitvqa_checkpoint),
            bound=RECOVERY_BOUND_S,
        )
    )
    env = {**os.environ, **production()}
    env.pop("RAY_ADDRESS", None)
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=600, env=env
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, done.stdout[-3000:] + done.stderr[-3000:]
    out = json.loads(lines[-1][len("RESULT ") :])
    print(
        f"under HAProxy: shards on {len(set(out['shard_nodes']))} nodes; after the loss of one, "
        f"full answers again in {out['recovered_s']:.1f} s; answers meanwhile: {out['statuses']}"
    )
    assert out["shards_up"] == 3 and len(set(out["shard_nodes"])) >= 2, out
    status, before = out["before"]
    assert status == 200 and not before["partial"] and len(before["results"]) == 10
    assert out["statuses"][-1] == "full", out["statuses"]
    assert out["after"]["results"] == before["results"]  # the same index, the same answer
    assert out["shards_up_after"] == 3 and out["lost"] not in out["shard_nodes_after"]
