"""Keras 2.2.4's losses: a per-sample loss l_n, its gradient, and the batch reduction.

Each loss computes l_n for every sample n of y_pred p against the target t,
Keras's way: the formula over the last axis (a mean, or a sum where written
"sum"), then the mean over any other non-batch axes. ``forward`` reduces them
as Keras 2.2.4's weighted objective does, with the sample weights w
(all ones when none are given):

    L = sum_n w_n l_n / #{n: w_n != 0}     (= mean_n l_n without weights)
    dL/dp_n = w_n / #{n: w_n != 0} * dl_n/dp_n

(Keras divides mean(w l) by mean(w != 0): the same number. A batch whose
weights are all 0 gives L = 0 here, where Keras divides 0 by 0.)
eps = 1e-7 is Keras's K.epsilon(); K is the size of the last axis; "mask"
is 1 where a clip left the value alone, else 0 (the clip's gradient).

    mean_squared_error, mse        mean (p - t)^2               dl/dp = 2 (p - t) / K
    mean_absolute_error, mae       mean |p - t|                 dl/dp = sign(p - t) / K
    mean_absolute_percentage_error, mape
        100 mean |t - p| / c,  c = max(|t|, eps)                dl/dp = 100 sign(p - t) / (c K)
    mean_squared_logarithmic_error, msle
        mean (a - b)^2,  a = log(max(p, eps) + 1),  b = log(max(t, eps) + 1)
                                      dl/dp = 2 (a - b) mask / ((max(p, eps) + 1) K)
    hinge                          mean max(1 - t p, 0)         dl/dp = -t [1 - t p > 0] / K
    squared_hinge                  mean max(1 - t p, 0)^2       dl/dp = -2 t max(1 - t p, 0) / K
    categorical_hinge              max(0, neg - pos + 1),  pos = sum t p,
                                   neg = max_k (1 - t_k) p_k
        dl/dp = [l > 0] ((1 - t) e - t), e = 1 at the argmax of neg (shared among ties,
        as TensorFlow's reduce_max)
    logcosh                        mean log cosh(d) = d + softplus(-2 d) - log 2,  d = p - t
                                                                dl/dp = tanh(p - t) / K
    kullback_leibler_divergence, kld
        sum tc log(tc / pc),  tc, pc = t, p clipped to [eps, 1]  dl/dp = -tc mask / pc
    poisson                        mean p - t log(p + eps)      dl/dp = (1 - t / (p + eps)) / K
    cosine_proximity, cosine       -sum t^ p^,  x^ = x / sqrt(max(sum x^2, 1e-12))
        dl/dp = -(t^ - p^ <t^, p^>) / |p|  where |p|^2 > 1e-12, else -t^ / 1e-6
    binary_crossentropy            mean -(t log q + (1 - t) log(1 - q)),  q = clip(p, eps, 1 - eps)
                                      dl/dp = (q - t) mask / (q (1 - q) K)
    categorical_crossentropy       -sum t log clip(s, eps, 1 - eps),  s = p / sum p (Keras
                                   rescales the outputs to sum to 1)
        g = -t mask / clip(s, eps, 1 - eps),   dl/dp = (g - <g, s>) / sum p
    sparse_categorical_crossentropy   labels k (N,) or (N, 1); Keras 2.2.4 clips before it
                                   rescales: l = -log(q_k / S),  q = clip(p, eps, 1 - eps),
                                   S = sum q       dl/dp_j = mask_j (1 / S - [j = k] / q_k)
        (the same as categorical_crossentropy of the one-hot rows unless a clip bites;
        with label smoothing, l = -sum_j t_j log(q_j / S), dl/dp_j = mask_j (1 / S - t_j / q_j))

Label smoothing (tf.keras's ``label_smoothing`` = ls on the two categorical
cross-entropies; PyTorch's CrossEntropyLoss(label_smoothing=) for integer labels)
replaces the targets before any of the above, gradients included:

    t' = t (1 - ls) + ls / K

``from_logits=True`` (tf.keras's) takes the logits z instead of probabilities:
the loss is the fused softmax form below, whatever the model ends in.

Over more than two axes, K is the number of entries a sample's mean runs over, and
a "sum" loss is averaged over the rows between the batch and the last axis.

Fused with the model's last activation (``fused_with``: the loss gets the logits z
and the layer stops before its activation; see ``minicnn.plan``):

    softmax + categorical cross-entropy:
        l_n = logsumexp(z_n) - <t_n, z_n>          dl/dz = softmax(z) - t
    sigmoid + binary cross-entropy, per entry:
        log(1 + e^-z) + (1 - t) z = max(z, 0) - t z + log(1 + e^-|z|)
                                                   dl/dz = (sigmoid(z) - t) / K

Both stay finite for logits of any size; unlike Keras they do not clip the
probabilities to [eps, 1 - eps], so a confidently wrong answer costs its full
price instead of at most -log(eps) = 16.1.
"""
from __future__ import annotations

