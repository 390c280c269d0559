"""The checks every entry point of a model runs on what it is given, in one place.

x and y come from users, in every shape and type: each is checked before the
first layer sees it, so a mistake is reported with what was expected and a
hint, never as a shape error deep in a layer. x and y end on the backend, cast
once to the model's float type (labels to int64).
"""
from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from minicnn import backend
from minicnn.backend import Array


def samples(x: Any, input_shape: tuple | None, first_layer: Any, where: str) -> Array:
    """x as a float batch on the backend, checked against ``input_shape`` (no batch axis)."""
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        x = np.asarray(x)
    if x.ndim == 0:
        raise ValueError(f"{where}: expected a batch of samples (N, ...), got a scalar")
    if x.shape[0] == 0:
        raise ValueError(f"{where}: x is empty (shape {tuple(x.shape)})")
    if input_shape is not None and tuple(x.shape[1:]) != tuple(input_shape):
        first_layer.check_input(x)  # raises with the layer's name and a hint
        raise ValueError(f"{where}: expected x of shape (N, {', '.join(map(str, input_shape))}), "
                         f"got {tuple(x.shape)}")
    kind = np.dtype(x.dtype).kind
    if kind not in "biuf":
        raise TypeError(f"{where}: expected numeric x, got dtype {x.dtype}")
    if kind in "iu" and x.size and float(x.max()) > 1:
        warnings.warn(f"{where}: x holds integers up to {float(x.max()):.0f}; networks train "
                      "on scaled inputs, e.g. x.astype('float32') / 255", stacklevel=4)
    x = backend.to_device(x, dtype=backend.floatx())  # one cast, not one per batch
    if kind == "f" and not bool(backend.get_array_module(x).isfinite(x).all()):
        raise ValueError(f"{where}: x contains NaN or infinite values")
    return x


def targets(y: Any, n: int, classes: int, loss: Any, where: str) -> Array:
    """y for ``n`` samples as ``loss`` wants it: labels (N,) for a sparse loss, else
    (N, classes); on the backend."""
    y = y if backend.is_device_array(y) else np.asarray(y)
    if y.ndim == 0:
        raise ValueError(f"{where}: x has {n} samples but y has none (a scalar)")
    if y.shape[0] != n:
        raise ValueError(f"{where}: x has {n} samples but y has {y.shape[0]}")
    if np.dtype(y.dtype).kind not in "biuf":
        raise TypeError(f"{where}: expected numeric y, got dtype {y.dtype}")
    if np.dtype(y.dtype).kind == "f" and not bool(backend.get_array_module(y).isfinite(y).all()):
        raise ValueError(f"{where}: y contains NaN or infinite values; the targets must be "
                         "finite (check how the labels were made)")
    if loss.sparse:
        if y.ndim == 2 and y.shape[1] == 1:
            y = y.reshape(-1)
        if y.ndim != 1 or np.dtype(y.dtype).kind not in "iuf":
            raise ValueError(f"{where}: {loss.name} expects integer labels of shape (N,) "
                             f"or (N, 1), got {y.dtype} of shape {tuple(y.shape)}")
        if np.dtype(y.dtype).kind == "f":  # Keras takes float labels that hold integers
            xp = backend.get_array_module(y)
            if not bool((y == xp.floor(y)).all()):
                raise ValueError(f"{where}: {loss.name} expects integer labels, got float "
                                 "labels with a fractional part (e.g. 1.5); give class indices")
        low, high = int(y.min()), int(y.max())
        if low < 0 or high >= classes:
            raise ValueError(f"{where}: labels must lie in [0, {classes - 1}] for a model "
                             f"with {classes} outputs, got values from {low} to {high}")
        return backend.to_device(y, dtype="int64")
    if y.ndim == 1 and classes == 1:  # Keras makes targets 2-D: one value per sample
        y = y.reshape(-1, 1)
    if y.ndim != 2 or y.shape[1] != classes:
        hint = ""
        if classes > 1 and (y.ndim == 1 or (y.ndim == 2 and y.shape[1] == 1)):
            hint = ("; these look like integer labels: one-hot them with "
                    "minicnn.utils.to_categorical(y, num_classes) or use "
                    "loss='sparse_categorical_crossentropy'")
        raise ValueError(f"{where}: {loss.name} expects targets of shape (N, {classes}), "
                         f"got {tuple(y.shape)}{hint}")
    return backend.to_device(y, dtype=backend.floatx())


