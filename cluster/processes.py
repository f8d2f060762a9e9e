"""Stopping a ``serve run`` (or any command started in its own session) as a user would,
without waiting a minute for it, and without leaving any of its processes behind."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path


def _stat(pid: int | str) -> tuple[int, str] | None:
    """(parent pid, start time) of a process from Linux's /proc; None once it is gone."""
    try:
        # "pid (comm) state ppid ... starttime ...": comm may hold spaces and parentheses.
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), fields[19]


def descendants(pid: int) -> set[tuple[int, str]]:
    """Every process below ``pid`` now, as (pid, start time): a pid that a new process has
    taken since is not the same process (none where there is no /proc)."""
    children: dict[int, list[tuple[int, str]]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        stat = _stat(entry.name)
        if stat is not None:
            children.setdefault(stat[0], []).append((int(entry.name), stat[1]))
    found, stack = set(), [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.add(child)
            stack.append(child[0])
    return found


def stop_serve_run(process: subprocess.Popen, grace_s: float = 10.0) -> None:
    """Ctrl-C to a ``serve run`` started with ``start_new_session=True``, as a user stops it,
    then SIGKILL to its process group after ``grace_s``: its graceful shutdown took a whole
    minute after another ``serve run`` on the same machine, and nothing of it is reused.

    Processes of its Ray that left the group are killed too: Serve's HAProxy ingress runs
    ``haproxy`` in a session of its own, which a killed Ray leaves running on its ports
    (8404, 9101), so that the next HAProxy on the machine cannot start. The processes below
    it are noted until it ends: one started while it shuts down (an HAProxy reload) is an
    orphan once its parent has gone."""
    below = descendants(process.pid)
    os.killpg(process.pid, signal.SIGINT)
    deadline = time.monotonic() + grace_s
    while process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
        below |= descendants(process.pid)
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    for pid, started in below:
        stat = _stat(pid)
        if stat is not None and stat[1] == started:  # still that process
            with contextlib.suppress(ProcessLookupError):  # ended just now
                os.kill(pid, signal.SIGKILL)
