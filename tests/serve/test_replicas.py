"""The service's parts outside a running app: importing it, its config, an index shard's
health check, and the ingress's merge of the shards' answers."""

import subprocess
import sys
from pathlib import Path

import pytest

from serve.ingress import merge

ROOT = Path(__file__).resolve().parents[2]


def test_importing_serve_starts_nothing_and_bad_app_arguments_are_refused():
    code = (
        "import ray, serve; app = serve.app; from ray.serve import Application; "
        "assert isinstance(app, Application); assert not ray.is_initialized(); print('ok')"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.stdout.strip() == "ok", done.stderr[-2000:]
    from serve import AppArgs

    # The Serve config file (cluster/serve.yaml) is checked in tests/test_cluster_config.py.
    with pytest.raises(ValueError):
        AppArgs(num_shards=0)


def test_a_shards_health_check_runs_a_real_query_and_can_fail(ray_local, rendered_index):
    """The shard's class outside Serve: healthy on its slice, unhealthy once its frames are
    no longer the ones it answered from at start-up."""
    import torch

    from serve.replicas import IndexShard

    threads = torch.get_num_threads()  # a CPU replica sets one thread for its process
    try:
        shard = IndexShard.func_or_class(str(rendered_index), 0, 2, candidates=96)
        assert shard.info()["rows"] == 300
        shard.check_health()
        view = shard.views[max(shard.views)]
        view.lists.slabs[:] = view.lists.slabs.flip(0)  # the slice's memory corrupted
        with pytest.raises(RuntimeError, match="probe query"):
            shard.check_health()
    finally:
        torch.set_num_threads(threads)


def test_merge_takes_the_global_best_breaks_ties_by_id_and_counts_an_id_once():
    shard_a = [("v3", 0.9), ("v1", 0.5), ("v7", 0.4)]
    shard_b = [("v2", 0.8), ("v1", 0.5), ("v0", 0.5)]  # v1 answered by both (a replaced video)
    merged = merge([shard_a, shard_b], 4)
    assert merged == [("v3", 0.9), ("v2", 0.8), ("v0", 0.5), ("v1", 0.5)]
    assert merge([shard_b, shard_a], 4) == merged  # the order of the shards does not matter