import math
from typing import Any

from minicnn import activations, backend, ops
from minicnn.backend import Array

EPSILON = 1e-7  # Keras's K.epsilon(): the clip for probabilities
LOG2 = math.log(2.0)


def one_hot_like(labels: Array, logits: Array) -> Array:
    """One-hot rows of ``logits``'s shape and dtype from integer ``labels``."""
    xp = backend.get_array_module(logits)
    t = xp.zeros(logits.shape, dtype=logits.dtype)
    t[xp.arange(labels.shape[0]), labels.reshape(-1).astype("int64")] = 1
    return t


def _per_sample(values: Array) -> Array:
    """Mean over every axis but the batch axis: (N, ...) -> (N,)."""
    return values.reshape(values.shape[0], -1).mean(axis=1)


def _entries(x: Array) -> int:
    """Entries per sample: what a mean over the last axis and then the rest divides by."""
    return x.size // x.shape[0]


def _rows(x: Array) -> int:
    """Rows per sample (1 for (N, K)): what a sum over the last axis is averaged over."""
    return x.size // (x.shape[0] * x.shape[-1])


class Loss:
    """A loss: ``forward(y_pred, y_true, sample_weight=None)`` -> L (0-d, left on the
    device), then ``backward()`` -> dL/dy_pred. Subclasses write ``values`` (the
    per-sample l_n, keeping what the gradient needs) and ``sample_gradient``
    (dl_n/dy_pred for every n at once); this class applies the weights."""

    name = ""
    sparse = False  # integer labels instead of one-hot rows

    def values(self, y_pred: Array, y_true: Array) -> Array:
        """The per-sample losses l_n, shape (N,)."""
        raise NotImplementedError

    def sample_gradient(self) -> Array:
        """dl_n/dy_pred for the last ``values``, y_pred's shape."""
        raise NotImplementedError

    def forward(self, y_pred: Array, y_true: Array, sample_weight: Array | None = None) -> Array:
        """The batch loss: mean_n l_n, or Keras's weighted mean with ``sample_weight`` (N,)."""
        per_sample = self.values(y_pred, y_true)
        n = per_sample.shape[0]
        if sample_weight is None:
            self._scale = 1.0 / n
            return per_sample.mean()
        xp = backend.get_array_module(per_sample)
        w = sample_weight.astype(per_sample.dtype, copy=False)
        kept = xp.maximum((w != 0).sum(), 1).astype(per_sample.dtype)
        self._scale = (w / kept).reshape((n,) + (1,) * (y_pred.ndim - 1))
        return (w * per_sample).sum() / kept

    def backward(self) -> Array:
        """dL/dy_pred for the last ``forward``."""
        return self.sample_gradient() * self._scale

    def get_config(self) -> dict:
        """The constructor's arguments that differ from the defaults (none for most losses)."""
        return {}

    def __repr__(self) -> str:
        return self.name


class MeanSquaredError(Loss):
    name = "mean_squared_error"

    def values(self, y_pred, y_true):
        self._diff = y_pred - y_true
        return _per_sample(self._diff * self._diff)

    def sample_gradient(self):
        return (2.0 / _entries(self._diff)) * self._diff


class MeanAbsoluteError(Loss):
    name = "mean_absolute_error"

    def values(self, y_pred, y_true):
        self._diff = y_pred - y_true
        return _per_sample(backend.get_array_module(y_pred).abs(self._diff))

    def sample_gradient(self):
        return backend.get_array_module(self._diff).sign(self._diff) / _entries(self._diff)


