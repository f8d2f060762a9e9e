"""The retrieval index on disk: what ``jobs/index.py`` writes and the serving shards read
(here, below both, so that neither imports the other).

A folder with ``manifest.json`` and storage shards ``shard_NNN/``, each holding ``.npy``
arrays row-aligned with its ``video_ids.json``:

- ``frames.npy``   ``[n, F, D]`` float16: the prepared frames (``Retriever.prepare_video``:
  normalised, padding zeroed), what exact WTI scoring reads;
- ``weights.npy``  ``[n, F]`` float32: the video-side WTI weights (they depend on the video only);
- ``mask.npy``     ``[n, F]`` uint8: the frame mask;
- ``pooled.npy``   ``[n, D]`` float32: one normalised vector per video for candidate generation;
- ``thumbnails.bin`` and ``thumbnail_offsets.npy``: one JPEG frame per video for the web page.

Arrays are memory-mapped on reading, so a serving shard reads only its own rows.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MANIFEST = "manifest.json"
ARRAYS = ("frames", "weights", "mask", "pooled")


@dataclass
class IndexRows:
    """A contiguous run of index rows, in memory."""

    video_ids: list[str]
    frames: np.ndarray  # [n, F, D] float16
    weights: np.ndarray  # [n, F] float32
    mask: np.ndarray  # [n, F] uint8
    pooled: np.ndarray  # [n, D] float32

    def __len__(self) -> int:
        return len(self.video_ids)

    def take(self, rows: slice) -> "IndexRows":
        return IndexRows(self.video_ids[rows], **{array: getattr(self, array)[rows] for array in ARRAYS})


class IndexWriter:
    """Appends rows and rolls over to a new storage shard every ``rows_per_shard`` rows."""

    def __init__(self, folder: str | Path, rows_per_shard: int = 50_000, info: dict | None = None):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / MANIFEST).unlink(missing_ok=True)  # written last: its presence means complete
        self.rows_per_shard, self.info = rows_per_shard, dict(info or {})
        self.pending: list[tuple[IndexRows, list[bytes]]] = []
        self.shards: list[dict] = []
        self.count = 0
        self.shape: tuple[int, int] | None = None

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
        name = f"shard_{len(self.shards):03d}"
        out = self.folder / name
        out.mkdir(exist_ok=True)
        for array in ARRAYS:
            np.save(out / f"{array}.npy", getattr(rows, array))
        (out / "video_ids.json").write_text(json.dumps(rows.video_ids))
        (out / "thumbnails.bin").write_bytes(b"".join(thumbnails))
        np.save(out / "thumbnail_offsets.npy", np.cumsum([0] + [len(t) for t in thumbnails]))
        self.shards.append({"name": name, "first": self.count, "rows": len(rows)})
        self.count += len(rows)

    def close(self) -> dict:
        """Write the last shard and the manifest; returns the manifest."""
        if self.pending:
            self._write(*self._take_pending())
        if not self.count:
            raise ValueError("an index needs at least one video")
        manifest = {**self.info, "count": self.count, "max_frames": self.shape[0], "dim": self.shape[1],
                    "frames_dtype": "float16", "shards": self.shards, "created": time.strftime("%Y-%m-%d %H:%M:%S")}
        (self.folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        return manifest


def concat_rows(parts: list[IndexRows]) -> IndexRows:
    return IndexRows(
        video_ids=[v for p in parts for v in p.video_ids],
        **{array: np.concatenate([getattr(p, array) for p in parts]) for array in ARRAYS},
    )


def read_manifest(folder: str | Path) -> dict:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{folder} is not a finished index: no {MANIFEST}")
    return json.loads(path.read_text())


def slice_bounds(count: int, num_slices: int) -> list[tuple[int, int]]:
    """Split ``count`` rows into ``num_slices`` contiguous, nearly equal ranges."""
    edges = np.linspace(0, count, num_slices + 1).astype(int)
    return list(zip(edges[:-1].tolist(), edges[1:].tolist()))


def load_rows(folder: str | Path, first: int, last: int) -> IndexRows:
    """Rows ``[first, last)`` of the index, read through memory maps of the shards they span."""
    folder = Path(folder)
    parts = []
    for shard in read_manifest(folder)["shards"]:
        lo, hi = max(first, shard["first"]), min(last, shard["first"] + shard["rows"])
        if lo >= hi:
            continue
        path, a, b = folder / shard["name"], lo - shard["first"], hi - shard["first"]
        ids = json.loads((path / "video_ids.json").read_text())[a:b]
        parts.append(IndexRows(ids, **{array: np.array(np.load(path / f"{array}.npy", mmap_mode="r")[a:b])
                                       for array in ARRAYS}))
    if not parts:
        raise ValueError(f"rows {first}-{last} are not in the index at {folder}")
    return concat_rows(parts)


class Thumbnails:
    """Video id -> JPEG bytes, read from the index's storage shards (never from a path a
    client names: the id is only a key into this table)."""

    def __init__(self, folder: str | Path):
        folder = Path(folder)
        self.where: dict[str, tuple[Path, int, int]] = {}
        for shard in read_manifest(folder)["shards"]:
            path = folder / shard["name"]
            offsets = np.load(path / "thumbnail_offsets.npy")
            for i, video_id in enumerate(json.loads((path / "video_ids.json").read_text())):
                if offsets[i + 1] > offsets[i]:
                    self.where[video_id] = (path / "thumbnails.bin", int(offsets[i]), int(offsets[i + 1]))

    def get(self, video_id: str) -> bytes | None:
        if video_id not in self.where:
            return None
        path, lo, hi = self.where[video_id]
        with path.open("rb") as f:
            f.seek(lo)
            return f.read(hi - lo)
