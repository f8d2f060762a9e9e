"""CLIP4Clip's four other retrieval benchmarks, read as its dataloaders read them
(``dataloaders/dataloader_{msvd,lsmdc,activitynet,didemo}_retrieval.py``).

Each reader returns a ``RetrievalSplit``: the (video id, text) pairs in CLIP4Clip's order,
and where the benchmark cuts a window out of each video, its end in seconds. The videos are
found by the caller (``jobs.data``) as CLIP4Clip finds them: anywhere below
``--features_path``, by file stem (DiDeMo: by whole file name). Which split each evaluates
on is CLIP4Clip's (``EVAL_SPLIT``).

- msvd: ``{train,val,test}_list.txt`` + ``raw-captions.pkl`` (video id -> list of word lists);
  every caption is a pair (at test time, every caption of a video is a query: the
  multi-sentence protocol). The pickle is read without running anything
  (``read_plain_pickle``).
- lsmdc: ``LSMDC16_annos_training.csv`` / ``LSMDC16_annos_val.csv`` /
  ``LSMDC16_challenge_1000_publictect.csv``, 6 tab-separated fields; each line a pair.
- activity: ``{train,val}_ids.json`` (``v_``-prefixed ids; the file stem is the id without
  ``v_``) + ``train.json`` / ``val_1.json``; a video's sentences joined into one paragraph,
  the window ``[0, ceil(duration)]``.
- didemo: ``{train,val,test}_list.txt`` + ``{train,val,test}_data.json``; a video's
  descriptions joined into one paragraph, the window ``[0, 31]`` s.
"""

from __future__ import annotations

import io
import json
import math
import pickle
from pathlib import Path

from .msrvtt import DatasetError, RetrievalSplit

# CLIP4Clip's DATALOADER_DICT: the test loader where there is one, else the val loader.
EVAL_SPLIT = {
    "msrvtt": "test",
    "msvd": "test",
    "lsmdc": "test",
    "activity": "val",
    "didemo": "test",
}
# How CLIP4Clip finds a benchmark's videos under --features_path: (walk below it, the id
# keeps the extension). MSR-VTT's loader joins ``<features_path>/<id>.mp4``.
VIDEO_LOOKUP = {
    "msrvtt": (False, False),
    "msvd": (True, False),
    "lsmdc": (True, False),
    "activity": (True, False),
    "didemo": (True, True),
}
DIDEMO_END_SECONDS = 31  # CLIP4Clip: "videos were truncated to 30 seconds during annotation"
LSMDC_FILES = {
    "train": "LSMDC16_annos_training.csv",
    "val": "LSMDC16_annos_val.csv",
    "test": "LSMDC16_challenge_1000_publictect.csv",
}
ACTIVITY_FILES = {"train": ("train_ids.json", "train.json"), "val": ("val_ids.json", "val_1.json")}


def _file(folder: Path, name: str) -> Path:
    path = Path(folder) / name
    if not path.is_file():
        raise DatasetError(f"{path}: no such file")
    return path


def _json(path: Path):
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DatasetError(f"{path}: not valid JSON ({err})") from None


def _lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines()]