class MeanAbsolutePercentageError(Loss):
    name = "mean_absolute_percentage_error"

    def values(self, y_pred, y_true):
        xp = backend.get_array_module(y_pred)
        self._diff = y_pred - y_true
        self._scale_t = xp.maximum(xp.abs(y_true), EPSILON).astype(y_pred.dtype, copy=False)
        return _per_sample(100.0 * xp.abs(self._diff) / self._scale_t)

    def sample_gradient(self):
        xp = backend.get_array_module(self._diff)
        return (100.0 / _entries(self._diff)) * xp.sign(self._diff) / self._scale_t


class MeanSquaredLogarithmicError(Loss):
    name = "mean_squared_logarithmic_error"

    def values(self, y_pred, y_true):
        xp = backend.get_array_module(y_pred)
        p = xp.maximum(y_pred, EPSILON)
        self._diff = xp.log(p + 1) - xp.log(xp.maximum(y_true, EPSILON) + 1)
        self._p, self._mask = p, y_pred >= EPSILON
        return _per_sample(self._diff * self._diff)

    def sample_gradient(self):
        return (2.0 / _entries(self._diff)) * self._diff * self._mask / (self._p + 1)


class Hinge(Loss):
    name = "hinge"

    def values(self, y_pred, y_true):
        xp = backend.get_array_module(y_pred)
        self._t = y_true.astype(y_pred.dtype, copy=False)
        self._margin = xp.maximum(1 - self._t * y_pred, 0)
        return _per_sample(self._margin)

    def sample_gradient(self):
        return -self._t * (self._margin > 0) / _entries(self._t)


class SquaredHinge(Hinge):
    name = "squared_hinge"

    def values(self, y_pred, y_true):
        super().values(y_pred, y_true)
        return _per_sample(self._margin * self._margin)

    def sample_gradient(self):
        return (-2.0 / _entries(self._t)) * self._t * self._margin


class CategoricalHinge(Loss):
    name = "categorical_hinge"

    def values(self, y_pred, y_true):
        xp = backend.get_array_module(y_pred)
        t = y_true.astype(y_pred.dtype, copy=False)
        positive = (t * y_pred).sum(axis=-1)
        others = (1 - t) * y_pred
        negative = others.max(axis=-1)
        top = others == negative[..., None]
        self._t, self._others = t, others
        top = top.astype(y_pred.dtype)
        self._top = top / top.sum(axis=-1, keepdims=True)  # reduce_max's gradient: ties share
        self._per_row = xp.maximum(negative - positive + 1, 0)
        return _per_sample(self._per_row[..., None])

    def sample_gradient(self):
        active = self._per_row[..., None] > 0
        return active * ((1 - self._t) * self._top - self._t) / _rows(self._t)


class Logcosh(Loss):
    name = "logcosh"

    def values(self, y_pred, y_true):
        xp = backend.get_array_module(y_pred)
        d = self._diff = y_pred - y_true
        # softplus(-2d) = max(-2d, 0) + log(1 + e^-|2d|): no overflow for any d
        softplus = xp.maximum(-2 * d, 0) + xp.log1p(xp.exp(-xp.abs(2 * d)))
        return _per_sample(d + softplus - LOG2)

    def sample_gradient(self):
        return backend.get_array_module(self._diff).tanh(self._diff) / _entries(self._diff)


class KullbackLeiblerDivergence(Loss):
    name = "kullback_leibler_divergence"

    def values(self, y_pred, y_true):
        xp = backend.get_array_module(y_pred)
        t = xp.clip(y_true, EPSILON, 1).astype(y_pred.dtype, copy=False)
        p = xp.clip(y_pred, EPSILON, 1)
        self._t, self._p, self._mask = t, p, (y_pred >= EPSILON) & (y_pred <= 1)
        return _per_sample((t * xp.log(t / p)).sum(axis=-1)[..., None])

    def sample_gradient(self):
        return -self._t * self._mask / self._p / _rows(self._p)


class Poisson(Loss):
    name = "poisson"

    def values(self, y_pred, y_true):
        xp = backend.get_array_module(y_pred)
        self._t, self._p = y_true.astype(y_pred.dtype, copy=False), y_pred
        return _per_sample(y_pred - self._t * xp.log(y_pred + EPSILON))

    def sample_gradient(self):
        return (1 - self._t / (self._p + EPSILON)) / _entries(self._p)


