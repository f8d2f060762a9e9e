"""MSR-VTT as CLIP4Clip and DRL read it: train/test CSVs and ``MSRVTT_data.json``.

Two json layouts exist in the wild and both load:
- CLIP4Clip's ``{"sentences": [{"video_id", "caption"}, ...], "videos": [...]}``;
- Frozen-in-Time's ``{"annotations": [{"image_id", "caption"}, ...], "images": [...]}``
  (DRL's README has users rename it, and DRL's loader then dies with KeyError 'sentences').
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

LAYOUTS = {"sentences": "video_id", "annotations": "image_id"}


class DatasetError(ValueError):
    """Input that cannot be read as the dataset it claims to be; the message says why."""


def read_captions(json_path: str | Path) -> dict[str, list[str]]:
    """``video_id -> [captions]`` from either json layout."""
    json_path = Path(json_path)
    try:
        data = json.loads(json_path.read_text())
    except FileNotFoundError:
        raise DatasetError(f"{json_path}: no such file") from None
    except json.JSONDecodeError as err:
        raise DatasetError(f"{json_path}: not valid JSON ({err})") from None
    keys = sorted(data) if isinstance(data, dict) else type(data).__name__
    for list_key, id_key in LAYOUTS.items():
        if isinstance(data, dict) and isinstance(data.get(list_key), list):
            captions: dict[str, list[str]] = {}
            for item in data[list_key]:
                if not isinstance(item, dict) or id_key not in item or "caption" not in item:
                    raise DatasetError(
                        f"{json_path}: an entry of '{list_key}' lacks '{id_key}' or 'caption': {item!r:.200}"
                    )
                captions.setdefault(str(item[id_key]), []).append(str(item["caption"]))
            return captions
    raise DatasetError(
        f"{json_path}: unknown MSR-VTT json layout; found keys {keys}. Accepted: "
        "CLIP4Clip's {'sentences': [{'video_id', 'caption'}], 'videos': [...]} or "
        "Frozen-in-Time's {'annotations': [{'image_id', 'caption'}], 'images': [...]}"
    )


def _read_csv(path: str | Path, required: tuple[str, ...]) -> list[dict[str, str]]:
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such file")
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    missing = [c for c in required if rows and c not in rows[0]] or ([] if rows else list(required))
    if missing:
        raise DatasetError(f"{path}: needs column(s) {missing}")
    return rows


@dataclass
class RetrievalSplit:
    """Text-video pairs of one split of a retrieval benchmark: ``pairs[i] = (video_id,
    text)``; ``ends``: a video's window end in seconds, where the benchmark cuts one."""

    pairs: list[tuple[str, str]]
    ends: dict[str, float] = field(default_factory=dict)

    @property
    def video_ids(self) -> list[str]:
        return list(dict.fromkeys(v for v, _ in self.pairs))


def read_train(train_csv: str | Path, json_path: str | Path) -> RetrievalSplit:
    """Every caption of every training video is its own sample (``--expand_msrvtt_sentences``)."""
    captions = read_captions(json_path)
    video_ids = [row["video_id"] for row in _read_csv(train_csv, ("video_id",))]
    return RetrievalSplit([(v, c) for v in video_ids for c in captions.get(v, [])])


def read_test(test_csv: str | Path) -> RetrievalSplit:
    """The JSFusion test list: one sentence per video, from the CSV itself."""
    rows = _read_csv(test_csv, ("video_id", "sentence"))
    return RetrievalSplit([(row["video_id"], row["sentence"]) for row in rows])
