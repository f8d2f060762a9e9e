"""What jobs and serving share on a Ray cluster: connecting (``connect``), the job
``runtime_env`` (``runtime_env``), sizing by the cluster's GPUs (``resources``), and the
MLflow store the jobs log their runs to and the service reads them from (``tracking``).

The cluster definitions live beside this package: ``ray_cluster.yaml`` (AWS, at the
repository root), ``cluster/onprem.yaml`` (your own machines) and ``cluster/serve.yaml``
(``serve deploy``)."""

from .connect import ClusterError, connect
from .resources import (
    cluster_gpus,
    index_shards,
    per_gpu,
    training_scale,
    use_gpus,
    wait_until_released,
)
from .runtime_env import runtime_env

__all__ = [
    "ClusterError",
    "cluster_gpus",
    "connect",
    "index_shards",
    "per_gpu",
    "runtime_env",
    "training_scale",
    "use_gpus",
    "wait_until_released",
]
