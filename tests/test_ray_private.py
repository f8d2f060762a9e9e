"""The Ray internals ``cluster/ray_private.py`` leans on still exist: a Ray upgrade that moves
one fails here, by name, instead of somewhere inside a training run or a request."""

import inspect

import ray
import ray.train
from ray import serve

from cluster import ray_private


def test_ray_is_the_release_the_adapter_was_written_against():
    assert ray.__version__ == ray_private.RAY_VERSION, (
        f"Ray {ray.__version__}: re-check every private API in cluster/ray_private.py "
        f"(written against {ray_private.RAY_VERSION}), then update RAY_VERSION"
    )


def test_every_private_api_the_adapter_uses_is_there():
    config = ray.train.DataConfig()
    assert callable(getattr(config, "_resolve_execution_options", None))
    assert isinstance(getattr(config, "_enable_shard_locality", None), bool)
    configure = inspect.signature(ray.train.DataConfig.configure).parameters
    assert list(configure)[1:5] == ["datasets", "world_size", "worker_handles", "worker_node_ids"]
    assert callable(getattr(ray.data.Dataset, "iter_internal_ref_bundles", None))
    assert callable(getattr(serve.context, "_get_serve_request_context", None))
    assert hasattr(serve.context._get_serve_request_context(), "request_id")
    from ray._private.services import find_gcs_addresses

    assert isinstance(find_gcs_addresses(), (list, set, frozenset))


def test_outside_a_request_the_request_id_is_a_fresh_one():
    first, second = ray_private.serve_request_id(), ray_private.serve_request_id()
    assert len(first) == 32 and first != second
