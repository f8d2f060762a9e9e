import numpy as np
from PIL import Image

from jobs.plots import plot_confusion, plot_history, plot_recall_curve


def is_png(path):
    with Image.open(path) as image:
        return image.format == "PNG" and image.size[0] > 100 and image.size[1] > 100


def test_plots_are_written_as_png(tmp_path):
    history = [{"epoch": e, "train_loss": 2.0 / (e + 1), "t2v_R@1": 10.0 * e} for e in range(4)]
    assert is_png(plot_history(history, tmp_path / "loss.png", "t2v_R@1"))
    ranks = np.array([1, 2, 5, 30])
    assert is_png(plot_recall_curve(ranks, ranks, tmp_path / "recall.png"))
    confusion = np.array([[3, 1, 0], [0, 2, 0], [0, 0, 0]])
    assert is_png(plot_confusion(confusion, ["a", "b", "c"], tmp_path / "confusion.png"))
