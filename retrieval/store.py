"""The retrieval index on disk: the format, its versions, the writer and the reader.
``jobs/index.py`` writes it, the serving shards read it (``serve/replicas.py``).

A folder with ``manifest.json``, the first stage's centroids (``retrieval.lists``) and
immutable *segments* ``segment_NNN/`` (``shard_NNN/`` in an index written before the name),
each holding ``.npy`` arrays row-aligned with its ``video_ids.json``:

- ``frames.npy``   ``[n, F, D]`` float16: the prepared frames (``Retriever.prepare_video``:
  normalised, padding zeroed), what exact WTI scoring reads;
- ``weights.npy``  ``[n, F]`` float32: the video-side WTI weights (they depend on the video only);
- ``mask.npy``     ``[n, F]`` uint8: the frame mask;
- ``pooled.npy``   ``[n, D]`` float32: one normalised vector per video for the first stage;
- ``lists.npy``    ``[n]`` int32: the inverted list (nearest centroid of ``pooled``) of each row;
- ``thumbnails.bin`` and ``thumbnail_offsets.npy``: one JPEG frame per video for the web
  page (``retrieval.thumbnails``).

The index changes while it is served, in versions (``version`` in the manifest):

- a build writes its segments, trains the centroids (k-means on the pooled vectors), writes
  every segment's lists, and then the manifest;
- ``append`` writes new segments (lists from the same centroids), marks the rows of ids it
  replaces as removed, and writes the next manifest;
- ``remove`` only marks rows as removed (``removed``: row numbers per segment).

A segment is never changed once written. Every change ends by replacing ``manifest.json``
in one rename, so a reader sees the previous version or the next, never a mix, and a crash
before the rename leaves the previous version as it was (its stray files are deleted by the
next change). Writers run side by side: each encodes and writes its new segments into a
staging folder of its own (``.writing_*``, claimed by a lock on a file in it for as long as
the writer lives) and takes the folder's ``.lock`` only to commit: read the newest manifest,
move its segments in under fresh names, write the lists and the next manifest. A commit
deletes stray files (of a change that crashed) and the staging folders of writers that are
gone, never a running writer's. A rebuild (a fresh build into the same folder) keeps the
previous version's files, which a service may still be reading, until the change after it.

Serving shards divide the index by splitting *each segment* into ``num_shards`` even
contiguous parts (``serving_parts``): shard ``i`` holds part ``i`` of every segment, so the
shards stay balanced whatever the size of each append, a new version adds new rows to every
shard without moving any row a shard already holds, and each shard reads only its parts.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .lists import nearest_centroid, num_lists, train_centroids
from .ranges import even_ranges

MANIFEST = "manifest.json"
CENTROIDS = "centroids.npy"
LOCK = ".lock"
STAGING_PREFIX = ".writing_"  # a running writer's segments, before its commit
SEGMENT_PREFIXES = ("segment_", "shard_")  # shard_: an index written before segments had their name
ARRAYS = ("frames", "weights", "mask", "pooled")


@dataclass
class IndexRows:
    """Index rows, in memory (``lists``: their inverted list, when known)."""

    video_ids: list[str]
    frames: np.ndarray  # [n, F, D] float16
    weights: np.ndarray  # [n, F] float32
    mask: np.ndarray  # [n, F] uint8
    pooled: np.ndarray  # [n, D] float32
    lists: np.ndarray | None = None  # [n] int32

    def __len__(self) -> int:
        return len(self.video_ids)

    def take(self, rows) -> IndexRows:
        """The rows at ``rows`` (a slice or an array of row numbers)."""
        ids = self.video_ids[rows] if isinstance(rows, slice) else [self.video_ids[r] for r in rows]
        return IndexRows(
            ids,
            **{array: getattr(self, array)[rows] for array in ARRAYS},
            lists=None if self.lists is None else self.lists[rows],
        )


def concat_rows(parts: list[IndexRows]) -> IndexRows:
    return IndexRows(
        video_ids=[v for p in parts for v in p.video_ids],
        **{array: np.concatenate([getattr(p, array) for p in parts]) for array in ARRAYS},
        lists=None
        if any(p.lists is None for p in parts)
        else np.concatenate([p.lists for p in parts]),
    )


# -- writing ---------------------------------------------------------------------------------


@contextmanager
def locked(folder: Path):
    """One writer at a time per index folder."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / LOCK).open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _claim(staging: Path):
    """Hold ``staging`` for this writer: an exclusive lock on a file in it, released when the
    writer closes it or its process ends (then the next commit deletes the folder)."""
    handle = (staging / LOCK).open("w")
    fcntl.flock(handle, fcntl.LOCK_EX)
    return handle


