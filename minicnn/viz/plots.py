"""Pictures of a run: sample images, learning curves, confusion heatmap and the
per-layer gradient statistics against the training step.

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
             squeeze: bool = True, sharex: bool = False, layout: str | None = None
             ) -> tuple[Figure, Any]:
    """(figure, axes) like pyplot.subplots, but a figure of its own on an Agg canvas."""
    fig = Figure(figsize=figsize, layout=layout)
    FigureCanvasAgg(fig)
    return fig, fig.subplots(rows, cols, squeeze=squeeze, sharex=sharex)


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
    # Whole epochs only: a single epoch would otherwise get ticks at 0.96, 0.98, ...
    ax.set_xlim(0.5, len(train) + 0.5)
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True, min_n_ticks=1))
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the axes, clear of the curves
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


def trace_steps(rows: Sequence[dict], steps_per_epoch: int | None = None) -> np.ndarray:
    """The training step of each trace row, counted from 1 over the whole run:
    (epoch - 1) * steps_per_epoch + step. Rows of a single epoch need no
    ``steps_per_epoch``: their step is already the run's step."""
    epochs = np.array([int(r["epoch"]) for r in rows])
    steps = np.array([int(r["step"]) for r in rows])
    if steps_per_epoch is None:
        if len(epochs) and epochs.min() != epochs.max():
            raise ValueError(f"gradient_traces: the rows span epochs {epochs.min()} to {epochs.max()}; "
                             "give steps_per_epoch (batches per epoch) to place them on one axis")
        return steps
    return (epochs - 1) * steps_per_epoch + steps


def gradient_traces(rows: Sequence[dict], path: str | os.PathLike,
                    steps_per_epoch: int | None = None,
                    title: str = "Gradient statistics per layer") -> None:
    """Per-layer curves from ``history.traces`` against the training step: gradient
    norm, update/weight ratio, activation spread and dead-ReLU fraction. One legend
    of layers beside the panels keeps the curves clear."""
    import pandas as pd  # only this picture needs it

    frame = pd.DataFrame(list(rows))
    if frame.empty:
        raise ValueError("gradient_traces: no rows to plot (train with trace_gradients=N)")
    frame = frame.assign(run_step=trace_steps(rows, steps_per_epoch))
    weighted = set(frame.dropna(subset=["grad_norm"])["layer"])
    # Colours go only to the layers that get a curve, so no two share one.
    drawn = frame.dropna(subset=["grad_norm", "update_ratio", "dead_relu"], how="all")
    layers = list(dict.fromkeys(drawn["layer"]))
    colours = {layer: f"C{k % 10}" for k, layer in enumerate(layers)}
    panels = [("grad_norm", "gradient norm", "||dL/dW||", True),
              ("update_ratio", "update / weight ratio", "||W_after - W_before|| / ||W_before||", True),
              ("act_std", "activation spread (layers with weights)", "std of the layer's output", False),
              ("dead_relu", "dead ReLU units", "fraction silent on the whole batch", False)]
    # Constrained layout makes room for the layer legend outside the panels.
    fig, axes = subplots(2, 2, figsize=(12, 8), sharex=True, layout="constrained")
    handles = {}
    for ax, (column, title_text, y_label, log) in zip(np.ravel(axes), panels):
        shown = frame.dropna(subset=[column])
        if column == "act_std":  # only the layers with weights, or the panel is a tangle
            shown = shown[shown["layer"].isin(weighted)]
        for layer, part in shown.groupby("layer", sort=False):
            handles[layer], = ax.plot(part["run_step"], part[column], color=colours[layer],
                                      marker="." if len(part) < 30 else None, label=layer)
        if log and (shown[column] > 0).any():
            ax.set_yscale("log")
        ax.set_title(title_text)
        ax.set_ylabel(y_label)
        ax.grid(alpha=0.3)
        if column == "update_ratio":
            rule = ax.axhline(1e-3, color="gray", linestyle="--", linewidth=1)
            ax.legend([rule], ["1e-3 (rule of thumb)"], loc="best", fontsize=8)
    for ax in axes[1]:
        ax.set_xlabel("training step")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ordered = [layer for layer in layers if layer in handles]
    fig.legend([handles[layer] for layer in ordered], ordered, loc="outside right upper",
               title="layer", fontsize=8)
    fig.suptitle(title)
    save_figure(fig, path)