class CosineProximity(Loss):
    name = "cosine_proximity"

    def values(self, y_pred, y_true):
        xp = backend.get_array_module(y_pred)

        def norm(x):  # TensorFlow's l2_normalize: x / sqrt(max(sum x^2, 1e-12))
            return xp.sqrt(xp.maximum((x * x).sum(axis=-1, keepdims=True), 1e-12))

        t = y_true.astype(y_pred.dtype, copy=False)
        t_hat = t / norm(t)
        self._norm_p = norm(y_pred)
        self._p_hat = y_pred / self._norm_p
        self._t_hat = t_hat
        self._cos = (t_hat * self._p_hat).sum(axis=-1, keepdims=True)
        self._small = (y_pred * y_pred).sum(axis=-1, keepdims=True) <= 1e-12
        return _per_sample(-self._cos)

    def sample_gradient(self):
        xp = backend.get_array_module(self._p_hat)
        # below the floor the norm is the constant 1e-6: only the numerator moves
        along = xp.where(self._small, 0, self._p_hat * self._cos)
        return -(self._t_hat - along) / self._norm_p / _rows(self._p_hat)


class BinaryCrossentropy(Loss):
    """Cross-entropy of probabilities p of independent yes/no outputs."""
    name = "binary_crossentropy"

    def values(self, y_pred, y_true):
        xp = backend.get_array_module(y_pred)
        q = xp.clip(y_pred, EPSILON, 1 - EPSILON)
        t = y_true.astype(y_pred.dtype, copy=False)
        self._q, self._t = q, t
        self._mask = (y_pred >= EPSILON) & (y_pred <= 1 - EPSILON)
        return _per_sample(-(t * xp.log(q) + (1 - t) * xp.log(1 - q)))

    def sample_gradient(self):
        q = self._q
        return (q - self._t) * self._mask / (q * (1 - q)) / _entries(q)


def _label_smoothing(value: Any, owner: str) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 <= value <= 1.0
    if not ok:
        raise ValueError(f"{owner}: label_smoothing must be a number in [0, 1], got {value!r}")
    return float(value)


def smooth_labels(t: Array, label_smoothing: float) -> Array:
    """t' = t (1 - ls) + ls / K over the last axis (a new array; t itself without smoothing)."""
    if not label_smoothing:
        return t
    return t * (1.0 - label_smoothing) + label_smoothing / t.shape[-1]


class CategoricalCrossentropy(Loss):
    """Cross-entropy of probabilities (used when the model does not end in softmax), or of
    logits with ``from_logits=True``; tf.keras's class, with its ``label_smoothing``."""
    name = "categorical_crossentropy"

    def __init__(self, from_logits: bool = False, label_smoothing: float = 0.0) -> None:
        owner = type(self).__name__
        if not isinstance(from_logits, (bool, int)):
            raise ValueError(f"{owner}: from_logits must be True or False, got {from_logits!r}")
        self.from_logits = bool(from_logits)
        self.label_smoothing = _label_smoothing(label_smoothing, owner)
        self._logits = (SoftmaxCrossEntropy(self.sparse, self.label_smoothing)
                        if self.from_logits else None)

    def forward(self, y_pred: Array, y_true: Array, sample_weight: Array | None = None) -> Array:
        if self._logits is not None:
            return self._logits.forward(y_pred, y_true, sample_weight)
        return super().forward(y_pred, y_true, sample_weight)

    def backward(self) -> Array:
        if self._logits is not None:
            return self._logits.backward()
        return super().backward()

    def get_config(self) -> dict:
        config = {}
        if self.from_logits:
            config["from_logits"] = True
        if self.label_smoothing:
            config["label_smoothing"] = self.label_smoothing
        return config

    def values(self, y_pred, y_true):
        if self._logits is not None:
            return self._logits.values(y_pred, y_true)
        xp = backend.get_array_module(y_pred)
        if self.sparse:
            y_true = one_hot_like(y_true, y_pred)
        y_true = smooth_labels(y_true.astype(y_pred.dtype, copy=False), self.label_smoothing)
        total = y_pred.sum(axis=-1, keepdims=True)
        s = y_pred / total
        q = xp.clip(s, EPSILON, 1 - EPSILON)
        t = y_true.astype(y_pred.dtype, copy=False)
        self._cache = (s, q, t, total, (s >= EPSILON) & (s <= 1 - EPSILON))
        return _per_sample(-(t * xp.log(q)).sum(axis=-1)[..., None])

    def sample_gradient(self):
        if self._logits is not None:
            return self._logits.sample_gradient()
        s, q, t, total, mask = self._cache
        g = -t * mask / q
        return (g - (g * s).sum(axis=-1, keepdims=True)) / total / _rows(s)


