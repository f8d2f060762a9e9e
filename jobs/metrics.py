"""Evaluation metrics, as the papers report them.

Retrieval (CLIP4Clip / DRL): R@1/5/10 in percent, median and mean rank, text-to-video and
video-to-text. VQA (PitVQA, with scikit-learn as the reference): accuracy, macro precision/recall/F1 (``zero_division=1`` as
the reference, and 0 beside it), balanced accuracy, and the majority-class baseline.
"""

from __future__ import annotations

import warnings

import numpy as np

TIE_RULE = "optimistic: a tie ranks the true item first (CLIP4Clip / DRL compute_metrics)"


def best_caption_ranks(
    text_rank: np.ndarray, text_video: np.ndarray, num_videos: int
) -> np.ndarray:
    """v2t: each video's best (lowest) caption rank, for the videos that have a caption."""
    best = np.full(num_videos, np.iinfo(np.int64).max)
    np.minimum.at(best, text_video, text_rank)
    return best[best != np.iinfo(np.int64).max]


def _recall_stats(ranks: np.ndarray) -> dict[str, float]:
    """Ranks are 1-based. Recall in percent, as the papers print them."""
    return {
        "R@1": float(100 * np.mean(ranks <= 1)),
        "R@5": float(100 * np.mean(ranks <= 5)),
        "R@10": float(100 * np.mean(ranks <= 10)),
        "MdR": float(np.median(ranks)),
        "MnR": float(np.mean(ranks)),
    }


def retrieval_ranks(sim: np.ndarray, text_video: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """1-based ranks from a ``[T, V]`` score matrix; ``text_video[t]`` is text t's video.

    t2v: the rank of each text's video among all videos. v2t: for each video, the best
    rank any of its captions gets among all texts (several captions per video). A tie
    ranks in the true item's favour, as CLIP4Clip's ``compute_metrics`` does.
    """
    sim = np.asarray(sim, dtype=np.float64)
    text_video = np.asarray(text_video)
    T, V = sim.shape
    true_t2v = sim[np.arange(T), text_video]
    t2v = 1 + (sim > true_t2v[:, None]).sum(axis=1)
    v2t = np.full(V, np.inf)
    for t in range(T):  # rank of text t among all texts, for its own video's column
        v = text_video[t]
        v2t[v] = min(v2t[v], 1 + (sim[:, v] > sim[t, v]).sum())
    return t2v, v2t[np.isfinite(v2t)].astype(np.int64)


def retrieval_metrics(sim: np.ndarray, text_video: np.ndarray) -> dict:
    """``metrics.json`` for retrieval from a full ``[T, V]`` matrix (small sets and tests;
    evaluation at scale uses ``jobs.similarity.sliced_ranks`` and ``metrics_from_ranks``)."""
    return metrics_from_ranks(*retrieval_ranks(sim, text_video), num_videos=sim.shape[1])


def metrics_from_ranks(t2v: np.ndarray, v2t: np.ndarray, num_videos: int) -> dict:
    """``metrics.json`` for retrieval: t2v and v2t recall/ranks, plus chance R@1."""
    return {
        "t2v": _recall_stats(np.asarray(t2v)),
        "v2t": _recall_stats(np.asarray(v2t)),
        "num_texts": int(len(t2v)),
        "num_videos": int(num_videos),
        "chance_R@1": 100.0 / num_videos,
        "tie_rule": TIE_RULE,
    }


def vqa_metrics(
    y_true, y_pred, num_classes: int, train_labels=None, class_types: list[str] | None = None
) -> tuple[dict, np.ndarray]:
    """(``metrics.json`` for VQA, confusion matrix ``[C, C]`` with rows = truth).

    scikit-learn's functions, as the reference calls them: macro averages over the classes
    present in ``y_true`` or ``y_pred``. ``majority_acc`` predicts the most frequent class
    of ``train_labels`` (of ``y_true`` when not given) for every question. With
    ``class_types`` (``ingest.qa.answer_types``), ``per_type`` has each question type's
    accuracy beside its own majority baseline.
    """
    from sklearn.metrics import (
        balanced_accuracy_score,
        confusion_matrix,
        precision_recall_fscore_support,
    )

    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    out = {
        "acc": float(np.mean(y_true == y_pred)),
        "num_questions": int(len(y_true)),
        "num_classes": num_classes,
    }
    for zero_division, suffix in ((1.0, ""), (0.0, "_zero_division_0")):
        precision, recall, f1, _ = precision_recall_fscore_support(
            y_true, y_pred, average="macro", zero_division=zero_division
        )
        out.update(
            {
                "precision" + suffix: float(precision),
                "recall" + suffix: float(recall),
                "f1" + suffix: float(f1),
            }
        )
    with (
        warnings.catch_warnings()
    ):  # "y_pred contains classes not in y_true": those are left out, as intended
        warnings.simplefilter("ignore", UserWarning)
        out["balanced_acc"] = float(balanced_accuracy_score(y_true, y_pred))
    reference = np.asarray(train_labels) if train_labels is not None else y_true
    majority = np.bincount(reference, minlength=num_classes).argmax()
    out["majority_acc"] = float(np.mean(y_true == majority))
    if class_types is not None:
        out["per_type"] = per_type_accuracy(y_true, y_pred, reference, class_types)
    return out, confusion_matrix(y_true, y_pred, labels=np.arange(num_classes))


def per_type_accuracy(y_true, y_pred, train_labels, class_types: list[str]) -> dict[str, dict]:
    """Accuracy per question type (the type of the true answer's class), beside that type's
    majority baseline: its most frequent training answer, given to every question of the type."""
    types = np.asarray(class_types)
    y_true, y_pred, train_labels = (np.asarray(x) for x in (y_true, y_pred, train_labels))
    out = {}
    for name in dict.fromkeys(class_types):
        rows = types[y_true] == name
        if not rows.any():
            continue
        train = train_labels[types[train_labels] == name]
        majority = np.bincount(train if len(train) else y_true[rows]).argmax()
        out[name] = {
            "acc": float(np.mean(y_pred[rows] == y_true[rows])),
            "majority_acc": float(np.mean(y_true[rows] == majority)),
            "num_questions": int(rows.sum()),
        }
    return out
