"""Connecting a job to Ray: the cluster in ``RAY_ADDRESS`` (or the one ``ray job submit``
runs it on, or a ``ray start`` cluster on this machine), else a fresh local instance."""
from __future__ import annotations

import logging
import os


def connect():
    """``ray`` connected as above, with Ray's own INFO logs (an execution plan per dataset,
    a line per report) kept out of the job's progress lines; warnings and errors still show."""
    import ray

    if not ray.is_initialized():
        ray.init(address=None if os.environ.get("RAY_ADDRESS") or _cluster_running() else "local")
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    for name in ("ray.data", "ray.train"):
        logging.getLogger(name).setLevel(logging.WARNING)
    return ray


def _cluster_running() -> bool:
    """Whether a `ray start` cluster runs on this machine. Without one, a stale address
    file left by a cluster that died would make a bare ``ray.init()`` wait for it forever."""
    try:
        from ray._private.services import find_gcs_addresses
    except ImportError:  # a future Ray: let ray.init() decide
        return True
    return bool(find_gcs_addresses())
