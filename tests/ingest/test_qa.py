"""pit24 and endo18 trees with every fault the readers must survive."""

import numpy as np
import pytest
from PIL import Image

from ingest.qa import load_labels, read_qa
from ingest.report import Report


def image(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path)


def qa(path, lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def test_labels_match_the_reference_counts():
    assert len(load_labels("pit24")) == 59 and load_labels("pit24")[0] == "nasal_corridor_creation"
    assert len(load_labels("endo18")) == 18 and load_labels("endo18")[-1] == "right-bottom"


def test_pit24_tree_with_every_fault(tmp_path):
    root = tmp_path
    image(root / "images/video_01/00000.png")
    qa(
        root / "QA/video_01/00000.txt",
        [
            "What is the surgical phase?|sellar",
            "",
            "a line without a separator",
            "What is the first instrument?|no_visible_instrument",  # dropped by the reference loader
            "What is the second instrument?|laser_sword",  # not a label
            "Where is the suction?|top-left",
        ],
    )
    qa(
        root / "QA/video_01/00001.txt", ["What is the surgical phase?|closure"]
    )  # its image is missing
    image(root / "images/video_02/00000.png")
    qa(root / "QA/video_02/00000.txt", ["What is the surgical step?|sellotomy"])
    report = Report()
    train = read_qa("pit24", root, "train", report)
    val = read_qa("pit24", root, "val", report)
    labels = load_labels("pit24")
    assert [(r["answer"], labels[r["label"]]) for r in train] == [
        ("sellar", "sellar"),
        ("top-left", "top-left"),
    ]
    assert [r["answer"] for r in val] == ["sellotomy"]  # video 02 is validation
    assert report.counts() == {"bad_qa_line": 1, "unknown_answer": 1, "missing_image": 1}
    unknown = next(r for r in report.records if r.kind == "unknown_answer")
    assert unknown.path.endswith("QA/video_01/00000.txt") and unknown.line == 5
    bad = next(r for r in report.records if r.kind == "bad_qa_line")
    assert bad.line == 3
    report.write(tmp_path / "skipped.jsonl")
    assert len((tmp_path / "skipped.jsonl").read_text().splitlines()) == 3
    assert "skipped 3" in report.summary("pit24")


def test_endo18_tree(tmp_path):
    root = tmp_path
    image(root / "seq_2/left_fr/frame000.png")
    qa(
        root / "seq_2/vqa/Classification/frame000_QA.txt",
        [
            "What organ is being operated?|kidney",
            "What is the state of monopolar curved scissors?|Cutting",
            "Where is the tool?|somewhere",
        ],
    )
    qa(
        root / "seq_2/vqa/Classification/frame001_QA.txt", ["What organ is being operated?|kidney"]
    )  # no image
    image(root / "seq_1/left_fr/frame005.png")
    qa(root / "seq_1/vqa/Classification/frame005_QA.txt", ["Where is the clip applier?|left-top"])
    report = Report()
    train = read_qa("endo18", root, "train", report)
    val = read_qa("endo18", root, "val", report)
    assert [r["answer"] for r in train] == ["kidney", "Cutting"]
    assert train[0]["image"].endswith("seq_2/left_fr/frame000.png")
    assert [r["answer"] for r in val] == ["left-top"]
    assert report.counts() == {"unknown_answer": 1, "missing_image": 1}


def test_missing_root_is_one_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such dataset folder"):
        read_qa("pit24", tmp_path / "nope", "train", Report())