class SparseCategoricalCrossentropy(CategoricalCrossentropy):
    """Keras 2.2.4's order: clip p, then normalise in sparse_softmax_cross_entropy
    of log(q), where the one-hot loss rescales first and clips after."""
    name = "sparse_categorical_crossentropy"
    sparse = True

    def values(self, y_pred, y_true):
        if self._logits is not None:
            return self._logits.values(y_pred, y_true)
        xp = backend.get_array_module(y_pred)
        q = xp.clip(y_pred, EPSILON, 1 - EPSILON)
        t = smooth_labels(one_hot_like(y_true, y_pred), self.label_smoothing)
        total = q.sum(axis=-1, keepdims=True)
        self._cache = (q, t, total, (y_pred >= EPSILON) & (y_pred <= 1 - EPSILON))
        # -sum t log(q / S), with sum t = 1 (smoothed or not)
        return _per_sample(xp.log(total) - (t * xp.log(q)).sum(axis=-1, keepdims=True))

    def sample_gradient(self):
        if self._logits is not None:
            return self._logits.sample_gradient()
        q, t, total, mask = self._cache
        return (1 / total - t / q) * mask / _rows(q)


class SoftmaxCrossEntropy(Loss):
    """Softmax and cross-entropy in one step, from the logits z.

    log softmax(z) = z - logsumexp(z), with logsumexp(z) = m + log sum exp(z - m)
    and m the row maximum, so nothing overflows even for logits of 1e4; and the
    gradient collapses to (p - t) / N.
    """
    name = "softmax_crossentropy"

    def __init__(self, sparse: bool = False, label_smoothing: float = 0.0) -> None:
        self.sparse = sparse
        self.label_smoothing = _label_smoothing(label_smoothing, self.name)

    def _targets(self, logits: Array, y_true: Array) -> Array:
        if self.sparse:
            y_true = one_hot_like(y_true, logits)
        if y_true.shape != logits.shape:  # the kernel would read past the end of y_true
            raise ValueError(f"{self.name}: targets of shape {tuple(y_true.shape)} do not match "
                             f"the logits' {tuple(logits.shape)}; give one-hot rows, or use "
                             "the sparse loss for integer labels")
        return smooth_labels(y_true, self.label_smoothing)

    def forward(self, logits: Array, y_true: Array, sample_weight: Array | None = None) -> Array:
        if sample_weight is not None or logits.ndim != 2:
            return super().forward(logits, y_true, sample_weight)
        y_true = self._targets(logits, y_true)
        loss, p = ops.softmax_cross_entropy(logits, y_true)  # one launch on a GPU
        self._cache = (p, y_true)
        self._scale = 1.0 / logits.shape[0]
        return loss

    def values(self, logits, y_true):
        xp = backend.get_array_module(logits)
        y_true = self._targets(logits, y_true)
        shifted = logits - logits.max(axis=-1, keepdims=True)
        log_p = shifted - xp.log(xp.exp(shifted).sum(axis=-1, keepdims=True))
        self._cache = (xp.exp(log_p), y_true)
        return _per_sample(-(y_true * log_p).sum(axis=-1)[..., None])

    def sample_gradient(self):
        p, t = self._cache
        rows = _rows(p)
        return p - t if rows == 1 else (p - t) / rows

    def probabilities(self) -> Array:
        return self._cache[0]


class SigmoidCrossEntropy(Loss):
    """Sigmoid and binary cross-entropy in one step, from the logits z (see the module
    docstring): finite for any z, gradient (sigmoid(z) - t) / K."""
    name = "sigmoid_crossentropy"

    def values(self, logits, y_true):
        xp = backend.get_array_module(logits)
        t = y_true.astype(logits.dtype, copy=False)
        if t.shape != logits.shape:
            raise ValueError(f"{self.name}: targets of shape {tuple(t.shape)} do not match "
                             f"the logits' {tuple(logits.shape)}")
        self._p = activations.Sigmoid().forward(logits)
        self._t = t
        per_entry = xp.maximum(logits, 0) - t * logits + xp.log1p(xp.exp(-xp.abs(logits)))
        return _per_sample(per_entry)

    def sample_gradient(self):
        return (self._p - self._t) / _entries(self._p)

    def probabilities(self) -> Array:
        return self._p


