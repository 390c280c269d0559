"""Losses: mean over the batch of a per-sample loss, and its gradient.

    softmax cross-entropy (fused), z the logits, t the one-hot target:
        L = mean_n [ logsumexp(z_n) - <t_n, z_n> ]       dL/dz = (softmax(z) - t) / N
    categorical cross-entropy on probabilities p:
        L = -mean_n <t_n, log p_n>                       dL/dp = -t / (N p)
    mean squared error:
        L = mean (p - t)^2                               dL/dp = 2 (p - t) / size

Sparse variants take integer labels (N,) or (N, 1) instead of one-hot rows.
"""
from __future__ import annotations

from minicnn import activations, backend, ops
from minicnn.backend import Array

EPSILON = 1e-7  # Keras's clip for probabilities


def one_hot_like(labels: Array, logits: Array) -> Array:
    """One-hot rows of ``logits``'s shape and dtype from integer ``labels``."""
    xp = backend.get_array_module(logits)
    t = xp.zeros(logits.shape, dtype=logits.dtype)
    t[xp.arange(labels.shape[0]), labels.reshape(-1)] = 1
    return t


class Loss:
    name = ""
    sparse = False  # integer labels instead of one-hot rows

    def forward(self, y_pred: Array, y_true: Array) -> Array:
        """The mean loss over the batch (a 0-d array, left on the device)."""
        raise NotImplementedError

    def backward(self) -> Array:
        """dL/dy_pred for the last forward."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return self.name


class CategoricalCrossentropy(Loss):
    """Cross-entropy of probabilities (used when the model does not end in softmax)."""
    name = "categorical_crossentropy"

    def forward(self, y_pred: Array, y_true: Array) -> Array:
        xp = backend.get_array_module(y_pred)
        if self.sparse:
            y_true = one_hot_like(y_true, y_pred)
        p = xp.clip(y_pred, EPSILON, 1 - EPSILON)
        self._cache = (p, y_true)
        return -(y_true * xp.log(p)).sum() / y_pred.shape[0]

    def backward(self) -> Array:
        p, t = self._cache
        return -t / p / p.shape[0]


class SparseCategoricalCrossentropy(CategoricalCrossentropy):
    name = "sparse_categorical_crossentropy"
    sparse = True


class SoftmaxCrossEntropy(Loss):
    """Softmax and cross-entropy in one step, from the logits z.

    log softmax(z) = z - logsumexp(z), with logsumexp(z) = m + log sum exp(z - m)
    and m the row maximum, so nothing overflows even for logits of 1e4; and the
    gradient collapses to (p - t) / N.
    """
    name = "softmax_crossentropy"

    def __init__(self, sparse: bool = False) -> None:
        self.sparse = sparse

    def forward(self, logits: Array, y_true: Array) -> Array:
        if self.sparse:
            y_true = one_hot_like(y_true, logits)
        if y_true.shape != logits.shape:  # the kernel would read past the end of y_true
            raise ValueError(f"{self.name}: targets of shape {tuple(y_true.shape)} do not match "
                             f"the logits' {tuple(logits.shape)}; give one-hot rows, or use "
                             "the sparse loss for integer labels")
        loss, p = ops.softmax_cross_entropy(logits, y_true)
        self._cache = (p, y_true)
        return loss

    def backward(self) -> Array:
        p, t = self._cache
        return (p - t) / p.shape[0]

    def probabilities(self) -> Array:
        return self._cache[0]


class MeanSquaredError(Loss):
    name = "mean_squared_error"

    def forward(self, y_pred: Array, y_true: Array) -> Array:
        self._diff = y_pred - y_true
        return (self._diff * self._diff).mean()

    def backward(self) -> Array:
        return 2 * self._diff / self._diff.size


LOSSES = {"categorical_crossentropy": CategoricalCrossentropy,
          "sparse_categorical_crossentropy": SparseCategoricalCrossentropy,
          "mean_squared_error": MeanSquaredError, "mse": MeanSquaredError}


def get(identifier: str | list[str] | tuple[str, ...] | Loss) -> Loss:
    """A loss from a name, a one-element list of names (Keras accepts both) or an instance."""
    if isinstance(identifier, (list, tuple)):
        if len(identifier) != 1:
            raise ValueError(f"loss: a Sequential model has one output, so give one loss, "
                             f"got {len(identifier)}: {identifier!r}")
        identifier = identifier[0]
    if isinstance(identifier, Loss):
        return identifier
    if identifier not in LOSSES:
        raise ValueError(f"unknown loss {identifier!r}: expected one of {', '.join(sorted(LOSSES))}")
    return LOSSES[identifier]()


def fused_with_softmax(loss: Loss, final_activation: activations.ActivationFunction | None
                       ) -> SoftmaxCrossEntropy | None:
    """The fused loss to use when a softmax output meets cross-entropy, else None."""
    if isinstance(loss, CategoricalCrossentropy) and isinstance(final_activation, activations.Softmax):
        return SoftmaxCrossEntropy(sparse=loss.sparse)
    return None
