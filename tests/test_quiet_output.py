"""A job's stderr leaves out exactly the Ray lines that ``jobs.cli.KNOWN_RAY_LINES`` names
(Ray issues, printed on runs that went well) and passes everything else through."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import os, sys, time
sys.path.insert(0, {root!r})
from jobs.cli import run

def main(argv):
    # Ray's C++ core writes to the file descriptor; relayed lines come through sys.stderr.
    os.write(2, b"[2026-12-05 15:19:03,121 E 32526 32526] core_worker.cc:2465: Actor with class "
                b"name: 'MapWorker(MapBatches(QABatcher))' and ID: 'b8b4' has constructor arguments "
                b"in the object store and max_restarts > 0. If the arguments ...\\n")
    os.write(2, b"[2026-12-05 15:19:03,122 E 32526 32526] core_worker.cc:100: a real error\\n")
    sys.stderr.write("(pid=gcs_server) [2026-12-05 15:16:53,303 E 28785 28785] (gcs_server) "
                     "gcs_actor_scheduler.cc:538: Failed to kill actor 8b55, return status: Invalid: "
                     "KillActor RPC failed for actor 8b55: RpcError: RPC error: Socket closed rpc_code: 14\\n")
    # The same line as Ray relays it, colour-coded, in two writes (a read may split it).
    os.write(2, b"\\x1b[36m(pid=gcs_server)\\x1b[0m [2026-12-05 21:36:22,219 E 9915 9915] (gcs_server) gcs_actor_")
    time.sleep(0.2)
    os.write(2, b"scheduler.cc:538: Failed to kill actor e397, return status: Invalid: KillActor RPC "
                b"failed for actor e397: RpcError: RPC error: Socket closed rpc_code: 14\\n")
    sys.stderr.write("decoded 10/20 videos\\r")
    sys.stderr.flush()
    print("stdout is left alone")
    return 3

run(main)
"""


def test_known_ray_lines_are_dropped_and_everything_else_kept(tmp_path):
    script = tmp_path / "job.py"
    script.write_text(SCRIPT.format(root=str(ROOT)))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, timeout=60)
    assert done.returncode == 3  # the job's own exit code
    assert done.stdout == b"stdout is left alone\n"
    assert done.stderr == (
        b"[2026-12-05 15:19:03,122 E 32526 32526] core_worker.cc:100: a real error\n"
        b"decoded 10/20 videos\r"
    )
