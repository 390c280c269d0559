"""Keras 2.2.4's losses: each value against a per-sample loop written here, the fused
sigmoid + binary cross-entropy, sample weights (value, gradient, zero weights) and
class weights, in fit, train_on_batch, test_on_batch and evaluate."""
from __future__ import annotations

import math

import numpy as np
import pytest

import minicnn
from minicnn import losses
from minicnn.gradcheck import DEFAULT_TOLERANCE, check_loss, check_model
from minicnn.layers import Dense
from minicnn.models import Sequential
from minicnn.optimizers import SGD
from minicnn.utils import to_categorical

from conftest import assert_close

EPS = 1e-7


def clip(v, low, high):
    return min(max(v, low), high)


# ---------------------------------------------------------------- naive references
# One function per loss: the loss of one sample's row (a list of floats), Keras's formula.
def mse(p, t):
    return sum((a - b) ** 2 for a, b in zip(p, t)) / len(p)


def mae(p, t):
    return sum(abs(a - b) for a, b in zip(p, t)) / len(p)


def mape(p, t):
    return 100 * sum(abs(b - a) / max(abs(b), EPS) for a, b in zip(p, t)) / len(p)


def msle(p, t):
    return sum((math.log(max(a, EPS) + 1) - math.log(max(b, EPS) + 1)) ** 2
               for a, b in zip(p, t)) / len(p)


def hinge(p, t):
    return sum(max(1 - a * b, 0) for a, b in zip(p, t)) / len(p)


def squared_hinge(p, t):
    return sum(max(1 - a * b, 0) ** 2 for a, b in zip(p, t)) / len(p)


def categorical_hinge(p, t):
    pos = sum(a * b for a, b in zip(p, t))
    neg = max((1 - b) * a for a, b in zip(p, t))
    return max(0.0, neg - pos + 1)


def logcosh(p, t):
    return sum(math.log(math.cosh(a - b)) for a, b in zip(p, t)) / len(p)


def kld(p, t):
    return sum(clip(b, EPS, 1) * math.log(clip(b, EPS, 1) / clip(a, EPS, 1))
               for a, b in zip(p, t))


def poisson(p, t):
    return sum(a - b * math.log(a + EPS) for a, b in zip(p, t)) / len(p)


def cosine(p, t):
    norm_p = math.sqrt(max(sum(a * a for a in p), 1e-12))
    norm_t = math.sqrt(max(sum(b * b for b in t), 1e-12))
    return -sum(a / norm_p * b / norm_t for a, b in zip(p, t))


def binary_crossentropy(p, t):
    total = 0.0
    for a, b in zip(p, t):
        q = clip(a, EPS, 1 - EPS)
        total -= b * math.log(q) + (1 - b) * math.log(1 - q)
    return total / len(p)


def categorical_crossentropy(p, t):
    s = sum(p)
    return -sum(b * math.log(clip(a / s, EPS, 1 - EPS)) for a, b in zip(p, t))


REFERENCES = {
    "mean_squared_error": mse, "mean_absolute_error": mae,
    "mean_absolute_percentage_error": mape, "mean_squared_logarithmic_error": msle,
    "hinge": hinge, "squared_hinge": squared_hinge, "categorical_hinge": categorical_hinge,
    "logcosh": logcosh, "kullback_leibler_divergence": kld, "poisson": poisson,
    "cosine_proximity": cosine, "binary_crossentropy": binary_crossentropy,
    "categorical_crossentropy": categorical_crossentropy,
}
ALIASES = {"mse": "mean_squared_error", "MSE": "mean_squared_error", "mae": "mean_absolute_error",
           "MAE": "mean_absolute_error", "mape": "mean_absolute_percentage_error",
           "MAPE": "mean_absolute_percentage_error", "msle": "mean_squared_logarithmic_error",
           "MSLE": "mean_squared_logarithmic_error", "kld": "kullback_leibler_divergence",
           "KLD": "kullback_leibler_divergence", "cosine": "cosine_proximity"}


