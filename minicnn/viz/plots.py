"""Pictures of a run: sample images, learning curves, confusion heatmap.

Headless: each figure is drawn by its own Agg canvas straight into a file, no
display needed, and pyplot's figure manager is never used, so this module
leaves a notebook's or script's own matplotlib backend alone. Every figure is saved
through a temporary file and a rename, so a crash leaves no broken PNG.
"""
from __future__ import annotations

import io
import os
from typing import Any, Sequence

import matplotlib.ticker
import numpy as np
from matplotlib.artist import setp
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from minicnn.backend import Array
from minicnn.fileio import write_atomic


def subplots(rows: int = 1, cols: int = 1, figsize: tuple[float, float] | None = None,
             squeeze: bool = True) -> tuple[Figure, Any]:
    """(figure, axes) like pyplot.subplots, but a figure of its own on an Agg canvas."""
    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig, fig.subplots(rows, cols, squeeze=squeeze)


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = 120, tight: bool = True
                ) -> None:
    """Render to PNG in memory, then write atomically. ``tight=False`` keeps the
    pixel size exactly figsize * dpi."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight" if tight else None)
    write_atomic(path, lambda f: f.write(buffer.getvalue()))


def sample_grid(images: np.ndarray, labels: Array, class_names: Sequence[str],
                path: str | os.PathLike, rows: int = 2, cols: int = 5) -> None:
    """A rows x cols grid of uint8 (N, H, W, 3) images titled with their class."""
    fig, axes = subplots(rows, cols, figsize=(2 * cols, 2.2 * rows))
    labels = np.asarray(labels).reshape(-1)
    for k, ax in enumerate(np.ravel(axes)):
        ax.axis("off")
        if k < len(images):
            ax.imshow(images[k], interpolation="nearest")
            ax.set_title(class_names[int(labels[k])], fontsize=11)
    fig.suptitle("CIFAR-10 training samples")
    save_figure(fig, path)


def learning_curve(history: dict, metric: str, path: str | os.PathLike,
                   title: str | None = None) -> None:
    """Train and validation curves of ``metric`` ("loss" or "acc") per epoch."""
    train = history[metric]
    epochs = np.arange(1, len(train) + 1)
    label = {"loss": "loss", "acc": "accuracy"}.get(metric, metric)
    fig, ax = subplots(figsize=(6.4, 4.2))
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


def confusion_heatmap(confusion: np.ndarray, class_names: Sequence[str], path: str | os.PathLike,
                      title: str = "Confusion matrix (test set)") -> None:
    """Seaborn heatmap with the counts written in each cell."""
    import seaborn as sns  # imported here: only this picture needs it

    fig, ax = subplots(figsize=(9, 7.5))
    sns.heatmap(confusion, annot=True, fmt="d", cmap="Blues", cbar=True, square=True,
                xticklabels=class_names, yticklabels=class_names, ax=ax)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    setp(ax.get_xticklabels(), rotation=45, ha="right")
    save_figure(fig, path)


def gradient_traces(rows: Sequence[dict], path: str | os.PathLike,
                    title: str = "Gradient statistics per layer") -> None:
    """Per-layer curves over training steps from ``history.traces``: gradient norm,
    update/weight ratio, activation spread and dead-ReLU fraction."""
    import pandas as pd  # only this picture needs it

    frame = pd.DataFrame(list(rows))
    if frame.empty:
        raise ValueError("gradient_traces: no rows to plot (train with trace_gradients=N)")
    steps = frame.groupby(["epoch", "step"], sort=False).ngroup()
    frame = frame.assign(traced_step=steps)
    panels = [("grad_norm", "gradient norm ||dL/dW||", True),
              ("update_ratio", "update / weight ratio", True),
              ("act_std", "activation std", False),
              ("dead_relu", "dead ReLU fraction", False)]
    fig, axes = subplots(2, 2, figsize=(12, 8))
    for ax, (column, label, log) in zip(np.ravel(axes), panels):
        shown = frame.dropna(subset=[column])
        if column == "act_std":  # only the layers with weights, or the panel is a tangle
            shown = shown[shown["layer"].isin(frame.dropna(subset=["grad_norm"])["layer"])]
        for layer, part in shown.groupby("layer", sort=False):
            ax.plot(part["traced_step"], part[column], label=layer)
        if log and (shown[column] > 0).any():
            ax.set_yscale("log")
        ax.set_title(label)
        ax.set_xlabel("traced step")
        ax.grid(alpha=0.3)
        if column == "update_ratio":
            ax.axhline(1e-3, color="gray", linestyle="--", linewidth=1, label="1e-3 (rule of thumb)")
        ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)
