"""Pictures that explain a trained CNN: filters, feature maps, saliency, mistakes.

    filters          first-layer kernels (kh, kw, 3, F) as little RGB images
    feature_maps     one conv layer's output channels for one input image,
                     on one colour scale
    saliency         |d score_class / d pixel|, the max over colour channels,
                     under the image, on one colour scale (Simonyan et al., 2014)
    misclassified    test images with their true and predicted labels

Each function writes one PNG whose pixel size is exactly figsize * dpi. Images
are titled with their index, so a picture can be traced back to its data.
"""
from __future__ import annotations

import math
import os
from typing import Any, Sequence

import numpy as np

from minicnn import backend
from minicnn.backend import Array
from minicnn.viz.plots import save_figure, subplots


def _grid(count: int, columns: int) -> tuple[int, int]:
    columns = min(columns, count)
    return math.ceil(count / columns), columns


def _normalise(a: np.ndarray) -> np.ndarray:
    low, high = a.min(), a.max()
    return (a - low) / (high - low) if high > low else np.zeros_like(a)


def filters(kernel: Array, path: str | os.PathLike, columns: int = 16, dpi: int = 100) -> None:
    """A grid of the kernel's filters; RGB when c_in is 3, else the channel mean."""
    kernel = backend.to_host(kernel)
    if kernel.ndim != 4:
        raise ValueError(f"filters: expected a conv kernel (kh, kw, c_in, filters), got shape {kernel.shape}")
    count = kernel.shape[3]
    rows, cols = _grid(count, columns)
    fig, axes = subplots(rows, cols, figsize=(cols * 0.8, rows * 0.8 + 0.4), squeeze=False)
    for k, ax in enumerate(axes.ravel()):
        ax.axis("off")
        if k < count:
            f = kernel[:, :, :, k]
            image = _normalise(f) if f.shape[2] == 3 else _normalise(f.mean(axis=2))
            ax.imshow(image, cmap=None if image.ndim == 3 else "gray", interpolation="nearest")
    fig.suptitle(f"{count} filters {kernel.shape[0]}x{kernel.shape[1]}x{kernel.shape[2]} "
                 "(each scaled to its own range)")
    save_figure(fig, path, dpi=dpi, tight=False)


def feature_maps(model: Any, layer: int | str, image: Array, path: str | os.PathLike,
                 max_maps: int = 32, columns: int = 8, dpi: int = 100,
                 image_name: str | None = None) -> None:
    """The output channels of ``model.layers[layer]`` (index or name) for one image
    (H, W, C), all on one colour scale so that channels compare. ``image_name``
    (e.g. "test image 0 (cat)") goes into the title."""
    names = [l.name for l in model.layers]
    if isinstance(layer, int):
        if not -len(names) <= layer < len(names):
            raise ValueError(f"feature_maps: layer index {layer} is out of range; the model "
                             f"has {len(names)} layers (0 to {len(names) - 1}, or -1 for the last)")
        index = layer % len(names)  # -1 is the last layer: it must run every layer before it
    elif layer not in names:
        raise ValueError(f"feature_maps: no layer named {layer!r}; the model has {', '.join(names)}")
    else:
        index = names.index(layer)
    x = backend.to_device(backend.to_host(image).astype(_model_dtype(model))[None])
    for current in model.layers[:index + 1]:
        x = current.run_forward(x, training=False)
    maps = backend.to_host(x)[0]
    if maps.ndim != 3:
        raise ValueError(f"feature_maps: {model.layers[index].describe()} gives {maps.shape}, "
                         "not (H, W, C) feature maps")
    count = min(max_maps, maps.shape[2])
    rows, cols = _grid(count, columns)
    fig, axes = subplots(rows, cols, figsize=(cols * 1.2, rows * 1.2 + 0.4), squeeze=False)
    low, high = float(maps[:, :, :count].min()), float(maps[:, :, :count].max())
    for k, ax in enumerate(axes.ravel()):
        ax.axis("off")
        if k < count:
            shown = ax.imshow(maps[:, :, k], cmap="viridis", vmin=low, vmax=high,
                              interpolation="nearest")
            ax.set_title(str(k), fontsize=7, pad=2)
    fig.colorbar(shown, ax=axes.ravel().tolist(), shrink=0.9, label="activation")
    of = f" of {image_name}" if image_name else ""
    fig.suptitle(f"{model.layers[index].name}: first {count} of {maps.shape[2]} feature maps "
                 f"({maps.shape[0]}x{maps.shape[1]}){of}")
    save_figure(fig, path, dpi=dpi, tight=False)