def _abandoned(staging: Path) -> bool:
    """Whether no running writer holds ``staging`` (its lock is free)."""
    try:
        with (staging / LOCK).open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except FileNotFoundError:  # a writer that died before it claimed the folder
        return True
    return True


def _write_manifest(folder: Path, manifest: dict, previous: dict | None) -> dict:
    """Replace the manifest in one rename, then delete what no version and no running writer
    needs: segments and centroid files that neither it nor the version it replaces names
    (stray files of a crashed change), and the staging folders of writers that are gone."""
    manifest["updated"] = time.strftime("%Y-%m-%d %H:%M:%S")
    tmp = folder / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, folder / MANIFEST)
    keep = {s["name"] for m in (manifest, previous or {}) for s in m.get("segments", [])}
    keep |= {m["centroids"] for m in (manifest, previous or {}) if m.get("centroids")}
    for path in folder.iterdir():
        stray = (
            path.name.startswith(SEGMENT_PREFIXES)
            and path.is_dir()
            or path.name.startswith("centroids")
        ) and path.name not in keep
        if stray or path.name.startswith(STAGING_PREFIX) and _abandoned(path):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    return manifest


def _segment_numbers(folder: Path) -> list[int]:
    return [
        int(number)
        for p in folder.iterdir()
        if p.name.startswith(SEGMENT_PREFIXES) and (number := p.name.rpartition("_")[2]).isdigit()
    ]


