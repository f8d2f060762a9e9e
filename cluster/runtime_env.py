"""The job ``runtime_env``: this repository as the working directory, minus data, run
outputs and virtual environments. ``runtime_env.yaml`` is the one list, read by both
``ray job submit --runtime-env cluster/runtime_env.yaml`` and ``runtime_env()``."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SPEC = Path(__file__).with_name("runtime_env.yaml")


def runtime_env(env_vars: dict[str, str] | None = None) -> dict:
    """The runtime_env dict, with ``working_dir`` as an absolute path to the repository."""
    env = yaml.safe_load(SPEC.read_text())
    env["working_dir"] = str(ROOT)
    if env_vars:
        env["env_vars"] = {**env.get("env_vars", {}), **env_vars}
    return env