class _PlainUnpickler(pickle.Unpickler):
    """An unpickler that builds plain containers and refuses every class or function."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"it names {module}.{name}")

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("it holds a persistent id")


def read_plain_pickle(path: Path):
    """A pickle of plain containers (dict, list, tuple, str, numbers), read without running
    anything: a pickle that names any class or function is refused, with one line."""
    try:
        return _PlainUnpickler(io.BytesIO(Path(path).read_bytes())).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as err:
        raise DatasetError(
            f"{path}: not a pickle of plain lists and strings ({err}); refused, nothing in it was run"
        ) from None


def _msvd_captions(path: Path) -> dict[str, list[str]]:
    """raw-captions.pkl: video id -> captions (each a list of words, joined by spaces as
    CLIP4Clip joins them; a caption given as a string is taken as it is)."""
    data = read_plain_pickle(path)
    if not isinstance(data, dict):
        raise DatasetError(
            f"{path}: expected a dict of video id -> captions, got {type(data).__name__}"
        )
    captions = {}
    for video_id, caps in data.items():
        if not isinstance(video_id, str) or not isinstance(caps, (list, tuple)):
            raise DatasetError(f"{path}: entry {video_id!r:.60} is not id -> list of captions")
        texts = []
        for cap in caps:
            if isinstance(cap, str):
                texts.append(cap)
            elif isinstance(cap, (list, tuple)) and all(isinstance(w, str) for w in cap):
                texts.append(" ".join(cap))
            else:
                raise DatasetError(f"{path}: a caption of {video_id!r:.60} is not a list of words")
        captions[video_id] = texts
    return captions


def read_msvd(data_path: str | Path, subset: str) -> RetrievalSplit:
    folder = Path(data_path)
    video_ids = [v for v in _lines(_file(folder, f"{subset}_list.txt")) if v]
    captions = _msvd_captions(_file(folder, "raw-captions.pkl"))
    missing = [v for v in video_ids if v not in captions]
    if missing:  # CLIP4Clip asserts every listed video has captions
        raise DatasetError(
            f"{folder / 'raw-captions.pkl'}: no captions for {len(missing)} video(s) of "
            f"{subset}_list.txt, e.g. {missing[0]}"
        )
    return RetrievalSplit([(v, c) for v in video_ids for c in captions[v]])


def read_lsmdc(data_path: str | Path, subset: str, report=None) -> RetrievalSplit:
    """Each line ``clip_id, start_aligned, end_aligned, start_extracted, end_extracted,
    sentence`` (tab-separated) is a pair. A line without 6 fields is skipped and, with a
    ``report``, listed (CLIP4Clip asserts instead)."""
    path = _file(Path(data_path), LSMDC_FILES[subset])
    pairs = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        fields = line.strip().split("\t")
        if len(fields) != 6:
            if line.strip() and report is not None:
                report.add(
                    "bad_annotation", path, f"{len(fields)} tab-separated fields, not 6", number
                )
            continue
        pairs.append((fields[0], fields[5]))
    return RetrievalSplit(pairs)


def read_activity(data_path: str | Path, subset: str) -> RetrievalSplit:
    """One paragraph per video (its sentences joined by spaces), in the order of the ids
    file; the window ends at ``ceil(duration)``. Ids without annotations are left out, as
    CLIP4Clip leaves them."""
    ids_name, captions_name = ACTIVITY_FILES[subset]
    folder = Path(data_path)
    pseudo_ids = list(dict.fromkeys(_json(_file(folder, ids_name))))
    annotations = _json(_file(folder, captions_name))
    if not isinstance(annotations, dict):
        raise DatasetError(f"{folder / captions_name}: expected a dict of v_<id> -> annotation")
    pairs, ends = [], {}
    for pseudo_id in pseudo_ids:
        entry = annotations.get(pseudo_id)
        if entry is None:
            continue
        if not isinstance(entry, dict) or "sentences" not in entry or "duration" not in entry:
            raise DatasetError(
                f"{folder / captions_name}: {pseudo_id} lacks 'sentences' or 'duration'"
            )
        video_id = pseudo_id[2:]
        pairs.append((video_id, " ".join(entry["sentences"])))
        ends[video_id] = int(math.ceil(float(entry["duration"])))
    return RetrievalSplit(pairs, ends)


def read_didemo(data_path: str | Path, subset: str) -> RetrievalSplit:
    """One paragraph per video of the list (its descriptions joined in the file's order), in
    the order the data file first names each video; the window is ``[0, 31]`` s."""
    folder = Path(data_path)
    listed = set(_lines(_file(folder, f"{subset}_list.txt")))
    items = _json(_file(folder, f"{subset}_data.json"))
    if not isinstance(items, list):
        raise DatasetError(f"{folder / f'{subset}_data.json'}: expected a list of annotations")
    descriptions: dict[str, list[str]] = {}
    for item in items:
        if not isinstance(item, dict) or "video" not in item or "description" not in item:
            raise DatasetError(
                f"{folder / f'{subset}_data.json'}: an entry lacks 'video' or 'description': {item!r:.120}"
            )
        if item["video"] in listed:
            descriptions.setdefault(item["video"], []).append(item["description"])
    pairs = [(video, " ".join(texts)) for video, texts in descriptions.items()]
    return RetrievalSplit(pairs, dict.fromkeys(descriptions, DIDEMO_END_SECONDS))


READERS = {"msvd": read_msvd, "lsmdc": read_lsmdc, "activity": read_activity, "didemo": read_didemo}


def read_benchmark(
    datatype: str, data_path: str | Path, subset: str, report=None
) -> RetrievalSplit:
    """The ``subset`` ("train", or ``EVAL_SPLIT[datatype]``) of a benchmark's annotations."""
    if not Path(data_path).is_dir():
        raise DatasetError(f"--data_path {data_path}: no such folder (the {datatype} annotations)")
    if datatype == "lsmdc":
        return read_lsmdc(data_path, subset, report)
    return READERS[datatype](data_path, subset)
