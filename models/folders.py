"""Replacing a folder whole (a checkpoint): the one way the project does it."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def replace_folder(dest: str | Path) -> Iterator[Path]:
    """Yield an empty staging folder beside ``dest``; once the block ends, it becomes
    ``dest`` (an earlier ``dest`` is moved aside first and deleted after).

    A reader never sees a half-written folder: ``dest`` is the old folder, for an instant
    nothing, then the new one, each whole (two renames on one file system; POSIX has no
    exchange of two folders). If the block raises, ``dest`` is left as it was.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.new.", dir=dest.parent))
    try:
        yield staging
        old = None
        if dest.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old.", dir=dest.parent))
            os.rename(dest, old / dest.name)
        os.rename(staging, dest)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