class IndexWriter:
    """Writes rows into new segments of ``folder``, rolling over every
    ``rows_per_segment`` rows; ``close()`` makes them the next version of the index.

    ``append=False`` builds a new index (the next version replaces whatever the folder
    served); ``append=True`` adds to the existing one: a row whose id the index already holds
    replaces the old row.
    """

    def __init__(
        self,
        folder: str | Path,
        rows_per_segment: int = 50_000,
        info: dict | None = None,
        append: bool = False,
    ):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.rows_per_segment, self.info, self.append = rows_per_segment, dict(info or {}), append
        if append and not (self.folder / MANIFEST).is_file():
            raise FileNotFoundError(f"{self.folder} holds no index to append to (build one first)")
        with locked(self.folder):  # claimed before any commit can see the folder unclaimed
            self.staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=self.folder))
            self.claim = _claim(self.staging)
        self.pending: list[tuple[IndexRows, list[bytes]]] = []
        self.segments: list[dict] = []
        self.shape: tuple[int, int] | None = None
        self.replaced: list[str] = []  # ids whose earlier rows an append replaced

    def add(self, rows: IndexRows, thumbnails: list[bytes] | None = None) -> None:
        rows.frames = rows.frames.astype(np.float16, copy=False)
        self.shape = tuple(rows.frames.shape[1:])
        self.pending.append((rows, thumbnails if thumbnails is not None else [b""] * len(rows)))
        while sum(len(r) for r, _ in self.pending) >= self.rows_per_segment:
            rows, thumbnails = self._take_pending()
            n = self.rows_per_segment
            self._write(rows.take(slice(0, n)), thumbnails[:n])
            if len(rows) > n:
                self.pending = [(rows.take(slice(n, None)), thumbnails[n:])]

    def _take_pending(self) -> tuple[IndexRows, list[bytes]]:
        rows = concat_rows([r for r, _ in self.pending])
        thumbnails = [t for _, ts in self.pending for t in ts]
        self.pending = []
        return rows, thumbnails

    def _write(self, rows: IndexRows, thumbnails: list[bytes]) -> None:
        """One segment, into this writer's staging folder (it gets its name at the commit)."""
        name = f"part_{len(self.segments):03d}"
        out = self.staging / name
        out.mkdir()
        for array in ARRAYS:
            np.save(out / f"{array}.npy", getattr(rows, array))
        (out / "video_ids.json").write_text(json.dumps(rows.video_ids))
        (out / "thumbnails.bin").write_bytes(b"".join(thumbnails))
        np.save(out / "thumbnail_offsets.npy", np.cumsum([0] + [len(t) for t in thumbnails]))
        self.segments.append({"part": name, "rows": len(rows), "removed": []})

    def close(self) -> dict:
        """Write the last segment, then commit: move the segments in, write the lists (and,
        for a build, the centroids), then the manifest of the next version; returns that
        manifest. The staging folder goes, whatever happens."""
        try:
            if self.pending:
                self._write(*self._take_pending())
            with locked(self.folder):
                return self._commit()
        finally:
            shutil.rmtree(self.staging, ignore_errors=True)
            self.claim.close()

    def _commit(self) -> dict:
        """Under the folder's lock: checks first, then the segments move in under fresh names
        (never one an earlier version or a stray file used), then lists and manifest."""
        # Read again under the lock: another change may have landed while this one encoded.
        previous = read_manifest(self.folder) if (self.folder / MANIFEST).is_file() else None
        if self.append and not self.segments:
            return previous  # nothing to add: no new version
        if self.append and previous is None:
            raise FileNotFoundError(f"{self.folder}: the index to append to is gone")
        if self.append and self.shape != (previous["max_frames"], previous["dim"]):
            raise ValueError(
                f"rows of {self.shape} do not fit an index of {previous['max_frames']} frames x "
                f"{previous['dim']} dims"
            )
        if not self.segments:
            raise ValueError("an index needs at least one video")
        number = max(_segment_numbers(self.folder), default=-1) + 1
        for segment in self.segments:
            segment["name"] = f"segment_{number:03d}"
            os.rename(self.staging / segment.pop("part"), self.folder / segment["name"])
            number += 1
        version = (previous or {}).get("version", 0) + 1
        if self.append:
            manifest = {
                **previous,
                "segments": [dict(s, removed=list(s["removed"])) for s in previous["segments"]],
            }
            centroids = np.load(self.folder / manifest["centroids"])
            new_ids = {v for s in self.segments for v in segment_ids(self.folder / s["name"])}
            self.replaced = sorted(_mark_removed(self.folder, manifest["segments"], new_ids))
        else:
            manifest = {
                **self.info,
                "max_frames": self.shape[0],
                "dim": self.shape[1],
                "frames_dtype": "float16",
                "segments": [],
                "created": time.strftime("%Y-%m-%d %H:%M:%S"),
            }
            pooled = np.concatenate(
                [
                    np.load(self.folder / s["name"] / "pooled.npy", mmap_mode="r")
                    for s in self.segments
                ]
            )
            centroids = train_centroids(pooled, num_lists(len(pooled)))
            manifest["centroids"] = f"centroids_v{version:06d}.npy"
            np.save(self.folder / manifest["centroids"], centroids)
        for segment in self.segments:
            path = self.folder / segment["name"]
            np.save(
                path / "lists.npy",
                nearest_centroid(np.load(path / "pooled.npy", mmap_mode="r"), centroids),
            )
        manifest["segments"] += self.segments
        manifest.update(version=version, lists=len(centroids), count=_live(manifest["segments"]))
        return _write_manifest(self.folder, manifest, previous)


def segment_ids(path: Path) -> list[str]:
    return json.loads((path / "video_ids.json").read_text())


def _live(segments: list[dict]) -> int:
    return sum(s["rows"] - len(s["removed"]) for s in segments)