def case(name, rng, shape):
    """(y_pred, y_true) in the loss's domain, with values that make the clips matter:
    a zero probability, a zero target for the percentage error."""
    k = shape[-1]
    if name in ("categorical_crossentropy", "kullback_leibler_divergence"):
        p = rng.uniform(0, 1, shape)
        p[0, ..., 0] = 0.0  # clipped to eps
        t = to_categorical(rng.integers(0, k, shape[:-1]).reshape(-1), k).reshape(shape)
        if name == "kullback_leibler_divergence":
            t = rng.dirichlet(np.ones(k), shape[:-1])
            p = p / p.sum(axis=-1, keepdims=True)
        return p, t
    if name == "binary_crossentropy":
        p = rng.uniform(0, 1, shape)
        p.flat[0], p.flat[1] = 0.0, 1.0  # both clips
        return p, rng.integers(0, 2, shape).astype(float)
    if name in ("mean_squared_logarithmic_error", "poisson"):
        p = rng.uniform(0, 3, shape)
        if name == "mean_squared_logarithmic_error":
            p.flat[0] = -0.5  # max(p, eps)
        return p, rng.uniform(0, 3, shape)
    if name in ("hinge", "squared_hinge"):
        return rng.standard_normal(shape), rng.choice([-1.0, 1.0], shape)
    if name == "categorical_hinge":
        return rng.standard_normal(shape), to_categorical(
            rng.integers(0, k, int(np.prod(shape[:-1]))), k).reshape(shape)
    p, t = rng.standard_normal(shape), rng.standard_normal(shape)
    if name == "mean_absolute_percentage_error":
        t.flat[0] = 0.0  # max(|t|, eps)
    return p, t


def per_sample_reference(name, p, t):
    """Each sample's loss: the row formula, averaged over any axes between batch and last."""
    n, k = p.shape[0], p.shape[-1]
    rows_p, rows_t = p.reshape(n, -1, k).tolist(), t.reshape(n, -1, k).tolist()  # Python floats
    return np.array([np.mean([REFERENCES[name](rp, rt) for rp, rt in zip(bp, bt)])
                     for bp, bt in zip(rows_p, rows_t)])


@pytest.mark.parametrize("name", sorted(REFERENCES))
@pytest.mark.parametrize("shape", [(5, 4), (3, 2, 4)], ids=["(N, K)", "(N, 2, K)"])
def test_every_loss_matches_a_per_sample_loop(backend, name, shape):
    minicnn.set_floatx("float64")
    rng = np.random.default_rng(len(name))
    p, t = case(name, rng, shape)
    expected = per_sample_reference(name, p, t)
    loss = losses.get(name)
    value = loss.forward(minicnn.to_device(p), minicnn.to_device(t))
    assert_close(float(value), expected.mean())
    w = rng.uniform(0, 2, shape[0])
    w[1] = 0.0
    weighted = losses.get(name).forward(minicnn.to_device(p), minicnn.to_device(t),
                                        minicnn.to_device(w))
    # Keras 2.2.4's weighted_masked_objective: mean(w * l) / mean(w != 0)
    assert_close(float(weighted), np.mean(w * expected) / np.mean(w != 0))


@pytest.mark.parametrize("alias,name", sorted(ALIASES.items()))
def test_keras_aliases(alias, name):
    assert losses.get(alias).name == name


def test_sparse_categorical_crossentropy_matches_the_loop(backend):
    minicnn.set_floatx("float64")
    rng = np.random.default_rng(3)
    p, labels = rng.uniform(0.01, 1, (6, 4)), rng.integers(0, 4, 6)
    expected = np.mean([categorical_crossentropy(row, np.eye(4)[c].tolist())
                        for row, c in zip(p.tolist(), labels)])
    value = losses.get("sparse_categorical_crossentropy").forward(minicnn.to_device(p),
                                                                  minicnn.to_device(labels))
    assert_close(float(value), expected)