LOSSES = {
    "mean_squared_error": MeanSquaredError, "mse": MeanSquaredError, "MSE": MeanSquaredError,
    "mean_absolute_error": MeanAbsoluteError, "mae": MeanAbsoluteError,
    "MAE": MeanAbsoluteError,
    "mean_absolute_percentage_error": MeanAbsolutePercentageError,
    "mape": MeanAbsolutePercentageError, "MAPE": MeanAbsolutePercentageError,
    "mean_squared_logarithmic_error": MeanSquaredLogarithmicError,
    "msle": MeanSquaredLogarithmicError, "MSLE": MeanSquaredLogarithmicError,
    "hinge": Hinge, "squared_hinge": SquaredHinge, "categorical_hinge": CategoricalHinge,
    "logcosh": Logcosh,
    "kullback_leibler_divergence": KullbackLeiblerDivergence,
    "kld": KullbackLeiblerDivergence, "KLD": KullbackLeiblerDivergence,
    "poisson": Poisson,
    "cosine_proximity": CosineProximity, "cosine": CosineProximity,
    "binary_crossentropy": BinaryCrossentropy,
    "categorical_crossentropy": CategoricalCrossentropy,
    "sparse_categorical_crossentropy": SparseCategoricalCrossentropy,
}


def serialize(loss: Loss) -> str | dict:
    """The loss's name, or ``{"class_name": name, "config": {...}}`` when it was made with
    arguments (``CategoricalCrossentropy(label_smoothing=0.2)``): what ``get`` takes back."""
    config = loss.get_config()
    return {"class_name": loss.name, "config": config} if config else loss.name


def get(identifier: str | dict | list[str] | tuple[str, ...] | Loss) -> Loss:
    """A loss from a name, a one-element list of names (Keras accepts both), ``serialize``'s
    dict or an instance."""
    if isinstance(identifier, dict):
        name, config = identifier.get("class_name"), identifier.get("config", {})
        if name not in LOSSES or not isinstance(config, dict):
            raise ValueError('loss: expected {"class_name": a loss name, "config": {...}}, '
                             f"got {identifier!r}")
        try:
            return LOSSES[name](**config)
        except TypeError as exc:
            raise ValueError(f"loss: {name} does not take the config {config!r}: {exc}") from None
    if isinstance(identifier, (list, tuple)):
        if len(identifier) != 1:
            raise ValueError(f"loss: a Sequential model has one output, so give one loss, "
                             f"got {len(identifier)}: {identifier!r}")
        identifier = identifier[0]
    if isinstance(identifier, Loss):
        return identifier
    if callable(identifier) and not isinstance(identifier, type):
        raise ValueError(f"loss: {identifier!r} has no gradient; a custom loss must subclass "
                         "minicnn.losses.Loss and define values() and sample_gradient()")
    if not isinstance(identifier, str) or identifier not in LOSSES:
        raise ValueError(f"unknown loss {identifier!r}: expected one of "
                         f"{', '.join(sorted(LOSSES))}")
    return LOSSES[identifier]()


def fused_with(loss: Loss, final_activation: activations.ActivationFunction | None
               ) -> Loss | None:
    """The fused loss to use when the model's last activation meets its matching
    cross-entropy (softmax + categorical, sigmoid + binary), else None."""
    if isinstance(loss, CategoricalCrossentropy) and isinstance(final_activation,
                                                               activations.Softmax):
        if loss.from_logits:  # tf.keras reads the softmax's outputs as logits, so does this
            return None
        return SoftmaxCrossEntropy(sparse=loss.sparse, label_smoothing=loss.label_smoothing)
    if type(loss) is BinaryCrossentropy and isinstance(final_activation, activations.Sigmoid):
        return SigmoidCrossEntropy()
    return None


def fused_with_softmax(loss: Loss, final_activation: Any) -> Loss | None:
    """``fused_with``, under its older name."""
    return fused_with(loss, final_activation)