def _mark_removed(folder: Path, segments: list[dict], video_ids: set[str]) -> set[str]:
    """Mark the live rows of ``video_ids`` removed in ``segments`` (in place); returns the ids found."""
    found = set()
    for segment in segments:
        removed, ids = set(segment["removed"]), segment_ids(folder / segment["name"])
        rows = [r for r, v in enumerate(ids) if v in video_ids and r not in removed]
        if rows:
            found |= {ids[r] for r in rows}
            segment["removed"] = sorted(removed | set(rows))
    return found


def remove_videos(folder: str | Path, video_ids: list[str]) -> tuple[dict, list[str]]:
    """Remove ``video_ids`` from the index (the next version); returns (manifest, the ids it
    did not hold). Nothing changes when it holds none of them."""
    folder = Path(folder)
    with locked(folder):
        previous = read_manifest(folder)
        segments = [dict(s, removed=list(s["removed"])) for s in previous["segments"]]
        found = _mark_removed(folder, segments, set(video_ids))
        missing = sorted(set(video_ids) - found)
        if not found:
            return previous, missing
        manifest = {
            **previous,
            "segments": segments,
            "version": previous["version"] + 1,
            "count": _live(segments),
        }
        return _write_manifest(folder, manifest, previous), missing


# -- reading ---------------------------------------------------------------------------------


def read_manifest(folder: str | Path) -> dict:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{folder} is not a finished index: no {MANIFEST}")
    manifest = json.loads(path.read_text())
    manifest.setdefault("version", 0)  # an index written before versions
    if "shards" in manifest:  # an index written before segments had their name
        manifest["segments"] = manifest.pop("shards")
    for segment in manifest["segments"]:
        segment.setdefault("removed", [])
    return manifest


def serving_parts(manifest: dict, shard: int, num_shards: int) -> list[tuple[str, int, int]]:
    """What serving shard ``shard`` of ``num_shards`` holds: ``(segment, first row,
    last row)``, part ``shard`` of each segment."""
    parts = []
    for j, segment in enumerate(manifest["segments"]):
        # Even parts; the remainder's extra rows go to different shards for each segment.
        lo, hi = even_ranges(segment["rows"], num_shards, rotate=j)[shard]
        if hi > lo:
            parts.append((segment["name"], lo, hi))
    return parts


def read_part(folder: Path, name: str, lo: int, hi: int) -> IndexRows:
    """Rows ``[lo, hi)`` of one segment (copied out of memory maps), with their lists."""
    path = folder / name
    lists = np.load(path / "lists.npy")[lo:hi] if (path / "lists.npy").is_file() else None
    return IndexRows(
        segment_ids(path)[lo:hi],
        **{
            array: np.array(np.load(path / f"{array}.npy", mmap_mode="r")[lo:hi])
            for array in ARRAYS
        },
        lists=lists,
    )


class IndexReader:
    """The live rows a serving shard holds, version after version. Segments never
    change, so the parts read for one version are kept for the next: a new version reads only
    its new parts."""

    def __init__(self, folder: str | Path, shard: int = 0, num_shards: int = 1):
        self.folder, self.shard, self.num_shards = Path(folder), shard, num_shards
        self.parts: dict[tuple[str, int, int], IndexRows] = {}

    def rows(self, manifest: dict) -> IndexRows | None:
        """This shard's live rows in ``manifest``'s version (None: it holds none)."""
        removed = {s["name"]: s["removed"] for s in manifest["segments"]}
        wanted = serving_parts(manifest, self.shard, self.num_shards)
        self.parts = {key: self.parts.get(key) or read_part(self.folder, *key) for key in wanted}
        live = []
        for name, lo, hi in wanted:
            part = self.parts[(name, lo, hi)]
            gone = [r - lo for r in removed[name] if lo <= r < hi]
            live.append(part.take(np.setdiff1d(np.arange(len(part)), gone)) if gone else part)
        live = [p for p in live if len(p)]
        return concat_rows(live) if live else None


def load_index(folder: str | Path) -> IndexRows:
    """Every live row of the index (one serving shard's view of all of it)."""
    rows = IndexReader(folder).rows(read_manifest(folder))
    if rows is None:
        raise ValueError(f"the index at {folder} holds no videos")
    return rows