def test_sparse_categorical_crossentropy_clips_then_normalises_as_keras_does(backend):
    """Keras 2.2.4 (TensorFlow): sparse_softmax_cross_entropy_with_logits of
    log(clip(p, eps, 1 - eps)), i.e. -log(q_k / sum_j q_j); outputs that do not sum to
    1 and entries beyond the clip tell it from the one-hot loss, which rescales first."""
    minicnn.set_floatx("float64")
    eps = 1e-7
    p = np.array([[2.0, 0.5, 0.5], [0.0, 0.3, 0.9], [0.2, 3.0, 0.4], [0.1, 0.2, 0.3]])
    labels = np.array([0, 0, 2, 1])
    expected = []
    for row, k in zip(p.tolist(), labels.tolist()):
        q = [min(max(v, eps), 1 - eps) for v in row]
        expected.append(-math.log(q[k] / sum(q)))
    value = losses.get("sparse_categorical_crossentropy").forward(minicnn.to_device(p),
                                                                  minicnn.to_device(labels))
    assert_close(float(value), np.mean(expected))
    assert_close(expected[0], -math.log((1 - eps) / (2 - eps)))  # not -log(2/3)
    # away from the clip's kinks: entries inside (eps, 1 - eps) and beyond 1
    grad_p = np.array([[2.0, 0.5, 0.25], [0.05, 0.3, 0.9], [0.2, 3.0, 0.4]])
    result = check_loss(losses.SparseCategoricalCrossentropy(), grad_p, np.array([0, 1, 2]))
    assert result.passed, str(result)
    # with label smoothing: -sum_j t_j log(q_j / sum q), t = one-hot (1 - ls) + ls / K
    ls = 0.2
    smoothed = []
    for row, k in zip(p.tolist(), labels.tolist()):
        q = [min(max(v, eps), 1 - eps) for v in row]
        t = [(1 - ls) * (j == k) + ls / 3 for j in range(3)]
        smoothed.append(-sum(tj * math.log(qj / sum(q)) for tj, qj in zip(t, q)))
    loss = losses.SparseCategoricalCrossentropy(label_smoothing=ls)
    assert_close(float(loss.forward(minicnn.to_device(p), minicnn.to_device(labels))),
                 np.mean(smoothed))
    result = check_loss(losses.SparseCategoricalCrossentropy(label_smoothing=ls), grad_p,
                        np.array([0, 1, 2]))
    assert result.passed, str(result)


def test_categorical_crossentropy_rescales_outputs_as_keras_does(backend):
    """Keras divides the outputs by their sum before the log: twice the probabilities,
    the same loss, and a gradient that sees the rescaling."""
    minicnn.set_floatx("float64")
    p = np.array([[0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])
    t = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    a = float(losses.CategoricalCrossentropy().forward(minicnn.to_device(p), minicnn.to_device(t)))
    b = float(losses.CategoricalCrossentropy().forward(minicnn.to_device(2 * p),
                                                       minicnn.to_device(t)))
    assert_close(b, a)
    assert_close(a, -(math.log(0.5) + math.log(0.6)) / 2)
    result = check_loss(losses.CategoricalCrossentropy(), 2 * p, t)
    assert result.passed, str(result)


# ---------------------------------------------------------------- fused sigmoid
def sigmoid(z):
    return np.exp(-np.logaddexp(0, -np.asarray(z, dtype=np.float64)))  # no overflow


def log_sigmoid_reference(z, t):
    """-t log sigmoid(z) - (1 - t) log(1 - sigmoid(z)), per entry, in float64 with the
    stable forms log sigmoid(z) = -log1p(e^-z) for z >= 0 and z - log1p(e^z) below."""
    z, t = np.asarray(z, dtype=np.float64), np.asarray(t, dtype=np.float64)
    log_p = np.where(z >= 0, -np.log1p(np.exp(-np.abs(z))), z - np.log1p(np.exp(-np.abs(z))))
    log_q = log_p - z  # log(1 - sigmoid(z)) = log sigmoid(z) - z
    return -(t * log_p + (1 - t) * log_q)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fused_sigmoid_is_finite_for_extreme_logits(backend, dtype):
    z = np.array([[1e4, -1e4], [-1e4, 1e4], [50.0, -50.0], [0.0, 3.0]])
    t = np.array([[0.0, 1.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0]])
    loss = losses.SigmoidCrossEntropy()
    value = float(loss.forward(minicnn.to_device(z, dtype=dtype), minicnn.to_device(t, dtype)))
    grad = minicnn.to_host(loss.backward())
    expected = log_sigmoid_reference(z, t).mean(axis=1).mean()
    assert expected > 1e3  # the confidently wrong answers cost their full price
    assert math.isfinite(value) and np.all(np.isfinite(grad))
    assert value == pytest.approx(expected, rel=1e-6)
    np.testing.assert_allclose(grad, (sigmoid(z) - t) / z.size, atol=1e-7)
    assert grad.dtype == np.dtype(dtype)


def test_fused_sigmoid_equals_binary_crossentropy_through_the_sigmoid(backend):
    """Where the clip is idle the fused loss on z is binary_crossentropy(sigmoid(z)), and
    its gradient is that function's central difference in z."""
    minicnn.set_floatx("float64")
    for seed in range(10):
        rng = np.random.default_rng(seed)
        z, t = rng.standard_normal((4, 3)) * 3, rng.uniform(0, 1, (4, 3))
        fused = losses.SigmoidCrossEntropy()
        value = float(fused.forward(minicnn.to_device(z), minicnn.to_device(t)))
        grad = minicnn.to_host(fused.backward())

        def through_sigmoid(zz):
            return np.mean([binary_crossentropy(row, trow)
                            for row, trow in zip(sigmoid(zz).tolist(), t.tolist())])

        assert_close(value, through_sigmoid(z))
        numeric = np.zeros_like(z)
        for i in np.ndindex(z.shape):
            up, down = z.copy(), z.copy()
            up[i] += 1e-6
            down[i] -= 1e-6
            numeric[i] = (through_sigmoid(up) - through_sigmoid(down)) / 2e-6
        np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-9)


