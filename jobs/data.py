"""The data side of the jobs: find (or generate) a dataset, decode it once, and hand Ray
Datasets of model-ready rows to training and evaluation.

Two steps per model, so that the tokenizer and the model config can come in between (from
the flags, or from a checkpoint): the source (``msrvtt_files`` + the split readers, or
``vqa_root`` + ``vqa_questions``) finds the annotations or generates the built-in
synthetic data, in the real layouts; ``retrieval_data`` / ``vqa_data`` decode the videos
once and build the datasets. The same readers run on the synthetic sets as on the real
ones. Each model's recipe (``jobs/recipes/``) calls its pair with the flags' values.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import ray

from cluster import wait_until_released
from cluster.ray_private import blocks_as_dataset
from ingest.clips import clip_ids, read_clips, update_clips
from ingest.datasets import caption_clip_dataset, qa_dataset
from ingest.msrvtt import MsrvttSplit
from ingest.qa import answer_types, load_labels, read_qa
from ingest.report import Report
from ingest.video import ClipSpec, find_videos
from models import tokenize

COMPLETE = ".complete"  # written last: a generation that was interrupted is redone
# Model-ready rows are kept in Ray's object store when they fit in this many bytes, so that
# epochs after the first do not redo normalisation; larger sets stream every epoch.
MATERIALIZE_BYTES = 2 << 30


ROWS_PER_BLOCK = 256  # few large blocks: each block costs the training iterator a round trip


def _keep_if_small(ds: ray.data.Dataset, num_rows: int, bytes_per_row: int) -> ray.data.Dataset:
    if num_rows * bytes_per_row > MATERIALIZE_BYTES:
        return ds
    wait_until_released()  # the previous stage's pool may still hold the CPUs
    return blocks_as_dataset(ds, max(1, num_rows // ROWS_PER_BLOCK))


class DataError(ValueError):
    """Data that cannot be used as asked; the message says why (exit code 2, no traceback)."""


# --- MSR-VTT layout (retrieval) ---------------------------------------------------------


@dataclass
class MsrvttFiles:
    train_csv: Path
    val_csv: Path
    data_path: Path  # MSRVTT_data.json
    features_path: Path  # folder of videos
    cache_dir: Path  # where decoded clips are kept


def msrvtt_files(
    train_csv: str | None,
    val_csv: str | None,
    data_path: str | None,
    features_path: str | None,
    cache_dir: str,
    synthetic_dir: str,
    synthetic_train: int,
    synthetic_test: int,
) -> MsrvttFiles:
    """The user's MSR-VTT files (decoded clips cached under ``cache_dir``), or the synthetic
    corpus under ``synthetic_dir`` (generated if absent)."""
    given = [train_csv, val_csv, data_path, features_path]
    if any(given):
        if not all(given):
            raise DataError(
                "MSR-VTT needs all of --train_csv, --val_csv, --data_path and --features_path"
            )
        for path in given:
            if not Path(path).exists():
                raise DataError(f"{path}: no such file or folder")
        return MsrvttFiles(*(Path(p) for p in given), cache_dir=Path(cache_dir))
    root = Path(synthetic_dir) / f"msrvtt_{synthetic_train}x{synthetic_test}"
    if not (root / COMPLETE).is_file():
        from ingest.synthetic import make_msrvtt

        print(
            f"generating the synthetic MSR-VTT-layout corpus under {root} "
            f"({synthetic_train} train + {synthetic_test} test videos, once)",
            flush=True,
        )
        make_msrvtt(root, num_train=synthetic_train, num_test=synthetic_test)
        (root / COMPLETE).touch()
    return MsrvttFiles(
        root / "MSRVTT_train.9k.csv",
        root / "MSRVTT_JSFUSION_test.csv",
        root / "MSRVTT_data.json",
        root / "videos",
        cache_dir=root,
    )


def decoded_clips(
    video_ids: list[str], features_path: Path, spec: ClipSpec, cache_dir: Path
) -> tuple[Path, Report]:
    """Decode each video once with the Ray Data clip job: the cache folder (one per sampling
    setting) keeps every clip with the file it came from, and a later run decodes only the
    videos that are new or changed (``ingest.clips.update_clips``)."""
    found = find_videos(features_path)
    # A listed video that is not in the folder is decoded from its expected path, so that
    # the clip job reports it as missing rather than it vanishing here.
    videos = {vid: found.get(vid, features_path / f"{vid}.mp4") for vid in dict.fromkeys(video_ids)}
    key = f"clips_{spec.feature_framerate:g}fps_{spec.max_frames}f_pos{spec.slice_framepos}_{spec.image_size}px"
    out = cache_dir / key
    update = update_clips(videos, out, spec)
    print(f"clips in {out}: {update.summary()}", flush=True)
    return out, update.report


@dataclass
class RetrievalSource:
    files: MsrvttFiles
    train: MsrvttSplit  # caption-video pairs of the training split
    test: MsrvttSplit  # of the test split

    @property
    def train_texts(self) -> list[str]:
        return [caption for _, caption in self.train.pairs]


@dataclass
class RetrievalData:
    train: (
        ray.data.Dataset | None
    )  # one row per training caption with its clip (None: evaluation only)
    val: (
        ray.data.Dataset | None
    )  # one row per test caption with its clip and ``video_index`` (per-epoch validation)
    test_pairs: list[tuple[str, str]]  # (video_id, caption) of the decoded test videos
    test_video_ids: list[str]  # ``video_index`` -> video id
    test_clips: ray.data.Dataset  # the decoded test videos (the clip job's rows)
    clips: ray.data.Dataset  # every decoded clip, for the retrieval index
    num_train_rows: int
    report: Report


def retrieval_data(
    source: RetrievalSource, spec: ClipSpec, tokenizer, max_words: int, training: bool = True
) -> RetrievalData:
    """Decode (once) and build the datasets; without ``training`` only the test side."""
    files, train, test = source.files, source.train, source.test
    video_ids = (
        train.video_ids + test.video_ids if training else test.video_ids
    )  # evaluation: the test videos
    clips_dir, report = decoded_clips(video_ids, files.features_path, spec, files.cache_dir)
    decoded = set(clip_ids(clips_dir, video_ids))
    train_rows = [pair for pair in train.pairs if pair[0] in decoded]
    test_pairs = [pair for pair in test.pairs if pair[0] in decoded]
    if not test_pairs or (training and not train_rows):
        raise DataError(
            f"no decodable videos for the {'test' if not test_pairs else 'training'} captions; "
            f"see {clips_dir / 'skipped.jsonl'}"
        )
    clips = read_clips(clips_dir, video_ids)
    test_video_ids = list(dict.fromkeys(video_id for video_id, _ in test_pairs))
    video_index = {video_id: i for i, video_id in enumerate(test_video_ids)}

    def test_clips_only(batch):
        keep = np.isin(batch["video_id"], test_video_ids)
        return {k: v[keep] for k, v in batch.items()}

    def tensors_only(batch):  # Ray Train's torch batches hold numbers only
        return {k: v for k, v in batch.items() if k not in ("video_id", "caption")}

    def with_video_index(batch):
        batch["video_index"] = np.array([video_index[v] for v in batch["video_id"]], np.int64)
        return tensors_only(batch)

    train_ds = val_ds = None
    if training:
        row_bytes = 4 * spec.max_frames * 3 * spec.image_size**2  # float32 pixel_values
        tokens = partial(tokenize, tokenizer, max_length=max_words)
        train_ds = caption_clip_dataset(train.pairs, clips, tokens, report, decoded)
        val_ds = caption_clip_dataset(test.pairs, clips, tokens, report, decoded)
        train_ds = _keep_if_small(train_ds.map_batches(tensors_only), len(train_rows), row_bytes)
        val_ds = _keep_if_small(val_ds.map_batches(with_video_index), len(test_pairs), row_bytes)
    return RetrievalData(
        train=train_ds,
        val=val_ds,
        test_pairs=test_pairs,
        test_video_ids=test_video_ids,
        test_clips=clips.map_batches(test_clips_only),
        clips=clips,
        num_train_rows=len(train_rows),
        report=report,
    )


# --- PitVQA layouts (VQA) ---------------------------------------------------------------


def vqa_root(
    dataset: str, data_root: str | None, synthetic_dir: str, synthetic_videos: int
) -> Path:
    """``data_root``, or the synthetic PitVQA-layout tree (generated if absent)."""
    if data_root:
        root = Path(data_root)
        if not root.is_dir():
            raise DataError(f"{root}: no such dataset folder")
        return root
    if dataset != "pit24":
        raise DataError(
            f"--dataset {dataset} needs --data_root (only pit24 has built-in synthetic data)"
        )
    root = Path(synthetic_dir) / f"pit24_v2_{synthetic_videos}"  # v2: first = the large instrument
    if not (root / COMPLETE).is_file():
        from ingest.synthetic import make_pit24

        print(
            f"generating the synthetic PitVQA-layout tree under {root} ({synthetic_videos} videos, once)",
            flush=True,
        )
        make_pit24(root, videos=synthetic_videos)
        (root / COMPLETE).touch()
    return root


def vqa_questions(
    dataset: str, root: Path, report_dir: str
) -> tuple[list[dict], list[dict], Report]:
    """(train rows, validation rows, report of skipped lines and images; written to
    ``report_dir/skipped_qa.jsonl`` when it has any)."""
    report = Report()
    train, val = read_qa(dataset, root, "train", report), read_qa(dataset, root, "val", report)
    if report.records:
        report.write(Path(report_dir) / "skipped_qa.jsonl")
    print(
        f"{dataset}: {len(train)} training and {len(val)} validation questions; "
        f"{report.summary('read')}",
        flush=True,
    )
    if not train or not val:
        raise DataError(
            f"{root}: no usable {'training' if not train else 'validation'} questions "
            f"for {dataset} (expected layout: see the README)"
        )
    return train, val, report


@dataclass
class VQASource:
    root: Path
    train_rows: list[dict]
    val_rows: list[dict]
    report: Report

    @property
    def train_texts(self) -> list[str]:
        return [row["question"] for row in self.train_rows]


@dataclass
class VQAData:
    train: ray.data.Dataset | None  # None: evaluation only
    val: ray.data.Dataset
    labels: list[str]
    train_labels: np.ndarray  # for the majority-class baseline
    num_train_rows: int
    report: Report
    class_types: list[str]  # the question type of each answer class (per-type accuracy)


def vqa_data(
    dataset: str,
    source: VQASource,
    tokenizer,
    image_size: int,
    max_length: int,
    training: bool = True,
) -> VQAData:
    tokens = partial(tokenize, tokenizer, max_length=max_length)

    def rows_dataset(rows):
        return _keep_if_small(
            qa_dataset(rows, tokens, image_size), len(rows), 4 * 3 * image_size**2
        )

    return VQAData(
        train=rows_dataset(source.train_rows) if training else None,
        val=rows_dataset(source.val_rows),
        labels=load_labels(dataset),
        train_labels=np.array([row["label"] for row in source.train_rows]),
        num_train_rows=len(source.train_rows),
        report=source.report,
        class_types=answer_types(dataset),
    )