def sample_weights(sample_weight: Any, class_weight: Any, y: Array, n: int,
                   where: str) -> Array | None:
    """Keras's per-sample loss weights (N,) on the backend, or None for all ones:
    ``sample_weight`` when given, else ``class_weight[class of each sample]`` with
    the class read from the checked targets ``y`` (argmax of one-hot rows, the label
    of integer labels, the value of a single output)."""
    if sample_weight is not None:
        w = sample_weight if backend.is_device_array(sample_weight) else np.asarray(sample_weight)
        if np.dtype(w.dtype).kind not in "biuf":
            raise TypeError(f"{where}: expected numeric sample_weight, got dtype {w.dtype}")
        if w.ndim != 1:
            raise ValueError(f"{where}: found a sample_weight array with shape {tuple(w.shape)}; "
                             "give one weight per sample, an array of shape (N,) (minicnn has "
                             "no timestep-wise weighting)")
        if w.shape[0] != n:
            raise ValueError(f"{where}: x has {n} samples but sample_weight has {w.shape[0]}")
        xp = backend.get_array_module(w)
        if not bool(xp.isfinite(w).all()) or bool((w < 0).any()):
            raise ValueError(f"{where}: sample_weight must be finite and >= 0")
        return backend.to_device(w, dtype=backend.floatx())
    if class_weight is None:
        return None
    if not isinstance(class_weight, dict):
        raise TypeError(f"{where}: class_weight must be a dict {{class index: weight}}, "
                        f"got {type(class_weight).__name__}")
    for key, value in class_weight.items():
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
                or not np.isfinite(value) or value < 0:
            raise ValueError(f"{where}: class_weight[{key!r}] must be a finite number >= 0, "
                             f"got {value!r}")
    if y.ndim > 2:
        raise ValueError(f"{where}: class_weight is not supported for 3+ dimensional targets")
    xp = backend.get_array_module(y)
    classes = y.argmax(axis=1) if y.ndim == 2 and y.shape[1] > 1 else y.reshape(-1)
    table = _class_weight_table(class_weight)
    if table is not None:
        # A lookup on the device, one host read (are all classes in the table?), not a
        # Python loop over the samples: this runs for every batch of a generator.
        table = backend.to_device(table, dtype=backend.floatx())
        index = classes.astype("int64")
        known = (index == classes) & (index >= 0) & (index < table.shape[0])
        weights = table[xp.where(known, index, 0)]
        if not bool((~known | xp.isnan(weights)).any()):
            return weights
    host = backend.to_host(classes)  # the error's message, or keys that are not indices
    missing = {c.item() for c in np.unique(host)} - set(class_weight)
    if missing:
        shown = sorted(int(c) if isinstance(c, float) and c.is_integer() else c for c in missing)
        raise ValueError(f"{where}: class_weight must contain all classes in the data. The "
                         f"classes {shown} exist in the data but not in class_weight")
    weights = np.array([class_weight[c.item()] for c in host], dtype=np.float64)
    return backend.to_device(weights, dtype=backend.floatx())


def _class_weight_table(class_weight: dict) -> np.ndarray | None:
    """class_weight as an array: table[k] = class_weight[k], NaN for the classes it
    leaves out; None when there are no keys or a key is not a class index (whole,
    >= 0, not huge)."""
    keys = list(class_weight)
    if not keys or not all(not isinstance(k, bool) and isinstance(k, (int, np.integer))
                           and 0 <= k < 1 << 16 for k in keys):
        return None
    table = np.full(max(keys) + 1, np.nan)
    for key, value in class_weight.items():
        table[int(key)] = value
    return table


def batch_size(value: Any, where: str) -> int:
    if value is None:  # Keras's default
        return 32
    if not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{where}: batch_size must be a positive int, got {value!r}")
    return int(value)


def count(value: Any, name: str) -> int:
    """A whole number >= 0 (NumPy integers welcome; 2.5 epochs or True are errors)."""
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 0:
        raise ValueError(f"fit: {name} must be a whole number >= 0, got {value!r}")
    return int(value)