def test_a_sigmoid_head_is_fused_with_binary_crossentropy():
    model = Sequential([Dense(3, activation="tanh", input_shape=(4,)),
                        Dense(2, activation="sigmoid")])
    model.compile(SGD(), "binary_crossentropy")
    assert isinstance(model.loss_function(), losses.SigmoidCrossEntropy)
    x = np.random.default_rng(0).standard_normal((5, 4))
    y = np.random.default_rng(1).integers(0, 2, (5, 2)).astype("float32")
    out = model.predict(x)
    assert_close(model.evaluate(x, y), np.mean([binary_crossentropy(p, t) for p, t in
                                                zip(out.tolist(), y.tolist())]), rtol=1e-5)


def test_binary_targets_of_shape_n_for_one_output(backend):
    """Keras makes 1-D targets 2-D: y of shape (N,) for a model with one output unit."""
    model = Sequential([Dense(1, activation="sigmoid", input_shape=(3,))])
    model.compile(SGD(), "binary_crossentropy", metrics=["accuracy"])
    x = np.random.default_rng(0).standard_normal((6, 3))
    y = np.array([0, 1, 1, 0, 1, 0])
    assert model.evaluate(x, y) == model.evaluate(x, y.reshape(-1, 1))


# ---------------------------------------------------------------- sample weights
class Weighted:
    """A loss with its sample weights fixed, as check_loss calls it."""

    def __init__(self, loss, w):
        self.loss, self.w, self.name = loss, minicnn.to_device(w), loss.name

    def forward(self, y_pred, y_true):
        return self.loss.forward(y_pred, y_true, self.w)

    def backward(self):
        return self.loss.backward()


@pytest.mark.parametrize("name", ["mean_squared_error", "softmax", "sigmoid", "hinge",
                                  "categorical_crossentropy"])
def test_weighted_gradients_pass_the_check(name):
    minicnn.set_floatx("float64")
    for seed in range(10):
        rng = np.random.default_rng(seed)
        n, k = 5, 3
        w = rng.uniform(0, 3, n)
        w[rng.integers(n)] = 0.0
        if name == "softmax":
            loss, p, t = losses.SoftmaxCrossEntropy(), rng.standard_normal((n, k)), \
                to_categorical(rng.integers(0, k, n), k, dtype="float64")
        elif name == "sigmoid":
            loss, p, t = losses.SigmoidCrossEntropy(), rng.standard_normal((n, k)), \
                rng.integers(0, 2, (n, k)).astype(float)
        elif name == "categorical_crossentropy":
            loss = losses.CategoricalCrossentropy()
            p, t = rng.uniform(0.1, 1, (n, k)), to_categorical(rng.integers(0, k, n), k)
        else:
            loss = losses.get(name)
            p, t = case(name, rng, (n, k))
        result = check_loss(Weighted(loss, w), p, t)
        assert result.passed, f"seed {seed}: {result}"
        assert result.max_error < DEFAULT_TOLERANCE / 10, f"seed {seed}: {result}"


