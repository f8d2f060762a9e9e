"""PNG plots a person would rather see than read: loss/metric curves, recall curves,
confusion matrices. Headless (Agg); every function writes one file and returns its path."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_history(history: list[dict], path: str | Path, metric: str) -> Path:
    """Training loss and one validation metric per epoch (``history.jsonl`` rows)."""
    epochs = [row["epoch"] for row in history]
    fig, loss_axis = plt.subplots(figsize=(6, 4))
    loss_axis.plot(
        epochs, [row["train_loss"] for row in history], "o-", color="tab:blue", label="train loss"
    )
    loss_axis.set_xlabel("epoch")
    loss_axis.set_ylabel("train loss", color="tab:blue")
    values = [row.get(metric) for row in history]
    if any(v is not None for v in values):
        metric_axis = loss_axis.twinx()
        metric_axis.plot(epochs, values, "s-", color="tab:orange")
        metric_axis.set_ylabel(f"validation {metric}", color="tab:orange")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def plot_recall_curve(
    t2v_ranks: np.ndarray, v2t_ranks: np.ndarray, path: str | Path, max_k: int = 50
) -> Path:
    """Recall@K for K = 1..max_k, both directions, with the chance line."""
    ks = np.arange(1, max_k + 1)
    fig, axis = plt.subplots(figsize=(6, 4))
    for ranks, label in ((t2v_ranks, "text to video"), (v2t_ranks, "video to text")):
        axis.plot(ks, [100 * np.mean(np.asarray(ranks) <= k) for k in ks], label=label)
    num_videos = max(len(v2t_ranks), 1)
    axis.plot(ks, 100 * np.minimum(ks / num_videos, 1), "--", color="grey", label="chance")
    axis.set_xlabel("K")
    axis.set_ylabel("recall@K (%)")
    axis.set_ylim(0, 100)
    axis.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def plot_confusion(confusion: np.ndarray, labels: list[str], path: str | Path) -> Path:
    """Row-normalised confusion matrix over the classes that occur (truth or prediction)."""
    present = np.nonzero(confusion.sum(0) + confusion.sum(1))[0]
    matrix = confusion[np.ix_(present, present)].astype(float)
    matrix /= np.maximum(matrix.sum(1, keepdims=True), 1)
    size = max(4, 0.3 * len(present) + 2)
    fig, axis = plt.subplots(figsize=(size, size))
    axis.imshow(matrix, cmap="Blues", vmin=0, vmax=1)
    names = [labels[i] for i in present]
    axis.set_xticks(range(len(present)), names, rotation=90, fontsize=7)
    axis.set_yticks(range(len(present)), names, fontsize=7)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def plot_explanation(
    frames: np.ndarray, tokens: list[str], parts: dict, path: str | Path, title: str = ""
) -> Path:
    """What one WTI score is made of (``models.wti.explain_pair`` parts as arrays, cut to the
    real tokens and frames): the frames on top with their weights, the words x frames
    similarity heat map with each word's best frame boxed and its weight, and the sum."""
    sim = np.asarray(parts["similarity"])
    n_tokens, n_frames = sim.shape
    fig = plt.figure(figsize=(max(6.0, 1.3 * n_frames + 2.5), 1.6 + 0.32 * n_tokens + 1.6))
    grid = fig.add_gridspec(2, n_frames, height_ratios=[1.3, max(1.0, 0.32 * n_tokens)])
    for j in range(n_frames):
        axis = fig.add_subplot(grid[0, j])
        axis.imshow(frames[j])
        axis.set_title(f"f{j + 1}  w={parts['frame_weights'][j]:.2f}", fontsize=8)
        axis.axis("off")
    heat = fig.add_subplot(grid[1, :])
    limit = max(1e-6, float(np.abs(sim).max()))
    image = heat.imshow(sim, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
    for i in range(n_tokens):
        best = int(parts["token_best_frame"][i])
        heat.add_patch(
            plt.Rectangle((best - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="black", lw=1.5)
        )
        for j in range(n_frames):
            dark = abs(sim[i, j]) > 0.6 * limit
            heat.text(
                j,
                i,
                f"{sim[i, j]:.2f}",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if dark else "black",
            )
    heat.set_yticks(
        range(n_tokens), [f"{t}  w={w:.2f}" for t, w in zip(tokens, parts["token_weights"])]
    )
    heat.set_xticks(range(n_frames), [f"f{j + 1}" for j in range(n_frames)])
    heat.set_xlabel(
        f"score {parts['score']:.4f} = (text→video {parts['text_to_video']:.4f} + "
        f"video→text {parts['video_to_text']:.4f}) / 2   (boxed: each word's best frame)"
    )
    fig.colorbar(image, ax=heat, label="cosine similarity", fraction=0.03)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return Path(path)
