"""The retrieval index on disk: what ``jobs/index.py`` writes and the serving shards read
(here, below both, so that neither imports the other).

A folder with ``manifest.json``, the first stage's centroids and immutable storage shards
``shard_NNN/``, each holding ``.npy`` arrays row-aligned with its ``video_ids.json``:

- ``frames.npy``   ``[n, F, D]`` float16: the prepared frames (``Retriever.prepare_video``:
  normalised, padding zeroed), what exact WTI scoring reads;
- ``weights.npy``  ``[n, F]`` float32: the video-side WTI weights (they depend on the video only);
- ``mask.npy``     ``[n, F]`` uint8: the frame mask;
- ``pooled.npy``   ``[n, D]`` float32: one normalised vector per video for the first stage;
- ``lists.npy``    ``[n]`` int32: the inverted list (nearest centroid of ``pooled``) of each row;
- ``thumbnails.bin`` and ``thumbnail_offsets.npy``: one JPEG frame per video for the web page.

The index changes while it is served, in versions (``version`` in the manifest):

- a build writes its storage shards, trains the centroids (k-means on the pooled vectors),
  writes every shard's lists, and then the manifest;
- ``append`` writes new storage shards (lists from the same centroids), marks the rows of
  ids it replaces as removed, and writes the next manifest;
- ``remove`` only marks rows as removed (``removed``: row numbers per storage shard).

A storage shard is never changed once written. Every change ends by replacing
``manifest.json`` in one rename, so a reader sees the previous version or the next, never a
mix, and a crash before the rename leaves the previous version as it was (its stray files are
deleted by the next change). Writers take ``.lock``; a rebuild (a fresh build into the same
folder) keeps the previous version's files, which a service may still be reading, until the
change after it.

Serving shards divide the index by splitting *each storage shard* into ``num_shards`` even
contiguous parts (``serving_parts``): shard ``i`` holds part ``i`` of every storage shard, so
the shards stay balanced whatever the size of each append, a new version adds new rows to
every shard without moving any row a shard already holds, and each shard reads only its parts.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MANIFEST = "manifest.json"
CENTROIDS = "centroids.npy"
LOCK = ".lock"
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


# -- the first stage's inverted lists -------------------------------------------------------


def num_lists(count: int) -> int:
    """Inverted lists for ``count`` videos: about ``sqrt(count)`` (1,000 at 1M), each of about
    as many videos; a query probes the few best lists, whatever the index size."""
    return int(max(1, min(4096, round(np.sqrt(count)))))


def nearest_centroid(pooled: np.ndarray, centroids: np.ndarray, chunk: int = 65_536) -> np.ndarray:
    """The list of each row: its centroid of largest inner product (the pooled vectors and
    the centroids are unit vectors)."""
    import torch

    c = torch.from_numpy(np.ascontiguousarray(centroids, np.float32))
    out = np.empty(len(pooled), np.int32)
    for lo in range(0, len(pooled), chunk):
        block = torch.from_numpy(np.array(pooled[lo : lo + chunk], np.float32))
        out[lo : lo + chunk] = (block @ c.T).argmax(1).numpy()
    return out


def train_centroids(
    pooled: np.ndarray, count: int, iterations: int = 12, seed: int = 0, sample_per_list: int = 64
) -> np.ndarray:
    """Spherical k-means: ``count`` unit centroids of the pooled vectors, trained on a sample
    of ``sample_per_list`` rows per list (``[count, D]`` float32)."""
    rng = np.random.default_rng(seed)
    sample = pooled[
        np.sort(rng.choice(len(pooled), min(len(pooled), count * sample_per_list), replace=False))
    ]
    sample = np.asarray(sample, np.float32)
    centroids = sample[rng.choice(len(sample), count, replace=False)].copy()
    for _ in range(iterations):
        assigned = nearest_centroid(sample, centroids)
        sums = np.zeros_like(centroids)
        np.add.at(sums, assigned, sample)
        empty = ~np.bincount(assigned, minlength=count).astype(bool)
        sums[empty] = sample[rng.choice(len(sample), int(empty.sum()))]  # re-seed empty lists
        centroids = sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
    return centroids.astype(np.float32)


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


def _write_manifest(folder: Path, manifest: dict, previous: dict | None) -> dict:
    """Replace the manifest in one rename, then delete storage shards and centroid files
    that neither it nor the version it replaces names (stray files of a crashed change)."""
    manifest["updated"] = time.strftime("%Y-%m-%d %H:%M:%S")
    tmp = folder / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, folder / MANIFEST)
    keep = {s["name"] for m in (manifest, previous or {}) for s in m.get("shards", [])}
    keep |= {m["centroids"] for m in (manifest, previous or {}) if m.get("centroids")}
    for path in folder.iterdir():
        if (
            path.name.startswith("shard_") and path.is_dir() or path.name.startswith("centroids")
        ) and path.name not in keep:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    return manifest


class IndexWriter:
    """Writes rows into new storage shards of ``folder``, rolling over every
    ``rows_per_shard`` rows; ``close()`` makes them the next version of the index.

    ``append=False`` builds a new index (the next version replaces whatever the folder
    served); ``append=True`` adds to the existing one: a row whose id the index already holds
    replaces the old row.
    """

    def __init__(
        self,
        folder: str | Path,
        rows_per_shard: int = 50_000,
        info: dict | None = None,
        append: bool = False,
    ):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.rows_per_shard, self.info, self.append = rows_per_shard, dict(info or {}), append
        self.previous = read_manifest(self.folder) if (self.folder / MANIFEST).is_file() else None
        if append and self.previous is None:
            raise FileNotFoundError(f"{self.folder} holds no index to append to (build one first)")
        taken = [int(p.name[6:]) for p in self.folder.glob("shard_*") if p.name[6:].isdigit()]
        self.next_number = max(taken, default=-1) + 1  # never a name an earlier version used
        self.pending: list[tuple[IndexRows, list[bytes]]] = []
        self.shards: list[dict] = []
        self.shape: tuple[int, int] | None = None
        self.replaced: list[str] = []  # ids whose earlier rows an append replaced

    def add(self, rows: IndexRows, thumbnails: list[bytes] | None = None) -> None:
        rows.frames = rows.frames.astype(np.float16, copy=False)
        self.shape = tuple(rows.frames.shape[1:])
        self.pending.append((rows, thumbnails if thumbnails is not None else [b""] * len(rows)))
        while sum(len(r) for r, _ in self.pending) >= self.rows_per_shard:
            rows, thumbnails = self._take_pending()
            n = self.rows_per_shard
            self._write(rows.take(slice(0, n)), thumbnails[:n])
            if len(rows) > n:
                self.pending = [(rows.take(slice(n, None)), thumbnails[n:])]

    def _take_pending(self) -> tuple[IndexRows, list[bytes]]:
        rows = concat_rows([r for r, _ in self.pending])
        thumbnails = [t for _, ts in self.pending for t in ts]
        self.pending = []
        return rows, thumbnails

    def _write(self, rows: IndexRows, thumbnails: list[bytes]) -> None:
        name = f"shard_{self.next_number:03d}"
        self.next_number += 1
        out = self.folder / name
        out.mkdir()
        for array in ARRAYS:
            np.save(out / f"{array}.npy", getattr(rows, array))
        (out / "video_ids.json").write_text(json.dumps(rows.video_ids))
        (out / "thumbnails.bin").write_bytes(b"".join(thumbnails))
        np.save(out / "thumbnail_offsets.npy", np.cumsum([0] + [len(t) for t in thumbnails]))
        self.shards.append({"name": name, "rows": len(rows), "removed": []})

    def close(self) -> dict:
        """Write the last shard, the lists (and, for a build, the centroids), then the
        manifest of the next version; returns that manifest."""
        if self.pending:
            self._write(*self._take_pending())
        with locked(self.folder):
            # Read again under the lock: another change may have landed while this one encoded.
            previous = read_manifest(self.folder) if (self.folder / MANIFEST).is_file() else None
            version = (previous or {}).get("version", 0) + 1
            if self.append and not self.shards:
                return previous  # nothing to add: no new version
            if self.append:
                if previous is None:
                    raise FileNotFoundError(f"{self.folder}: the index to append to is gone")
                if self.shape and self.shape != (previous["max_frames"], previous["dim"]):
                    raise ValueError(
                        f"rows of {self.shape} do not fit an index of {previous['max_frames']} frames x "
                        f"{previous['dim']} dims"
                    )
                manifest = {
                    **previous,
                    "shards": [dict(s, removed=list(s["removed"])) for s in previous["shards"]],
                }
                centroids = np.load(self.folder / manifest["centroids"])
                new_ids = {v for s in self.shards for v in _ids(self.folder / s["name"])}
                self.replaced = sorted(_mark_removed(self.folder, manifest["shards"], new_ids))
            else:
                if not self.shards:
                    raise ValueError("an index needs at least one video")
                manifest = {
                    **self.info,
                    "max_frames": self.shape[0],
                    "dim": self.shape[1],
                    "frames_dtype": "float16",
                    "shards": [],
                    "created": time.strftime("%Y-%m-%d %H:%M:%S"),
                }
                pooled = np.concatenate(
                    [
                        np.load(self.folder / s["name"] / "pooled.npy", mmap_mode="r")
                        for s in self.shards
                    ]
                )
                centroids = train_centroids(pooled, num_lists(len(pooled)))
                manifest["centroids"] = f"centroids_v{version:06d}.npy"
                np.save(self.folder / manifest["centroids"], centroids)
            for shard in self.shards:
                path = self.folder / shard["name"]
                np.save(
                    path / "lists.npy",
                    nearest_centroid(np.load(path / "pooled.npy", mmap_mode="r"), centroids),
                )
            manifest["shards"] += self.shards
            manifest.update(version=version, lists=len(centroids), count=_live(manifest["shards"]))
            return _write_manifest(self.folder, manifest, previous)


def _ids(path: Path) -> list[str]:
    return json.loads((path / "video_ids.json").read_text())


def _live(shards: list[dict]) -> int:
    return sum(s["rows"] - len(s["removed"]) for s in shards)


def _mark_removed(folder: Path, shards: list[dict], video_ids: set[str]) -> set[str]:
    """Mark the live rows of ``video_ids`` removed in ``shards`` (in place); returns the ids found."""
    found = set()
    for shard in shards:
        removed, ids = set(shard["removed"]), _ids(folder / shard["name"])
        rows = [r for r, v in enumerate(ids) if v in video_ids and r not in removed]
        if rows:
            found |= {ids[r] for r in rows}
            shard["removed"] = sorted(removed | set(rows))
    return found


def remove_videos(folder: str | Path, video_ids: list[str]) -> tuple[dict, list[str]]:
    """Remove ``video_ids`` from the index (the next version); returns (manifest, the ids it
    did not hold). Nothing changes when it holds none of them."""
    folder = Path(folder)
    with locked(folder):
        previous = read_manifest(folder)
        shards = [dict(s, removed=list(s["removed"])) for s in previous["shards"]]
        found = _mark_removed(folder, shards, set(video_ids))
        missing = sorted(set(video_ids) - found)
        if not found:
            return previous, missing
        manifest = {
            **previous,
            "shards": shards,
            "version": previous["version"] + 1,
            "count": _live(shards),
        }
        return _write_manifest(folder, manifest, previous), missing


# -- reading ---------------------------------------------------------------------------------


def read_manifest(folder: str | Path) -> dict:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{folder} is not a finished index: no {MANIFEST}")
    manifest = json.loads(path.read_text())
    manifest.setdefault("version", 0)  # an index written before versions
    for shard in manifest["shards"]:
        shard.setdefault("removed", [])
    return manifest


def slice_bounds(count: int, num_slices: int) -> list[tuple[int, int]]:
    """Split ``count`` rows into ``num_slices`` contiguous, nearly equal ranges."""
    edges = np.linspace(0, count, num_slices + 1).astype(int)
    return list(zip(edges[:-1].tolist(), edges[1:].tolist()))


def serving_parts(manifest: dict, shard: int, num_shards: int) -> list[tuple[str, int, int]]:
    """What serving shard ``shard`` of ``num_shards`` holds: ``(storage shard, first row,
    last row)``, part ``shard`` of each storage shard."""
    parts = []
    for j, storage in enumerate(manifest["shards"]):
        # Even parts; the remainder's extra rows go to different shards for each storage shard.
        base, extra = divmod(storage["rows"], num_shards)
        sizes = [base + ((i - j) % num_shards < extra) for i in range(num_shards)]
        lo = sum(sizes[:shard])
        if sizes[shard]:
            parts.append((storage["name"], lo, lo + sizes[shard]))
    return parts


def read_part(folder: Path, name: str, lo: int, hi: int) -> IndexRows:
    """Rows ``[lo, hi)`` of one storage shard (copied out of memory maps), with their lists."""
    path = folder / name
    lists = np.load(path / "lists.npy")[lo:hi] if (path / "lists.npy").is_file() else None
    return IndexRows(
        _ids(path)[lo:hi],
        **{
            array: np.array(np.load(path / f"{array}.npy", mmap_mode="r")[lo:hi])
            for array in ARRAYS
        },
        lists=lists,
    )


class IndexReader:
    """The live rows a serving shard holds, version after version. Storage shards never
    change, so the parts read for one version are kept for the next: a new version reads only
    its new parts."""

    def __init__(self, folder: str | Path, shard: int = 0, num_shards: int = 1):
        self.folder, self.shard, self.num_shards = Path(folder), shard, num_shards
        self.parts: dict[tuple[str, int, int], IndexRows] = {}

    def rows(self, manifest: dict) -> IndexRows | None:
        """This shard's live rows in ``manifest``'s version (None: it holds none)."""
        removed = {s["name"]: s["removed"] for s in manifest["shards"]}
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


class Thumbnails:
    """Video id -> JPEG bytes, read from the index's storage shards (never from a path a
    client names: the id is only a key into this table). ``refresh()`` follows new versions."""

    def __init__(self, folder: str | Path):
        self.folder, self.version, self.stamp, self.where = Path(folder), None, None, {}
        self.refresh()

    def refresh(self) -> None:
        """Follow the manifest if it was replaced since the last look (one ``stat``)."""
        stamp = (self.folder / MANIFEST).stat().st_mtime_ns
        if stamp == self.stamp:
            return
        manifest = read_manifest(self.folder)
        self.stamp = stamp
        if manifest["version"] == self.version:
            return
        where: dict[str, tuple[Path, int, int]] = {}
        for shard in manifest["shards"]:
            path, removed = self.folder / shard["name"], set(shard["removed"])
            offsets = np.load(path / "thumbnail_offsets.npy")
            for i, video_id in enumerate(_ids(path)):
                if offsets[i + 1] > offsets[i] and i not in removed:
                    where[video_id] = (
                        path / "thumbnails.bin",
                        int(offsets[i]),
                        int(offsets[i + 1]),
                    )
        self.where, self.version = where, manifest["version"]

    def get(self, video_id: str) -> bytes | None:
        if video_id not in self.where:
            return None
        path, lo, hi = self.where[video_id]
        try:
            with path.open("rb") as f:
                f.seek(lo)
                return f.read(hi - lo)
        except FileNotFoundError:  # a storage shard of a version two changes back
            return None