def test_weighted_fused_softmax_matches_the_reference(backend):
    minicnn.set_floatx("float64")
    rng = np.random.default_rng(0)
    z, labels, w = rng.standard_normal((5, 3)) * 4, rng.integers(0, 3, 5), rng.uniform(0, 2, 5)
    w[2] = 0
    per_sample = [math.log(sum(math.exp(v) for v in row)) - row[c] for row, c in zip(z, labels)]
    loss = losses.SoftmaxCrossEntropy(sparse=True)
    value = loss.forward(minicnn.to_device(z), minicnn.to_device(labels), minicnn.to_device(w))
    assert_close(float(value), np.sum(w * per_sample) / 4)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    assert_close(minicnn.to_host(loss.backward()), w[:, None] * (p - np.eye(3)[labels]) / 4)


def test_all_zero_weights_give_zero_loss(backend):
    loss = losses.get("mse")
    value = loss.forward(minicnn.to_device(np.ones((3, 2))), minicnn.to_device(np.zeros((3, 2))),
                         minicnn.to_device(np.zeros(3)))
    assert float(value) == 0.0
    assert not np.any(minicnn.to_host(loss.backward()))


def regression_model(seed=0):
    minicnn.set_seed(seed)
    model = Sequential([Dense(4, activation="tanh", input_shape=(3,)), Dense(2)])
    model.compile(SGD(lr=0.1), "mse")
    return model


def regression_data(n=8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 3)).astype("float32"), rng.standard_normal((n, 2))


def test_model_gradients_with_sample_weights_pass_check_model():
    minicnn.set_floatx("float64")
    x, y = regression_data()
    w = np.random.default_rng(5).uniform(0, 2, 8)
    model = regression_model()

    class WeightedModel:  # compute_gradients / compute_loss with the weights fixed
        layers, built = model.layers, model.built

        def compute_gradients(self, xx, yy):
            return model.compute_gradients(xx, yy, sample_weight=w)

        def compute_loss(self, xx, yy, training=False):
            return model.compute_loss(xx, yy, training=training, sample_weight=w)

    result = check_model(WeightedModel(), x, y, max_entries=None)
    assert result.passed, str(result)


def test_evaluate_and_test_on_batch_weight_the_loss_as_keras(backend):
    x, y = regression_data()
    model = regression_model()
    w = np.array([1.0, 0.0, 2.0, 0.5, 0.0, 1.0, 3.0, 1.0])
    per_sample = ((model.predict(x) - y) ** 2).mean(axis=1)
    expected = np.mean(w * per_sample) / np.mean(w != 0)
    assert_close(model.test_on_batch(x, y, sample_weight=w), expected, rtol=1e-5)
    assert_close(model.evaluate(x, y, batch_size=8, sample_weight=w), expected, rtol=1e-5)
    # batches of 4: Keras averages the batch losses, weighted by the batch sizes
    halves = [np.mean(w[s] * per_sample[s]) / np.mean(w[s] != 0)
              for s in (slice(0, 4), slice(4, 8))]
    assert_close(model.evaluate(x, y, batch_size=4, sample_weight=w), np.mean(halves), rtol=1e-5)


def test_zero_weights_exclude_samples_from_training():
    x, y = regression_data()
    w = np.array([1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0])
    weighted, subset = regression_model(), regression_model()
    h = weighted.fit(x, y, batch_size=8, epochs=3, verbose=0, shuffle=False, sample_weight=w)
    g = subset.fit(x[w > 0], y[w > 0], batch_size=6, epochs=3, verbose=0, shuffle=False)
    assert_close(h.history["loss"], g.history["loss"], rtol=1e-5)
    for a, b in zip(weighted.get_weights(), subset.get_weights()):
        assert_close(a, b)


