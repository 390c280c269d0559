"""Losses (values, stability, the fused softmax path) and SGD (decay, momentum)."""
from __future__ import annotations

import math

import numpy as np
import pytest

import minicnn
from minicnn import losses, optimizers
from minicnn.layers import Activation, Dense, Flatten
from minicnn.models import Sequential
from minicnn.optimizers import SGD
from minicnn.utils import to_categorical

from conftest import assert_close


# ---------------------------------------------------------------- references (float64, host)
def logsumexp_reference(row):
    m = max(float(v) for v in row)
    return m + math.log(sum(math.exp(float(v) - m) for v in row))


def softmax_xent_reference(z, t):
    total = 0.0
    for n in range(z.shape[0]):
        lse = logsumexp_reference(z[n])
        total += sum(float(t[n, k]) * (lse - float(z[n, k])) for k in range(z.shape[1]))
    return total / z.shape[0]


def softmax_reference(z):
    z = np.asarray(z, dtype=np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


HUGE = np.array([[1e4, -1e4, 0.0],
                 [-1e4, -1e4, -1e4],
                 [1e4, 1e4, -1e4],
                 [-1e4, 0.0, 1e4],
                 [3.0, -2.0, 0.5]])
HUGE_LABELS = np.array([1, 2, 0, 0, 2])  # includes confidently wrong answers


# ---------------------------------------------------------------- fused softmax cross-entropy
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fused_loss_is_finite_for_huge_logits_and_matches_logsumexp(backend, dtype):
    t = to_categorical(HUGE_LABELS, 3, dtype=dtype)
    loss = losses.SoftmaxCrossEntropy()
    value = loss.forward(minicnn.to_device(HUGE, dtype=dtype), minicnn.to_device(t))
    grad = minicnn.to_host(loss.backward())
    assert np.isfinite(float(value))
    assert np.all(np.isfinite(grad))
    expected = softmax_xent_reference(HUGE, t)
    assert expected > 1e3  # the wrong answers cost ~2e4/N: a clipped or NaN loss would show
    assert float(value) == pytest.approx(expected, rel=1e-6)
    np.testing.assert_allclose(grad, (softmax_reference(HUGE) - t) / HUGE.shape[0], atol=1e-7)
    assert grad.dtype == np.dtype(dtype)


def test_fused_loss_matches_reference_on_ordinary_logits(backend):
    minicnn.set_floatx("float64")
    z = np.random.default_rng(0).standard_normal((6, 5)) * 3
    t = to_categorical([0, 1, 2, 3, 4, 0], 5, dtype="float64")
    loss = losses.SoftmaxCrossEntropy()
    value = float(loss.forward(minicnn.to_device(z), minicnn.to_device(t)))
    assert value == pytest.approx(softmax_xent_reference(z, t), rel=1e-12)
    np.testing.assert_allclose(minicnn.to_host(loss.probabilities()), softmax_reference(z),
                               rtol=1e-12)


@pytest.mark.parametrize("label_shape", ["(N,)", "(N, 1)"])
def test_sparse_equals_one_hot(backend, label_shape):
    labels = HUGE_LABELS if label_shape == "(N,)" else HUGE_LABELS.reshape(-1, 1)
    dense, sparse = losses.SoftmaxCrossEntropy(), losses.SoftmaxCrossEntropy(sparse=True)
    z = minicnn.to_device(HUGE / 1e3, dtype="float32")
    a = float(dense.forward(z, minicnn.to_device(to_categorical(HUGE_LABELS, 3))))
    b = float(sparse.forward(z, minicnn.to_device(labels)))
    assert a == b  # exact: the sparse loss makes the one-hot rows, then the same arithmetic
    np.testing.assert_array_equal(minicnn.to_host(dense.backward()),
                                  minicnn.to_host(sparse.backward()))
    # and the unfused losses on probabilities that no clip touches (where one does,
    # Keras's sparse loss clips before it normalises: see test_losses_keras.py)
    p = minicnn.to_device(softmax_reference(HUGE[-1:].repeat(5, axis=0)), dtype="float32")
    c = losses.CategoricalCrossentropy()
    s = losses.SparseCategoricalCrossentropy()
    assert_close(float(c.forward(p, minicnn.to_device(to_categorical(HUGE_LABELS, 3)))),
                 float(s.forward(p, minicnn.to_device(labels))))
    assert_close(minicnn.to_host(c.backward()), minicnn.to_host(s.backward()))


def test_categorical_crossentropy_on_probabilities_values(backend):
    p = np.array([[0.7, 0.2, 0.1], [0.0, 1.0, 0.0]])
    t = np.array([[1.0, 0, 0], [1.0, 0, 0]])
    value = float(losses.CategoricalCrossentropy().forward(minicnn.to_device(p, "float64"),
                                                           minicnn.to_device(t)))
    # the zero probability is clipped to 1e-7 as Keras does, not -log(0) = inf
    assert value == pytest.approx((-math.log(0.7) - math.log(1e-7)) / 2, rel=1e-9)


def test_mean_squared_error_value(backend):
    p = np.array([[1.0, 2.0], [3.0, 5.0]])
    t = np.array([[1.0, 0.0], [0.0, 1.0]])
    loss = losses.get("mse")
    value = float(loss.forward(minicnn.to_device(p), minicnn.to_device(t)))
    assert value == pytest.approx((0 + 4 + 9 + 16) / 4)
    np.testing.assert_allclose(minicnn.to_host(loss.backward()), 2 * (p - t) / 4)


def test_loss_lookup():
    assert isinstance(losses.get("categorical_crossentropy"), losses.CategoricalCrossentropy)
    assert isinstance(losses.get(["categorical_crossentropy"]), losses.CategoricalCrossentropy)
    assert losses.get("sparse_categorical_crossentropy").sparse is True
    assert isinstance(losses.get("mean_squared_error"), losses.MeanSquaredError)
    mine = losses.MeanSquaredError()
    assert losses.get(mine) is mine
    with pytest.raises(ValueError, match="one loss, got 2"):
        losses.get(["mse", "mse"])


def test_fused_only_for_softmax_with_crossentropy():
    softmax, relu = Activation("softmax").activation, Activation("relu").activation
    fused = losses.fused_with_softmax(losses.get("categorical_crossentropy"), softmax)
    assert isinstance(fused, losses.SoftmaxCrossEntropy) and not fused.sparse
    assert losses.fused_with_softmax(losses.get("sparse_categorical_crossentropy"), softmax).sparse
    assert losses.fused_with_softmax(losses.get("mse"), softmax) is None
    assert losses.fused_with_softmax(losses.get("categorical_crossentropy"), relu) is None
    assert losses.fused_with_softmax(losses.get("categorical_crossentropy"), None) is None


# ---------------------------------------------------------------- the model's fused path
def _record_head(model):
    """Wrap the last layer so the gradient handed to it is recorded, and make sure
    the fused path never calls the softmax's own backward."""
    head = model.layers[-1]
    seen = {}
    original = head._backward

    def recording(grad):
        seen["grad"] = minicnn.to_host(grad).copy()
        return original(grad)

    def forbidden(grad):
        raise AssertionError("the fused path must not run the softmax backward")

    head._backward = recording
    head.activation.backward = forbidden
    return seen


@pytest.mark.parametrize("head", ["dense-softmax", "activation-softmax"])
@pytest.mark.parametrize("loss", ["categorical_crossentropy", "sparse_categorical_crossentropy"])
def test_model_uses_fused_path(backend, head, loss):
    layers = [Flatten(input_shape=(2, 2, 2)), Dense(6, activation="tanh")]
    layers += [Dense(4, activation="softmax")] if head == "dense-softmax" else \
        [Dense(4), Activation("softmax")]
    model = Sequential(layers)
    model.compile(optimizer=SGD(lr=0.1), loss=[loss])
    assert isinstance(model.loss_function(), minicnn.losses.SoftmaxCrossEntropy)
    assert model.loss_function().sparse == loss.startswith("sparse")
    x = np.random.default_rng(0).standard_normal((5, 2, 2, 2)).astype(np.float32)
    labels = np.array([0, 3, 1, 2, 3])
    t = to_categorical(labels, 4)
    p = model.predict(x)  # softmax(z) with the weights before the step
    seen = _record_head(model)
    y = labels if loss.startswith("sparse") else t
    model.train_on_batch(minicnn.to_device(x), minicnn.to_device(y))
    np.testing.assert_allclose(seen["grad"], (p - t) / 5, rtol=1e-5, atol=1e-7)


def test_model_without_softmax_or_crossentropy_is_not_fused(backend):
    model = Sequential([Dense(3, activation="softmax", input_shape=(4,))])
    model.compile(optimizer="sgd", loss="mse")
    assert not isinstance(model.loss_function(), minicnn.losses.SoftmaxCrossEntropy)
    model = Sequential([Dense(3, activation="sigmoid", input_shape=(4,))])
    model.compile(optimizer="sgd", loss="categorical_crossentropy")
    assert not isinstance(model.loss_function(), minicnn.losses.SoftmaxCrossEntropy)


# ---------------------------------------------------------------- SGD
def _dense_with_known_gradient():
    """A Dense(2) on 3 inputs whose backward, for the fixed x and dy, gives
    dW = x^T dy and db = sum_n dy, computed here independently."""
    minicnn.set_floatx("float64")
    layer = Dense(2)
    layer.build((None, 3))
    x = np.array([[1.0, 2.0, -1.0], [0.5, -1.0, 3.0]])
    dy = np.array([[1.0, -2.0], [0.25, 4.0]])
    dw = np.array([[sum(x[n, i] * dy[n, u] for n in range(2)) for u in range(2)]
                   for i in range(3)])
    db = dy.sum(axis=0)

    def step(optimizer):
        layer.forward(minicnn.to_device(x), training=True)
        layer.backward(minicnn.to_device(dy))
        optimizer.apply([layer])

    return layer, step, dw, db


def test_sgd_time_based_decay_measured_on_parameter_change(backend):
    layer, step, dw, db = _dense_with_known_gradient()
    lr, decay = 0.05, 0.5  # a large decay, so every step's rate is different
    opt = SGD(lr=lr, decay=decay)
    for k in range(6):
        assert opt.iterations == k
        before_w = minicnn.to_host(layer.params["kernel"]).copy()
        before_b = minicnn.to_host(layer.params["bias"]).copy()
        step(opt)
        rate = lr / (1 + decay * k)  # the rate used by update k+1, after k updates
        np.testing.assert_allclose(before_w - minicnn.to_host(layer.params["kernel"]), rate * dw,
                                   rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(before_b - minicnn.to_host(layer.params["bias"]), rate * db,
                                   rtol=1e-12, atol=1e-15)
    assert opt.iterations == 6
    assert opt.current_learning_rate == pytest.approx(lr / (1 + decay * 6))


def test_sgd_tutorial_arguments_are_accepted():
    opt = SGD(lr=0.05, decay=1e-4)
    assert opt.lr == 0.05 and opt.learning_rate == 0.05
    assert opt.decay == 1e-4 and opt.momentum == 0.0 and opt.nesterov is False
    assert opt.iterations == 0
    assert opt.current_learning_rate == 0.05
    opt.iterations = 1000
    assert opt.current_learning_rate == pytest.approx(0.05 / 1.1)
    assert SGD(learning_rate=0.2).lr == 0.2
    assert isinstance(optimizers.get("sgd"), SGD)
    assert optimizers.get(opt) is opt


def test_sgd_iterations_count_batches_in_fit(backend):
    model = Sequential([Dense(2, activation="softmax", input_shape=(3,))])
    opt = SGD(lr=0.01, decay=1e-4)
    model.compile(optimizer=opt, loss="categorical_crossentropy")
    x = np.random.default_rng(0).standard_normal((10, 3))
    y = to_categorical(np.arange(10) % 2, 2)
    model.fit(x, y, batch_size=4, epochs=2, verbose=0)
    assert opt.iterations == 2 * 3  # ceil(10 / 4) batches per epoch


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_momentum_matches_hand_written_reference(backend, nesterov):
    layer, step, dw, db = _dense_with_known_gradient()
    lr, momentum, decay = 0.1, 0.9, 0.2
    opt = SGD(learning_rate=lr, momentum=momentum, decay=decay, nesterov=nesterov)
    w = minicnn.to_host(layer.params["kernel"]).copy()
    b = minicnn.to_host(layer.params["bias"]).copy()
    vw, vb = np.zeros_like(w), np.zeros_like(b)
    for k in range(5):
        step(opt)  # the gradient does not depend on the weights: always dw, db
        rate = lr / (1 + decay * k)
        vw = momentum * vw - rate * dw
        vb = momentum * vb - rate * db
        if nesterov:
            w = w + momentum * vw - rate * dw
            b = b + momentum * vb - rate * db
        else:
            w, b = w + vw, b + vb
        np.testing.assert_allclose(minicnn.to_host(layer.params["kernel"]), w, rtol=1e-12)
        np.testing.assert_allclose(minicnn.to_host(layer.params["bias"]), b, rtol=1e-12)


def test_sgd_momentum_differs_from_plain_sgd(backend):
    layer_a, step_a, _, _ = _dense_with_known_gradient()
    minicnn.set_seed(0)
    layer_b, step_b, _, _ = _dense_with_known_gradient()
    plain, heavy = SGD(lr=0.1), SGD(lr=0.1, momentum=0.9)
    for _ in range(3):
        step_a(plain)
        step_b(heavy)
    assert not np.allclose(minicnn.to_host(layer_a.params["kernel"]),
                           minicnn.to_host(layer_b.params["kernel"]))


def test_sgd_updates_in_place_and_keeps_float32(backend):
    layer = Dense(3)
    layer.build((None, 2))
    kernel = layer.params["kernel"]
    layer.forward(minicnn.to_device(np.ones((4, 2), np.float32)), training=True)
    layer.backward(minicnn.to_device(np.ones((4, 3), np.float32)))
    SGD(lr=0.1, momentum=0.5, nesterov=True).apply([layer])
    assert layer.params["kernel"] is kernel
    assert kernel.dtype == np.float32 and layer.params["bias"].dtype == np.float32


# ---------------------------------------------------------------- to_categorical
def test_to_categorical():
    out = to_categorical([2, 0, 1], 4)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [[0, 0, 1, 0], [1, 0, 0, 0], [0, 1, 0, 0]])
    np.testing.assert_array_equal(to_categorical(np.array([[1], [0]])), [[0, 1], [1, 0]])
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\]"):
        to_categorical([0, 3], 3)
