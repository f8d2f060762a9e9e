"""The application graph: ``build_app(AppArgs)`` binds the replicas into the ingress.

    serve run serve.app                                   # runs/wti/{checkpoint,index}, runs/pitvqa/checkpoint
    serve run serve:build_app num_shards=4 index=/data/index checkpoint=/data/wti vqa_checkpoint=/data/pitvqa
    serve run serve:build_app run=best                    # the best MLflow run of experiment wti
    serve deploy cluster/serve.yaml                       # the same, on a running cluster

Nothing starts until Serve runs the graph. A model or index that is missing does not stop
the app: ``/healthz`` says what is loaded and the routes that need it answer 503.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ray.serve import Application

from .ingress import Ingress
from .replicas import IndexShard, VQAModel
from .schemas import API_KEY_VARIABLE, AppArgs


def from_run(args: AppArgs) -> AppArgs:
    """``args`` with the checkpoint (and index) of MLflow run ``args.run`` (``cluster.tracking``)."""
    from cluster.tracking import local_store, run_folder

    uri = args.mlflow_tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or local_store("runs")
    try:
        kind, folder = run_folder(uri, args.run, args.experiment)
    except LookupError as err:
        if Path(sys.argv[0]).name == "serve":  # the `serve` command line: one line, exit 2
            print(f"serve: {err}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None
        raise ValueError(str(err)) from None
    print(f"serving MLflow run {args.run} ({kind}) from {folder}", flush=True)
    if kind == "pitvqa":
        return args.model_copy(update={"vqa_checkpoint": str(folder / "checkpoint")})
    return args.model_copy(
        update={"checkpoint": str(folder / "checkpoint"), "index": str(folder / "index")}
    )


def build_app(args: AppArgs | dict) -> Application:
    """The application graph for ``args``."""
    if isinstance(args, dict):
        args = AppArgs(**args)
    if args.run:
        args = from_run(args)
    from cluster import cluster_gpus, index_shards

    use_gpu = cluster_gpus() > 0 if args.use_gpu is None else args.use_gpu
    num_shards = index_shards(args.num_shards)
    path = lambda p: str(Path(p).expanduser().resolve())  # noqa: E731
    # A shard does the heaviest work of a query: it reserves its GPU, or without GPUs a CPU,
    # so that Ray spreads the shards over the nodes instead of packing them onto one.
    shard_cpus = args.shard_cpus if args.shard_cpus is not None else (0 if use_gpu else 1)
    shard_options = {"num_cpus": shard_cpus, **({"num_gpus": 1} if use_gpu else {})}
    shards = [
        IndexShard.options(name=f"IndexShard{i}", ray_actor_options=shard_options).bind(
            path(args.index), i, num_shards, args.candidates, args.index_poll_s
        )
        for i in range(num_shards)
    ]
    return Ingress.bind(
        path(args.checkpoint),
        shards,
        VQAModel.bind(path(args.vqa_checkpoint), args.precision),
        path(args.index),
        args.timeout_s,
        args.api_key or os.environ.get(API_KEY_VARIABLE) or None,
        args.precision,
    )
