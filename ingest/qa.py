"""PitVQA (pit24) and EndoVis18-VQA (endo18) trees, read as their reference repos lay them out.

pit24: ``<root>/QA/video_XX/NAME.txt`` (``question|answer`` lines) with the frame at
``<root>/images/video_XX/NAME.png``. endo18: ``<root>/seq_N/vqa/Classification/NAME_QA.txt``
with ``<root>/seq_N/left_fr/<NAME before the first '_'>.png``. Bad lines and missing images
are skipped and reported; nothing is relabelled.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from .report import Report

SPLITS = {
    "pit24": {
        "train": [1, 3, 4, 5, 7, 8, 9, 10, 11, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 25],
        "val": [2, 6, 12, 13, 24],
    },
    "endo18": {"train": [2, 3, 4, 6, 7, 9, 10, 11, 12, 14, 15], "val": [1, 5, 16]},
}
DROPPED_ANSWERS = {"pit24": {"no_visible_instrument", "no_secondary_instrument"}, "endo18": set()}


# The question types, by answer class (a range of the label file each): PitVQA's six kinds
# of question, EndoVis18-VQA's three. Per-type accuracy is reported against each type's own
# majority baseline.
ANSWER_TYPES = {
    "pit24": (
        ("step", 15),
        ("phase", 4),
        ("instrument", 18),
        ("count", 3),
        ("position", 5),
        ("operation", 14),
    ),
    "endo18": (("organ", 1), ("action", 13), ("position", 4)),
}


def answer_types(dataset: str) -> list[str]:
    """The question type of each answer class, in the label file's order."""
    return [name for name, count in ANSWER_TYPES[dataset] for _ in range(count)]


def load_labels(dataset: str) -> list[str]:
    """The answer classes, in the reference order (59 for pit24, 18 for endo18)."""
    if dataset not in SPLITS:
        raise ValueError(f"dataset must be one of {sorted(SPLITS)}, got {dataset!r}")
    text = resources.files("ingest").joinpath("labels", f"{dataset}.txt").read_text()
    return [line.strip() for line in text.splitlines() if line.strip()]


def _qa_files(dataset: str, root: Path, split: str):
    """Yield (qa_file, image_path) for the split's sequences."""
    for number in SPLITS[dataset][split]:
        if dataset == "pit24":
            folder = root / "QA" / f"video_{number:02d}"
            for qa in sorted(folder.glob("*.txt")):
                yield qa, root / "images" / f"video_{number:02d}" / f"{qa.stem}.png"
        else:
            folder = root / f"seq_{number}" / "vqa" / "Classification"
            for qa in sorted(folder.glob("*_QA.txt")):
                yield qa, root / f"seq_{number}" / "left_fr" / f"{qa.name.split('_')[0]}.png"


def read_qa(dataset: str, root: str | Path, split: str, report: Report) -> list[dict]:
    """Rows ``{"image", "question", "answer", "label"}`` of one split; skips go to ``report``."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such dataset folder")
    labels = {name: index for index, name in enumerate(load_labels(dataset))}
    rows = []
    for qa_file, image in _qa_files(dataset, root, split):
        if not image.is_file():
            report.add("missing_image", str(image), f"image of {qa_file} not found")
            continue
        for number, line in enumerate(qa_file.read_text(errors="replace").splitlines(), start=1):
            if not line.strip():
                continue
            if "|" not in line:
                report.add("bad_qa_line", str(qa_file), f"no '|' in {line[:80]!r}", number)
                continue
            question, answer = (part.strip() for part in line.split("|", 1))
            if answer in DROPPED_ANSWERS[dataset]:
                continue  # the reference loader drops these on purpose
            if answer not in labels:
                report.add(
                    "unknown_answer",
                    str(qa_file),
                    f"answer {answer[:80]!r} is not a {dataset} label",
                    number,
                )
                continue
            rows.append(
                {
                    "image": str(image),
                    "question": question,
                    "answer": answer,
                    "label": labels[answer],
                }
            )
    return rows
