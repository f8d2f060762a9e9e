"""Sizing by the cluster's GPUs: training workers, encoding actors, similarity and index
shards. One rule everywhere: one per GPU when the cluster has GPUs, else a CPU default."""

from __future__ import annotations


def cluster_gpus() -> int:
    import ray

    return int(ray.cluster_resources().get("GPU", 0)) if ray.is_initialized() else 0


def use_gpus(flag: bool | None) -> bool | str:
    """The ``--use_gpu`` flag resolved: None means "when the cluster has GPUs"; an error line
    when GPUs are asked for and there are none."""
    gpus = cluster_gpus()
    if flag and not gpus:
        return "--use_gpu: the Ray cluster has no GPU"
    return gpus > 0 if flag is None else bool(flag)


def per_gpu(use_gpu: bool, cpu_default: int = 1) -> int:
    """How many GPU actors, tasks or shards: one per GPU, or ``cpu_default`` on CPUs."""
    return max(1, cluster_gpus()) if use_gpu else cpu_default


def index_shards(requested: int | None = None) -> int:
    """Serving shards: as asked, else one per GPU, else 2 (so that the fan-out and merge
    run on a laptop too)."""
    return requested or per_gpu(cluster_gpus() > 0, cpu_default=2)


def training_scale(num_workers: int | None, use_gpu: bool | None) -> tuple[int, bool] | str:
    """(workers, use_gpu) for Ray Train from the flags and the cluster; an error line if it
    cannot fit. Default: one worker per GPU, else one CPU worker."""
    import ray

    use_gpu = use_gpus(use_gpu)
    if isinstance(use_gpu, str):
        return use_gpu
    workers = num_workers or per_gpu(use_gpu)
    have = cluster_gpus() if use_gpu else int(ray.cluster_resources().get("CPU", 0))
    if workers > have:
        return f"--num_workers {workers} needs {workers} {'GPUs' if use_gpu else 'CPUs'}; the cluster has {have}"
    return workers, use_gpu


_free_at_start: dict[str, float] = {}


def note_free_resources() -> None:
    """Remember the CPUs and GPUs free when the job connected (``connect`` calls this)."""
    import ray

    free = ray.available_resources()
    _free_at_start.update({kind: free.get(kind, 0.0) for kind in ("CPU", "GPU")})


def wait_until_released(timeout_s: float = 20.0) -> None:
    """Block until the CPUs and GPUs free when the job connected are free again, or
    ``timeout_s`` passes.

    Ray tears down a finished stage's actors (a Ray Data pool, Ray Train's worker group)
    asynchronously; a stage started at once finds no free CPU and waits for them (Ray Data
    warns that the job "will hang"). A job calls this between its stages. What other jobs
    on the cluster hold is not waited for.
    """
    import time

    import ray

    deadline = time.time() + timeout_s
    while _free_at_start and time.time() < deadline:
        free, total = ray.available_resources(), ray.cluster_resources()
        # A node lost since the start takes its CPUs with it: wait for what is still there.
        if all(
            free.get(kind, 0.0) >= min(need, total.get(kind, 0.0))
            for kind, need in _free_at_start.items()
        ):
            break
        time.sleep(0.2)