def test_class_weight_equals_the_equivalent_sample_weight():
    rng = np.random.default_rng(0)
    x, labels = rng.standard_normal((9, 3)), rng.integers(0, 3, 9)
    class_weight = {0: 0.5, 1: 2.0, 2: 1.0}
    results = []
    for kwargs in (dict(class_weight=class_weight),
                   dict(sample_weight=np.array([class_weight[c] for c in labels]))):
        minicnn.set_seed(1)
        model = Sequential([Dense(4, activation="tanh", input_shape=(3,)),
                            Dense(3, activation="softmax")])
        model.compile(SGD(lr=0.1), "categorical_crossentropy", metrics=["acc"])
        history = model.fit(x, to_categorical(labels, 3), batch_size=4, epochs=2, verbose=0,
                            shuffle=False, **kwargs)
        batch = model.train_on_batch(x, to_categorical(labels, 3), **kwargs)
        results.append((history.history["loss"], batch, model.get_weights()))
    (h1, b1, w1), (h2, b2, w2) = results
    assert h1 == h2 and b1 == b2  # the same weights array: the same arithmetic
    for a, b in zip(w1, w2):
        np.testing.assert_array_equal(a, b)


def test_class_weight_reads_sparse_and_binary_labels():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 3))
    sparse = Sequential([Dense(3, activation="softmax", input_shape=(3,))])
    sparse.compile(SGD(), "sparse_categorical_crossentropy")
    labels = np.array([0, 1, 2, 2, 1, 0])
    per_sample = -np.log(sparse.predict(x)[np.arange(6), labels])
    w = np.array([1.0, 2.0, 3.0, 3.0, 2.0, 1.0])
    before = sparse.get_weights()
    loss = sparse.train_on_batch(x, labels, class_weight={0: 1, 1: 2, 2: 3})
    assert_close(loss, np.sum(w * per_sample) / 6, rtol=1e-5)
    assert not np.array_equal(before[0], sparse.get_weights()[0])
    binary = Sequential([Dense(1, activation="sigmoid", input_shape=(3,))])
    binary.compile(SGD(), "binary_crossentropy")
    y = np.array([0.0, 1.0, 1.0, 0.0, 1.0, 0.0])
    p = binary.predict(x)[:, 0]
    bce = -(y * np.log(p) + (1 - y) * np.log(1 - p))
    loss = binary.test_on_batch(x, y, sample_weight=np.where(y > 0, 4.0, 1.0))
    assert_close(loss, np.sum(np.where(y > 0, 4.0, 1.0) * bce) / 6, rtol=1e-5)
    loss = binary.train_on_batch(x, y, class_weight={0: 1.0, 1: 4.0})
    assert_close(loss, np.sum(np.where(y > 0, 4.0, 1.0) * bce) / 6, rtol=1e-5)


def test_sample_weight_wins_over_class_weight_as_in_keras():
    x, y = regression_data()
    y = to_categorical(np.arange(8) % 2, 2)
    a, b = regression_model(), regression_model()
    w = np.linspace(0.5, 2, 8)
    assert a.train_on_batch(x, y, sample_weight=w, class_weight={0: 9.0, 1: 0.0}) == \
        b.train_on_batch(x, y, sample_weight=w)


def test_validation_sample_weights():
    x, y = regression_data(12)
    w = np.linspace(0, 2, 12)
    model = regression_model()
    history = model.fit(x[:8], y[:8], batch_size=8, epochs=1, verbose=0,
                        validation_data=(x[8:], y[8:], w[8:]))
    assert_close(history.history["val_loss"][0],
                 model.evaluate(x[8:], y[8:], batch_size=8, sample_weight=w[8:]))
    # validation_split carries the weights of the held-out samples along
    split = regression_model()
    history = split.fit(x, y, batch_size=9, epochs=1, verbose=0, validation_split=0.25,
                        sample_weight=w, shuffle=False)
    assert_close(history.history["val_loss"][0],
                 split.evaluate(x[9:], y[9:], batch_size=12, sample_weight=w[9:]))


