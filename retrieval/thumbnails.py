"""The index's thumbnails: one JPEG frame per video, stored in each segment beside its rows
(``retrieval.store``), for the web page."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .store import MANIFEST, read_manifest, segment_ids


class Thumbnails:
    """Video id -> JPEG bytes, read from the index's segments (never from a path a
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
        for segment in manifest["segments"]:
            path, removed = self.folder / segment["name"], set(segment["removed"])
            offsets = np.load(path / "thumbnail_offsets.npy")
            for i, video_id in enumerate(segment_ids(path)):
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
        except FileNotFoundError:  # a segment of a version two changes back
            return None
