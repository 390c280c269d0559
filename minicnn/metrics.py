"""Keras 2.2.4's metrics: per-sample values computed on the device, summed over an epoch.

A metric is a function ``metric(y_true, y_pred)`` of the model's output y_pred
(probabilities, even where the loss works on logits) and the target as Keras
hands it over: a float array of y_pred's rank, so integer labels arrive as
(N, 1). It returns one value per sample, or one for the batch; the epoch's
value is the mean over samples (a batch value counts once per sample of its
batch), as Keras's averaging of batch means is. Metrics are not weighted by
``sample_weight`` (Keras 2.2.4 weights only its ``weighted_metrics``).

    binary_accuracy                    mean over the last axis of [t == round(p)]
    categorical_accuracy               [argmax t == argmax p]
    sparse_categorical_accuracy        [max t == argmax p]           (labels (N, 1))
    top_k_categorical_accuracy (k=5)   argmax t among the k largest p (ties count as in,
    sparse_top_k_categorical_accuracy  the label itself                as TensorFlow's in_top_k)
    every loss name of minicnn.losses  that loss per sample (mse, mae, binary_crossentropy, ...)

'accuracy' / 'acc' (and 'crossentropy' / 'ce') pick the variant Keras 2.2.4 picks:
binary when the loss is binary_crossentropy or the output has one unit, sparse
for sparse_categorical_crossentropy, else categorical; they are logged as 'acc'
('ce'). Any other metric is logged under its function's ``__name__`` (a name
given as an alias logs the full name: 'mae' -> 'mean_absolute_error').
"""
from __future__ import annotations

from typing import Any, Callable

from minicnn import backend, losses
from minicnn.backend import Array


def _round(p: Array) -> Array:
    return backend.get_array_module(p).round(p)  # half to even, as TensorFlow's round


def binary_accuracy(y_true: Array, y_pred: Array) -> Array:
    return (y_true == _round(y_pred)).mean(axis=-1)


def categorical_accuracy(y_true: Array, y_pred: Array) -> Array:
    return (y_true.argmax(axis=-1) == y_pred.argmax(axis=-1)).astype(y_pred.dtype)


def sparse_categorical_accuracy(y_true: Array, y_pred: Array) -> Array:
    return (y_true.max(axis=-1) == y_pred.argmax(axis=-1)).astype(y_pred.dtype)


def _in_top_k(y_pred: Array, labels: Array, k: int) -> Array:
    """[the label's score is among the k largest of its row], ties counting as in."""
    xp = backend.get_array_module(y_pred)
    rows = y_pred.reshape(-1, y_pred.shape[-1])
    labels = labels.reshape(-1).astype("int64")
    score = rows[xp.arange(rows.shape[0]), labels]
    above = (rows > score[:, None]).sum(axis=-1)
    return (above < k).astype(y_pred.dtype).reshape(y_pred.shape[:-1])


def top_k_categorical_accuracy(y_true: Array, y_pred: Array, k: int = 5) -> Array:
    return _in_top_k(y_pred, y_true.argmax(axis=-1), k)


def sparse_top_k_categorical_accuracy(y_true: Array, y_pred: Array, k: int = 5) -> Array:
    return _in_top_k(y_pred, y_true.max(axis=-1), k)


def _loss_metric(loss_class: type) -> Callable[[Array, Array], Array]:
    """A loss's per-sample values as a metric function, named as Keras names it."""
    def metric(y_true: Array, y_pred: Array) -> Array:
        loss = loss_class()
        if loss.sparse:  # losses take integer labels (N,), metrics get them as (N, 1)
            y_true = y_true.reshape(-1).astype("int64")
        return loss.values(y_pred, y_true)
    metric.__name__ = loss_class.name
    return metric


LOSS_METRICS = {cls.name: _loss_metric(cls) for cls in set(losses.LOSSES.values())}

METRICS: dict[str, Callable] = {
    **{name: LOSS_METRICS[cls.name] for name, cls in losses.LOSSES.items()},
    **{f.__name__: f for f in (binary_accuracy, categorical_accuracy,
                               sparse_categorical_accuracy, top_k_categorical_accuracy,
                               sparse_top_k_categorical_accuracy)},
}


class Metric:
    """One compiled metric: its log name and how to compute it for a batch."""

    def __init__(self, name: str, function: Callable | None, kind: str | None = None) -> None:
        self.name, self.function, self.kind = name, function, kind

    def resolve(self, loss: losses.Loss, units: int) -> Callable:
        """Keras's choice for 'acc' / 'ce' given the loss and the output's size."""
        if self.function is not None:
            return self.function
        if units == 1 or isinstance(loss, losses.BinaryCrossentropy):
            variant = "binary"
        elif getattr(loss, "sparse", False):
            variant = "sparse_categorical"
        else:
            variant = "categorical"
        suffix = "accuracy" if self.kind == "acc" else "crossentropy"
        return METRICS[f"{variant}_{suffix}"]

    def batch_sum(self, loss: losses.Loss, y_true: Array, y_pred: Array) -> Array:
        """The metric summed over the batch's samples (0-d, on the device)."""
        value = self.resolve(loss, y_pred.shape[-1])(y_true, y_pred)
        xp = backend.get_array_module(y_pred)
        if not hasattr(value, "shape"):  # a Python number from a custom metric
            value = xp.asarray(value, dtype=y_pred.dtype)
        if value.ndim == 1 and value.shape[0] == y_pred.shape[0]:
            return value.astype(y_pred.dtype, copy=False).sum()
        # Keras averages whatever comes back over the batch: a mean counted per sample
        return value.astype(y_pred.dtype, copy=False).mean() * y_pred.shape[0]

    def __repr__(self) -> str:
        return self.name


def get(identifier: Any, where: str = "metrics") -> Metric:
    """A compiled metric from a name or a callable ``metric(y_true, y_pred)``."""
    if isinstance(identifier, Metric):
        return identifier
    if identifier in ("accuracy", "acc"):
        return Metric("acc", None, "acc")
    if identifier in ("crossentropy", "ce"):
        return Metric("ce", None, "ce")
    if isinstance(identifier, str):
        if identifier not in METRICS:
            raise ValueError(f"{where}: unknown metric {identifier!r}: expected 'accuracy', "
                             f"one of {', '.join(sorted(METRICS))}, or a function "
                             "metric(y_true, y_pred)")
        function = METRICS[identifier]
        return Metric(function.__name__, function)
    if callable(identifier):
        name = getattr(identifier, "name", None) or getattr(identifier, "__name__", None)
        if not isinstance(name, str):
            raise ValueError(f"{where}: the metric {identifier!r} has no __name__ to log it "
                             "under; give it one (def my_metric(y_true, y_pred): ...)")
        return Metric(name, identifier)
    raise ValueError(f"{where}: expected a metric name or a function metric(y_true, y_pred), "
                     f"got {identifier!r}")


def keras_targets(y: Array, like: Array) -> Array:
    """y as Keras hands it to a metric: floats of ``like``'s dtype, labels (N,) as (N, 1)."""
    if y.ndim == 1:
        y = y.reshape(-1, 1)
    return y.astype(like.dtype, copy=False)
