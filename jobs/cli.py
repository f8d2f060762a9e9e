"""Command-line plumbing shared by the jobs: one clear line and exit code 2 on bad input."""
from __future__ import annotations

import argparse
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
