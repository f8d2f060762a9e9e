"""Bad input is skipped, never silently: every skip becomes a record in a report."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class Skipped:
    """One skipped input: what kind of problem, where, and why."""

    kind: str  # e.g. missing_video, bad_video, short_video, missing_image, bad_qa_line, unknown_answer
    path: str
    reason: str
    line: int | None = None


class Report:
    """Collects ``Skipped`` records; writes them as JSON lines and prints a count.
    ``nodes``: videos decoded per Ray node id, when a decoding job filled it in."""

    def __init__(self, records: list[Skipped] | None = None, nodes: dict[str, int] | None = None):
        self.records = list(records or [])
        self.nodes = dict(nodes or {})

    def add(self, kind: str, path: str, reason: str, line: int | None = None) -> None:
        self.records.append(Skipped(kind, str(path), reason, line))

    def counts(self) -> dict[str, int]:
        return dict(Counter(r.kind for r in self.records))

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(asdict(r)) + "\n" for r in self.records))
        return path

    @classmethod
    def read(cls, path: str | Path) -> Report:
        lines = Path(path).read_text().splitlines()
        return cls([Skipped(**json.loads(line)) for line in lines if line.strip()])

    def summary(self, what: str) -> str:
        where = f" (decoded on {len(self.nodes)} nodes)" if len(self.nodes) > 1 else ""
        if not self.records:
            return f"{what}: nothing skipped{where}"
        parts = ", ".join(f"{n} {kind}" for kind, n in sorted(self.counts().items()))
        return f"{what}: skipped {len(self.records)} ({parts}){where}"
