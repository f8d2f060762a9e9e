"""Every place the project leans on Ray beyond its public API, in one module, so that a Ray
upgrade breaks here and in ``tests/test_ray_private.py``, not somewhere in a job.

- ``EveryValidationRow``: Ray Train's dataset split with ``val`` kept whole (``DataConfig``
  internals: ``_resolve_execution_options``, ``_enable_shard_locality``);
- ``blocks_as_dataset``: a dataset's blocks, computed once, as a new dataset
  (``Dataset.iter_internal_ref_bundles``);
- ``serve_request_id``: Serve's id of the request being answered (the Serve request context);
- ``quiet_ray_train``: Ray Train's per-report log lines (loggers named by file path);
- ``local_cluster_running``: whether a ``ray start`` cluster runs on this machine
  (``ray._private.services.find_gcs_addresses``).
"""

from __future__ import annotations

import logging
import uuid

import ray
import ray.train

RAY_VERSION = "2.60.0"  # the release these were written against (pyproject pins it)


class EveryValidationRow(ray.train.DataConfig):
    """Ray Train's dataset split: ``train`` into equal shards (as by default: every worker
    takes the same number of steps, which DDP needs), ``val`` into shards that keep every
    row. The default is ``equal=True`` for every dataset, which drops rows to even the
    shards out: with 3 workers and 49 test videos the best epoch was chosen on 48.

    Ordered: each worker gets the same rows in the same order every run (Ray Data's
    ``preserve_order``; the split then ignores locality), which makes a run reproducible."""

    def __init__(self):
        from ray.data import ExecutionOptions

        super().__init__(execution_options=ExecutionOptions(preserve_order=True))

    def configure(self, datasets, world_size, worker_handles, worker_node_ids, **kwargs):
        if world_size == 1:  # nothing to split: the worker reads each dataset whole, in order
            # (no ``streaming_split`` coordinator: a fresh process per dataset)
            return [{name: self._prepared(name, ds).iterator() for name, ds in datasets.items()}]
        others = {k: v for k, v in datasets.items() if k != "val"}
        out = super().configure(others, world_size, worker_handles, worker_node_ids, **kwargs)
        if "val" in datasets:
            val = self._prepared("val", datasets["val"])
            hints = worker_node_ids if self._enable_shard_locality else None
            splits = val.streaming_split(world_size, equal=False, locality_hints=hints)
            for worker, split in zip(out, splits):
                worker["val"] = split
        return out

    def _prepared(self, name: str, ds):
        """``ds`` named and copied with the ingest options, as ``DataConfig.configure`` does."""
        if ds.name is None:
            ds.set_name(name)
        ds = ds.copy(ds)
        ds.context.execution_options = self._resolve_execution_options(name)
        return ds


def blocks_as_dataset(ds: ray.data.Dataset, num_blocks: int) -> ray.data.Dataset:
    """``ds`` computed once into ``num_blocks`` blocks, which become the dataset. (What
    ``materialize()`` does, without its second pass, which finds the CPUs still held by the
    run that just finished and warns that the job "will hang".)

    Each block is copied into this process's node (``ray.put``, one block at a time), so
    the dataset lives on the driver's node, which a run cannot lose and go on: a block left
    on a worker node died with it, and rebuilding it from lineage re-ran the decoding and
    normalisation stages behind it (a lost-node test hung there, 1 free CPU on the head)."""
    bundles = ds.repartition(num_blocks).iter_internal_ref_bundles()
    local = [ray.put(ray.get(block)) for bundle in bundles for block in bundle.block_refs]
    return ray.data.from_arrow_refs(local)


def serve_request_id() -> str:
    """Serve's id of this request (the ``x-request-id`` header of the response, and the id in
    Serve's access log); a fresh one outside a request."""
    from ray import serve

    try:
        return serve.context._get_serve_request_context().request_id or uuid.uuid4().hex
    except Exception:  # outside a request, or a Serve without the private accessor
        return uuid.uuid4().hex


def quiet_ray_train() -> None:
    """One line per report from Ray Train is noise next to the epoch lines the jobs print.
    (Some of Ray Train's loggers are named by file path, e.g. ``.../ray/train/v2/...``.)"""
    names = [
        n
        for n in logging.root.manager.loggerDict
        if n.startswith("ray.train") or "/ray/train/" in n
    ]
    for name in names + ["ray.train"]:
        logging.getLogger(name).setLevel(logging.WARNING)


def local_cluster_running() -> bool:
    """Whether a ``ray start`` cluster runs on this machine."""
    try:
        from ray._private.services import find_gcs_addresses
    except ImportError:  # a Ray without it: let ray.init() decide
        return True
    return bool(find_gcs_addresses())