def _model_dtype(model) -> str:
    for layer in model.layers:
        for p in layer.params.values():
            return str(p.dtype)
    return backend.floatx()


def saliency(model: Any, images: Array, labels: Array, class_names: Sequence[str],
             path: str | os.PathLike, dpi: int = 100,
             indices: Sequence[int] | None = None) -> np.ndarray:
    """Each image (float, model scale) above its saliency map: the gradient of the
    score (pre-softmax) of its class ``labels[k]``. ``indices`` are the images'
    positions in their data set, for the titles (default 0, 1, ...). Returns the maps."""
    images = backend.to_host(images)
    labels = backend.to_host(labels).reshape(-1)
    grad = backend.to_host(model.input_gradient(images, labels))
    maps = np.abs(grad).max(axis=3)
    count = len(images)
    indices = range(count) if indices is None else indices
    fig, axes = subplots(2, count, figsize=(count * 1.6, 3.6), squeeze=False)
    for k, index in zip(range(count), indices):
        name = class_names[int(labels[k])]
        axes[0, k].imshow(np.clip(images[k], 0, 1), interpolation="nearest")
        axes[0, k].set_title(f"image {index}\ntrue: {name}", fontsize=8)
        # One scale for all maps: a brighter map means a more sensitive score.
        shown = axes[1, k].imshow(maps[k], cmap="hot", vmin=0, vmax=float(maps.max()),
                                  interpolation="nearest")
        axes[1, k].set_title(f"gradient of the\n{name} score", fontsize=7)
        axes[0, k].axis("off")
        axes[1, k].axis("off")
    # A colour bar beside the maps' row alone, so images and maps stay aligned.
    fig.subplots_adjust(left=0.02, right=0.9, top=0.8, bottom=0.02, hspace=0.45)
    row = axes[1, -1].get_position()
    bar = fig.add_axes((0.92, row.y0, 0.012, row.height))
    fig.colorbar(shown, cax=bar, label="|d score / d pixel|")
    fig.suptitle("Saliency: |gradient of the true class's score| per pixel (max over RGB)")
    save_figure(fig, path, dpi=dpi, tight=False)
    return maps


def misclassified(images: Array, y_true: Array, y_pred: Array, class_names: Sequence[str],
                  path: str | os.PathLike, max_images: int = 20, columns: int = 10,
                  dpi: int = 100) -> int:
    """A grid of wrongly classified images titled 'index: true -> predicted'; returns
    how many are shown."""
    y_true, y_pred = np.asarray(y_true).reshape(-1), np.asarray(y_pred).reshape(-1)
    wrong = np.flatnonzero(y_true != y_pred)[:max_images]
    rows, cols = _grid(max(len(wrong), 1), columns)
    fig, axes = subplots(rows, cols, figsize=(cols * 1.4, rows * 1.6 + 0.4), squeeze=False)
    for k, ax in enumerate(axes.ravel()):
        ax.axis("off")
        if k < len(wrong):
            i = wrong[k]
            ax.imshow(np.asarray(images[i]), interpolation="nearest")
            ax.set_title(f"{i}: {class_names[y_true[i]]}\n-> {class_names[y_pred[i]]}", fontsize=7,
                         color="firebrick")
    fig.suptitle(f"Misclassified test images (index: true -> predicted), {len(wrong)} shown")
    save_figure(fig, path, dpi=dpi, tight=False)
    return len(wrong)
