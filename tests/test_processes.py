"""``stop_serve_run`` stops a command and everything it started, including a process that
left its process group (as Serve's HAProxy does) and one started while it stops (an HAProxy
reload), and nothing else."""

import os
import subprocess
import sys
import time

import pytest

from cluster.processes import descendants, stop_serve_run

# A parent that ignores Ctrl-C (so that the SIGKILL path runs), a child in its group, and a
# grandchild in a session of its own; it prints the two pids and waits.
TREE = r"""
import os, signal, subprocess, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
escaped = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"], start_new_session=True)
print(child.pid, escaped.pid, flush=True)
time.sleep(300)
"""


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended
    except OSError:
        return False


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads Linux's /proc")
def test_a_process_that_left_the_group_is_stopped_too():
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    tree = subprocess.Popen(
        [sys.executable, "-c", TREE], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    child = escaped = None
    try:
        child, escaped = map(int, tree.stdout.readline().split())
        assert {pid for pid, _ in descendants(tree.pid)} == {child, escaped}
        assert os.getpgid(escaped) != os.getpgid(tree.pid)  # outside the group killpg reaches
        began = time.time()
        stop_serve_run(tree, grace_s=1)
        assert time.time() - began < 10
        deadline = time.time() + 5
        while (alive(child) or alive(escaped)) and time.time() < deadline:
            time.sleep(0.05)
        assert tree.poll() is not None and not alive(child) and not alive(escaped)
        assert alive(bystander.pid)  # not below the command: left alone
    finally:
        bystander.kill()
        for pid in (child, escaped):  # a failed test leaves none of them behind
            if pid is not None and alive(pid):
                os.kill(pid, 9)
        if tree.poll() is None:
            tree.kill()


# A parent that ignores Ctrl-C and a manager in its group that, on Ctrl-C, starts a process
# in a session of its own (as HAProxy reloads while Serve shuts down), writes its pid to the
# file named, and exits a moment later, leaving it an orphan.
LATE = r"""
import os, signal, subprocess, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
MANAGER = '''
import signal, subprocess, sys, time
def reload(*_):
    late = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"], start_new_session=True)
    open(sys.argv[1], "w").write(str(late.pid))
    time.sleep(0.5)
    sys.exit(0)
signal.signal(signal.SIGINT, reload)
print("ready", flush=True)
time.sleep(300)
'''
manager = subprocess.Popen([sys.executable, "-c", MANAGER, sys.argv[1]], stdout=subprocess.PIPE, text=True)
print(manager.stdout.readline().strip(), flush=True)
time.sleep(300)
"""


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads Linux's /proc")
def test_a_process_started_while_it_stops_is_stopped_too(tmp_path):
    pid_file = tmp_path / "late.pid"
    tree = subprocess.Popen(
        [sys.executable, "-c", LATE, str(pid_file)],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    late = None
    try:
        assert tree.stdout.readline().strip() == "ready"
        stop_serve_run(tree, grace_s=2)
        late = int(pid_file.read_text())
        deadline = time.time() + 5
        while alive(late) and time.time() < deadline:
            time.sleep(0.05)
        assert not alive(late)
    finally:
        if late is not None and alive(late):
            os.kill(late, 9)
        if tree.poll() is None:
            tree.kill()
