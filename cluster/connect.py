"""Connecting a job to Ray: the cluster in ``RAY_ADDRESS`` (or the one ``ray job submit``
runs it on, or a ``ray start`` cluster on this machine), else a fresh local instance."""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

DATA_LOGGING = Path(__file__).with_name("ray_data_logging.yaml")


class ClusterError(RuntimeError):
    """``RAY_ADDRESS`` names no Ray cluster that answers (the jobs' one-line error)."""


def unreachable(address: str, timeout_s: float = 5.0) -> str | None:
    """Why ``address`` (``RAY_ADDRESS``, a GCS ``host:port``) is no Ray cluster, or None: nothing
    answers there, or something does but not as a GCS (the dashboard's port, a service's).
    Ray itself retries such an address for minutes, printing a warning every few seconds;
    the names Ray resolves itself (``auto``, ``local``, ``ray://`` and ``http://``
    addresses) are left to it."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or "://" in address:
        return None
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as err:
        return (
            f"RAY_ADDRESS={address}: no Ray cluster answers there ({err.strerror or err}); "
            "start one (ray start --head) or unset RAY_ADDRESS to run on a Ray of its own"
        )
    if not _gcs_serving(address, timeout_s):
        return (
            f"RAY_ADDRESS={address}: something answers there, but not a Ray cluster's GCS "
            "(the address `ray start --head` prints, port 6379 by default; the dashboard's "
            "port, 8265, is the one `ray job submit` takes)"
        )
    return None


def _gcs_serving(address: str, timeout_s: float) -> bool:
    """Whether ``address`` answers gRPC's standard health check as serving, as Ray's GCS does
    (an empty ``HealthCheckRequest``; ``status: SERVING`` is the bytes ``08 01``)."""
    import grpc

    with grpc.insecure_channel(address) as channel:
        check = channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=lambda request: request,
            response_deserializer=lambda response: response,
        )
        try:
            return check(b"", timeout=timeout_s) == b"\x08\x01"
        except grpc.RpcError:
            return False


def connect():
    """``ray`` connected as above, with Ray's own INFO logs (an execution plan per dataset,
    a line per report, a progress block every 10 s when the output is not a terminal) kept
    out of the job's progress lines, which the jobs print themselves (one line per N videos
    or steps); warnings and errors still show. In a terminal Ray Data's bars show too.
    ``ClusterError`` if ``RAY_ADDRESS`` names no cluster that answers."""
    # Every Ray process this driver starts reads Ray Data's logging config from here
    # (a submitted job gets the same from cluster/runtime_env.yaml).
    os.environ.setdefault("RAY_DATA_LOGGING_CONFIG", str(DATA_LOGGING))
    import ray

    from .ray_private import local_cluster_running

    if not ray.is_initialized():
        address = os.environ.get("RAY_ADDRESS")
        problem = unreachable(address) if address else None
        if problem:
            raise ClusterError(problem)
        # Without a `ray start` cluster here, a stale address file left by one that died
        # would make a bare ``ray.init()`` wait for it forever: start a local instance.
        attach = address or local_cluster_running()
        ray.init(address=None if attach else "local")
    from .resources import note_free_resources

    note_free_resources()
    configure_ray_data()
    for name in ("ray.data", "ray.train"):
        logging.getLogger(name).setLevel(logging.WARNING)
    return ray


def log_ray_data_here() -> None:
    """Ray Data's logging config for this process by its absolute path: a Ray Train worker
    runs in its run folder, where ``runtime_env.yaml``'s relative path names nothing (a
    one-worker run reads its datasets there itself, without a split coordinator)."""
    os.environ["RAY_DATA_LOGGING_CONFIG"] = str(DATA_LOGGING)


def configure_ray_data() -> None:
    """Ray Data's settings for this process, as every job runs it (the benchmarks too)."""
    import ray

    context = ray.data.DataContext.get_current()
    # Rows in the order they were read, whichever task finishes first: the same command and
    # seed give the same model and the same index, bit for bit (docs/decisions.md).
    context.execution_options.preserve_order = True
    # Parquet (the decoded-clip cache) through the reader that lists files in a task: the
    # new one (Ray 2.60's default) starts a pool of footer-reading actors per read, each a
    # fresh process, which cost a small job a third of its CPU time (docs/decisions.md).
    context.use_datasource_v2 = False
    context.print_on_execution_start = False
    # Workers (Ray Train's dataset splits) have no terminal: no tqdm lines relayed from them.
    context.use_ray_tqdm = False
    # Fused stages have long names (ReadParquet->MapBatches(...)->...); Ray Data warns when
    # it shortens one for a progress bar. The full name is the more useful one anyway.
    context.enable_progress_bar_name_truncation = False
