"""Pictures of a run: sample images, learning curves, confusion heatmap.

Headless: the Agg backend renders to files, no display needed. Every figure
is saved through a temporary file and a rename, so a crash leaves no broken PNG.
"""
from __future__ import annotations

import io
import os
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # files only: works without a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from minicnn.fileio import write_atomic  # noqa: E402


def save_figure(fig, path: str | os.PathLike, dpi: int = 120) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    write_atomic(path, lambda f: f.write(buffer.getvalue()))


def sample_grid(images: np.ndarray, labels, class_names: Sequence[str], path,
                rows: int = 2, cols: int = 5) -> None:
    """A rows x cols grid of uint8 (N, H, W, 3) images titled with their class."""
    fig, axes = plt.subplots(rows, cols, figsize=(2 * cols, 2.2 * rows))
    labels = np.asarray(labels).reshape(-1)
    for k, ax in enumerate(np.ravel(axes)):
        ax.axis("off")
        if k < len(images):
            ax.imshow(images[k], interpolation="nearest")
            ax.set_title(class_names[int(labels[k])], fontsize=11)
    fig.suptitle("CIFAR-10 training samples")
    save_figure(fig, path)


def learning_curve(history: dict, metric: str, path, title: str | None = None) -> None:
    """Train and validation curves of ``metric`` ("loss" or "acc") per epoch."""
    train = history[metric]
    epochs = np.arange(1, len(train) + 1)
    label = {"loss": "loss", "acc": "accuracy"}.get(metric, metric)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.plot(epochs, train, "o-", label=f"train {label}")
    if "val_" + metric in history:
        ax.plot(epochs, history["val_" + metric], "s-", label=f"validation {label}")
    ax.set_xlabel("epoch")
    ax.set_ylabel(label)
    ax.set_title(title or f"Model {label}")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, path)


def confusion_heatmap(confusion: np.ndarray, class_names: Sequence[str], path,
                      title: str = "Confusion matrix (test set)") -> None:
    """Seaborn heatmap with the counts written in each cell."""
    import seaborn as sns  # imported here: only this picture needs it

    fig, ax = plt.subplots(figsize=(9, 7.5))
    sns.heatmap(confusion, annot=True, fmt="d", cmap="Blues", cbar=True, square=True,
                xticklabels=class_names, yticklabels=class_names, ax=ax)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    plt.setp(ax.get_xticklabels(), rotation=45, ha="right")
    save_figure(fig, path)
