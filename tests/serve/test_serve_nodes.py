"""The Serve app on several nodes (the session's head plus two worker nodes): the index
shards spread over the nodes, and when the node of a shard is lost, Serve starts the shard
again elsewhere and ``/search`` answers fully again within a bounded time."""

import time

import pytest
from ray import serve
from serve_helpers import call, run_app

pytestmark = pytest.mark.slow  # a whole job (or cluster) per test: the full suite only

RECOVERY_BOUND_S = 120


@pytest.fixture
def spread_app(worker_nodes, serve_port, trained_retriever, rendered_index, pitvqa_checkpoint):
    base = run_app(
        serve_port,
        "nodes",
        checkpoint=str(trained_retriever),
        index=str(rendered_index),
        vqa_checkpoint=str(pitvqa_checkpoint),
        num_shards=3,
    )  # the CPU default: a CPU per shard
    yield base
    serve.delete("nodes")


def full_search(base: str) -> tuple[int, dict]:
    return call(
        f"{base}/search", {"text": "a red circle moves to the left", "top_k": 10}, timeout=20
    )


def test_shards_spread_over_nodes_and_come_back_after_a_node_is_lost(
    ray_cluster, worker_nodes, spread_app
):
    import ray

    status, health = call(f"{spread_app}/healthz")
    assert status == 200 and health["search"]["shards_up"] == 3, health
    shard_nodes = health["search"]["shard_nodes"]
    # A CPU each: the head (2 CPUs) cannot hold all three, so Serve must use a worker node;
    # after a node is lost, the 3 CPUs left still hold them.
    assert len(set(shard_nodes)) >= 2, f"all shards on one node: {shard_nodes}"
    status, before = full_search(spread_app)
    assert status == 200 and not before["partial"]

    head = ray.get_runtime_context().get_node_id()
    lost = next(n for n in worker_nodes if n.node_id in shard_nodes and n.node_id != head)
    ray_cluster.remove_node(lost)
    removed, statuses = time.time(), []
    while time.time() - removed < RECOVERY_BOUND_S:
        try:
            status, out = full_search(spread_app)
        except OSError as err:  # the ingress itself may have been on the lost node
            status, out = type(err).__name__, {}
        statuses.append(status if status != 200 else ("partial" if out["partial"] else "full"))
        if status == 200 and not out["partial"]:
            break
        time.sleep(0.5)
    recovered = time.time() - removed
    print(
        f"after the loss of a node holding a shard: full answers again in {recovered:.1f} s; "
        f"answers meanwhile: {statuses}"
    )
    assert statuses[-1] == "full", f"no full answer within {RECOVERY_BOUND_S} s: {statuses}"
    assert out["results"] == before["results"]  # the same index, the same answer
    status, health = call(f"{spread_app}/healthz")
    assert (
        health["search"]["shards_up"] == 3 and lost.node_id not in health["search"]["shard_nodes"]
    ), health
