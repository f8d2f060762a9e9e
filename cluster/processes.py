"""Stopping a ``serve run`` (or any command started in its own session) as a user would,
without waiting a minute for it."""

from __future__ import annotations

import os
import signal
import subprocess


def stop_serve_run(process: subprocess.Popen, grace_s: float = 10.0) -> None:
    """Ctrl-C to a ``serve run`` started with ``start_new_session=True``, as a user stops it,
    then SIGKILL to its process group after ``grace_s``: its graceful shutdown took a whole
    minute after another ``serve run`` on the same machine, and nothing of it is reused."""
    os.killpg(process.pid, signal.SIGINT)
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