@pytest.mark.parametrize("kwargs,error,pattern", [
    (dict(sample_weight=np.ones((8, 1))), ValueError,
     r"fit: found a sample_weight array with shape \(8, 1\); give one weight per sample"),
    (dict(sample_weight=np.ones(5)), ValueError, r"fit: x has 8 samples but sample_weight has 5"),
    (dict(sample_weight=np.array([1, 1, 1, 1, -1, 1, 1, 1.0])), ValueError,
     r"sample_weight must be finite and >= 0"),
    (dict(sample_weight=np.full(8, np.nan)), ValueError, r"sample_weight must be finite"),
    (dict(sample_weight=np.array(["a"] * 8)), TypeError, r"expected numeric sample_weight"),
    (dict(class_weight=[1.0, 2.0]), TypeError, r"class_weight must be a dict"),
    (dict(class_weight={0: 1.0}), ValueError,
     r"class_weight must contain all classes in the data. The classes \[1\] exist"),
    (dict(class_weight={0: 1.0, 1: -2.0}), ValueError, r"class_weight\[1\] must be a finite"),
])
def test_bad_weights_are_refused_before_any_step(kwargs, error, pattern):
    x, _ = regression_data()
    y = to_categorical(np.arange(8) % 2, 2)
    model = regression_model()
    before = model.get_weights()
    with pytest.raises(error, match=pattern):
        model.fit(x, y, batch_size=4, verbose=0, **kwargs)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_custom_loss_functions_are_refused_clearly():
    with pytest.raises(ValueError, match=r"has no gradient; a custom loss must subclass"):
        losses.get(lambda y_true, y_pred: (y_true - y_pred) ** 2)


@pytest.mark.parametrize("name", sorted(REFERENCES) + ["sigmoid", "softmax"])
def test_float32_stays_float32(backend, name):
    """Values and gradients in the model's float type: no float64 from a mask or a count."""
    rng = np.random.default_rng(0)
    if name in ("sigmoid", "softmax"):
        loss = losses.SigmoidCrossEntropy() if name == "sigmoid" else losses.SoftmaxCrossEntropy()
        p, t = rng.standard_normal((4, 3)), to_categorical([0, 1, 2, 1], 3)
    else:
        loss, (p, t) = losses.get(name), case(name, rng, (4, 3))
    for w in (None, minicnn.to_device(np.array([1.0, 0.0, 2.0, 0.5]), dtype="float32")):
        value = loss.forward(minicnn.to_device(p, dtype="float32"),
                             minicnn.to_device(t, dtype="float32"), w)
        assert np.asarray(minicnn.to_host(value)).dtype == np.float32
        assert minicnn.to_host(loss.backward()).dtype == np.float32


@pytest.mark.parametrize("targets", ["one-hot", "labels", "float labels", "one output"])
def test_class_weight_is_a_lookup_on_the_device(backend, monkeypatch, targets):
    """class_weight maps each sample's class to its weight without reading the targets
    back to the host (it runs for every batch of a generator)."""
    from minicnn import datachecks  # noqa: PLC0415

    classes = [2, 0, 1, 1, 2, 0, 0]
    class_weight = {0: 0.5, 1: 2.0, 2: 3.0, 7: 9.0}
    if targets == "one output":
        classes = [c % 2 for c in classes]
    expected = np.array([class_weight[c] for c in classes])
    y = {"one-hot": np.eye(3)[classes], "labels": np.array(classes, dtype=np.int64),
         "float labels": np.array(classes, dtype=np.float64),
         "one output": np.array(classes, dtype=np.float64).reshape(-1, 1)}[targets]
    y = minicnn.to_device(y)
    to_host, original = [], datachecks.backend.to_host
    monkeypatch.setattr(datachecks.backend, "to_host", lambda a: to_host.append(a) or original(a))
    weights = datachecks.sample_weights(None, class_weight, y, len(classes), "here")
    assert not to_host
    assert_close(minicnn.to_host(weights), expected.astype(minicnn.floatx()))
    with pytest.raises(ValueError, match=r"here: class_weight must contain all classes in the "
                                         r"data. The classes \[0\] exist"):
        datachecks.sample_weights(None, {1: 2.0, 2: 3.0}, y, len(classes), "here")
