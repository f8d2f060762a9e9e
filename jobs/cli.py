"""Command-line plumbing shared by the jobs: one clear line and exit code 2 on bad input."""
from __future__ import annotations

import argparse
import os
import sys


def _with_spellings(add_argument):
    """Wrap ``add_argument``: ``--snake_case`` flags also answer to ``--kebab-case``, and
    help texts end with their default."""

    def add(*names, **kwargs):
        spellings = list(names) + [n.replace("_", "-") for n in names if n.startswith("--") and "_" in n]
        help_text = kwargs.get("help")
        if "default" in kwargs and help_text not in (None, argparse.SUPPRESS) and "default" not in help_text:
            kwargs["help"] = help_text + " (default: %(default)s)"
        return add_argument(*spellings, **kwargs)

    return add


class Parser(argparse.ArgumentParser):
    """``argparse`` that answers a bad flag with one line and exit code 2 (never a traceback
    or the whole usage), and takes ``--a-b`` wherever it takes ``--a_b``."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
        self.add_argument = _with_spellings(self.add_argument)

    def add_argument_group(self, *args, **kwargs):
        group = super().add_argument_group(*args, **kwargs)
        group.add_argument = _with_spellings(group.add_argument)
        return group

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def fail(prog: str, message: str) -> int:
    """Print the one-line error and give the exit code to return from ``main``."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    return 2


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def init_ray():
    """Connect to the cluster (``RAY_ADDRESS``, or the job's) or start a local Ray, and keep
    Ray's own INFO logs (an execution plan per dataset, every report) out of the job's
    progress lines; warnings and errors still show."""
    import logging

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


def worker_scale(args, ray) -> tuple[int, bool] | str:
    """(workers, use_gpu) from the flags and the cluster; an error line if it cannot fit."""
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    use_gpu = gpus > 0 if args.use_gpu is None else args.use_gpu
    if use_gpu and not gpus:
        return "--use_gpu: the Ray cluster has no GPU"
    workers = args.num_workers or (gpus if use_gpu else 1)
    have = gpus if use_gpu else int(resources.get("CPU", 0))
    if workers > have:
        return f"--num_workers {workers} needs {workers} {'GPUs' if use_gpu else 'CPUs'}; the cluster has {have}"
    return workers, use_gpu
