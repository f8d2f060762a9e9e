"""Command-line plumbing shared by the jobs: one clear line and exit code 2 on bad input."""

from __future__ import annotations

import argparse
import atexit
import os
import re
import sys
import threading


def _with_spellings(add_argument):
    """Wrap ``add_argument``: ``--snake_case`` flags also answer to ``--kebab-case``, and
    help texts end with their default."""

    def add(*names, **kwargs):
        spellings = list(names) + [
            n.replace("_", "-") for n in names if n.startswith("--") and "_" in n
        ]
        help_text = kwargs.get("help")
        if (
            "default" in kwargs
            and help_text not in (None, argparse.SUPPRESS)
            and "default" not in help_text
        ):
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


class Switch(argparse.Action):
    """A boolean flag, one way for every job: ``--x`` turns it on, ``--no-x`` / ``--no_x``
    off, and ``--x 1`` / ``--x 0`` (the references' spelling, e.g. CLIP4Clip's
    ``--do_train``) say the same. Declare it with its positive names only."""

    def __init__(self, option_strings, dest, default=None, help=None, **kwargs):
        negatives = list(
            dict.fromkeys(
                spelling
                for name in option_strings
                for spelling in (
                    "--no-" + name[2:],
                    "--no-" + name[2:].replace("_", "-"),
                    "--no_" + name[2:].replace("-", "_"),
                )
            )
        )
        super().__init__(
            option_strings + negatives, dest, nargs="?", default=default, help=help, metavar="0|1"
        )

    def __call__(self, parser, namespace, values, option_string=None):
        if option_string.startswith("--no"):
            if values is not None:
                parser.error(f"{option_string} takes no value")
            setattr(namespace, self.dest, False)
        elif values is None or values in ("1", "true", "True"):
            setattr(namespace, self.dest, True)
        elif values in ("0", "false", "False"):
            setattr(namespace, self.dest, False)
        else:
            parser.error(f"{option_string}: expected 0 or 1 (or no value), got {values!r}")


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


# Lines Ray prints on a run that went well, each a Ray issue, not ours to fix (issue #24).
# Dropped from a job's stderr by ``run``, exactly these and nothing else:
KNOWN_RAY_LINES = (
    # Ray Data ``ray.put``s every actor pool's map transformer and Ray Train its
    # PreemptionWatcher's arguments, and both restart their actors: core_worker warns at
    # each such actor (ray-project/ray#53727, #57733).
    re.compile(
        rb"core_worker\.cc:\d+: Actor with class name: .* has constructor arguments in the object store and max_restarts > 0"
    ),
    # The GCS logs a kill of an actor whose worker already exited (the success path of
    # KillActor) as an error: ray-project/ray#58544 removes the line.
    re.compile(
        rb"gcs_actor_scheduler\.cc:\d+: Failed to kill actor \w+, return status: Invalid: KillActor RPC failed for actor \w+: RpcError: RPC error: Socket closed"
    ),
    # Ray Train's detached PlacementGroupCleaner polls the state API, which needs the
    # dashboard; on a Ray without one its monitor thread dies with a ConnectionError
    # traceback (it catches RayStateApiException only). What that actor relays is dropped.
    re.compile(rb"\(PlacementGroupCleaner pid=\d+\)"),
)


def _drop_known_ray_lines() -> None:
    """Filter this process's stderr (file descriptor 2: Ray's C++ core writes there, and the
    lines Ray relays from its other processes) through ``KNOWN_RAY_LINES``. Everything else
    passes through as it comes, partial lines included (progress bars)."""
    read_end, write_end = os.pipe()
    original = os.dup(2)
    os.dup2(write_end, 2)
    os.close(write_end)

    def pump():
        pending = b""
        while chunk := os.read(read_end, 1 << 16):
            *lines, pending = (pending + chunk).split(b"\n")
            kept = [
                line + b"\n" for line in lines if not any(p.search(line) for p in KNOWN_RAY_LINES)
            ]
            # A partial line goes out at once (a progress bar) unless it may be the start of
            # a log line: C++ core ("[2026-..."), or relayed by Ray ("(pid=...)", colour-coded
            # "\x1b[36m(pid=...)" when the driver's stderr is a terminal or a pipe).
            if pending and not pending.startswith((b"[", b"(", b"\x1b[")):
                kept.append(pending)
                pending = b""
            if kept:
                os.write(original, b"".join(kept))
        if pending:
            os.write(original, pending)

    thread = threading.Thread(target=pump, name="stderr-filter", daemon=True)
    thread.start()

    def restore():  # at exit: stderr back as it was, which ends the pipe; the rest drains
        sys.stderr.flush()
        os.dup2(original, 2)
        thread.join(timeout=2)

    atexit.register(restore)


def run(main) -> None:
    """A job's ``__main__``: ``main`` on the command line's flags, its return code the exit
    code, Ray's known noise (``KNOWN_RAY_LINES``) left out of stderr."""
    _drop_known_ray_lines()
    sys.exit(main(sys.argv[1:]))
