"""Metrics on hand-made inputs whose answers are worked out by hand below."""

import numpy as np
import pytest

from jobs.metrics import retrieval_metrics, retrieval_ranks, vqa_metrics


def test_ranks_on_a_hand_made_matrix():
    # 3 videos; texts 0,1 describe video 0, text 2 video 1, text 3 video 2.
    sim = np.array(
        [
            [0.9, 0.1, 0.2],  # video 0 first              -> t2v rank 1
            [0.3, 0.5, 0.4],  # video 0 third              -> rank 3
            [0.8, 0.7, 0.1],  # video 1 second             -> rank 2
            [0.2, 0.6, 0.6],  # tie with video 1: in favour -> rank 1
        ]
    )
    t2v, v2t = retrieval_ranks(sim, np.array([0, 0, 1, 2]))
    assert t2v.tolist() == [1, 3, 2, 1]
    # v2t ranks texts within a video's column; a video keeps its best caption's rank.
    # Column 0 = [0.9, 0.3, 0.8, 0.2]: text 0 first -> 1. Column 1 = [0.1, 0.5, 0.7, 0.6]:
    # text 2 first -> 1. Column 2 = [0.2, 0.4, 0.1, 0.6]: text 3 first -> 1.
    assert v2t.tolist() == [1, 1, 1]
    sim[0, 0] = 0.75  # column 0 = [0.75, 0.3, 0.8, 0.2]: its captions are now 2nd and 3rd
    assert retrieval_ranks(sim, np.array([0, 0, 1, 2]))[1].tolist() == [2, 1, 1]


def test_metrics_from_ranks():
    sim = -np.abs(np.subtract.outer(np.arange(20), np.arange(20))).astype(float)  # diagonal best
    sim[0] = -np.arange(20)[::-1]  # text 0's video 0 is now last
    m = retrieval_metrics(sim, np.arange(20))
    assert m["t2v"]["R@1"] == pytest.approx(95.0)
    assert m["t2v"]["MnR"] == pytest.approx((19 * 1 + 20) / 20)
    assert m["t2v"]["MdR"] == 1.0
    assert m["num_texts"] == 20 and m["num_videos"] == 20 and m["chance_R@1"] == 5.0


def test_vqa_metrics_by_hand():
    # classes 0..3; class 3 never appears; class 2 is never predicted.
    y_true = [0, 0, 1, 1, 2]
    y_pred = [0, 1, 1, 1, 0]
    m, confusion = vqa_metrics(y_true, y_pred, num_classes=4, train_labels=[1, 1, 1, 0])
    assert confusion[0].tolist() == [1, 1, 0, 0] and confusion[2].tolist() == [1, 0, 0, 0]
    assert m["acc"] == pytest.approx(3 / 5)
    # precision: c0 1/2, c1 2/3, c2 undefined -> 1 (reference) or 0
    assert m["precision"] == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    assert m["precision_zero_division_0"] == pytest.approx((1 / 2 + 2 / 3 + 0) / 3)
    # recall: c0 1/2, c1 2/2, c2 0/1
    assert m["recall"] == pytest.approx((1 / 2 + 1 + 0) / 3)
    f1 = [2 * (1 / 2) * (1 / 2) / 1, 2 * (2 / 3) * 1 / (2 / 3 + 1), 0.0]
    assert m["f1"] == pytest.approx(sum(f1) / 3)
    assert m["balanced_acc"] == pytest.approx((1 / 2 + 1 + 0) / 3)
    assert m["majority_acc"] == pytest.approx(2 / 5)  # training majority is class 1


def test_per_type_accuracy_against_each_types_own_majority():
    """Hand-worked: pit24 classes 0-14 are steps, 15-18 phases, 40-44 positions. Training
    answers: steps mostly 3, phases mostly 16. Validation: 3 step questions (2 right, one
    of them is 3), 2 phase questions (both right, none is 16), 1 position question."""
    from ingest.qa import answer_types

    train = [3, 3, 1, 16, 16, 15, 40]
    y_true = [3, 1, 2, 15, 17, 41]
    y_pred = [3, 1, 0, 15, 17, 42]
    out, _ = vqa_metrics(y_true, y_pred, 59, train, answer_types("pit24"))
    assert out["per_type"] == {
        "step": {"acc": 2 / 3, "majority_acc": 1 / 3, "num_questions": 3},
        "phase": {"acc": 1.0, "majority_acc": 0.0, "num_questions": 2},
        "position": {"acc": 0.0, "majority_acc": 0.0, "num_questions": 1},
    }
    assert answer_types("pit24").count("instrument") == 18 and len(answer_types("endo18")) == 18
