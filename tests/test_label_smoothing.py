"""label_smoothing and from_logits on the categorical cross-entropies (tf.keras's names):
values against loops written here, gradients by central differences, the fused softmax
path (and its GPU kernel through the emulator) and compile with a loss instance."""
from __future__ import annotations

import math

import numpy as np
import pytest

import minicnn
from minicnn import losses
from minicnn.gradcheck import check_loss, check_model
from minicnn.layers import Dense
from minicnn.losses import (CategoricalCrossentropy, SoftmaxCrossEntropy,
                            SparseCategoricalCrossentropy)
from minicnn.models import Sequential
from minicnn.utils import to_categorical

from conftest import assert_close

EPS = 1e-7


def smoothed(label, k, ls):
    return [(1 - ls) * (j == label) + ls / k for j in range(k)]


def naive_from_probabilities(p, labels, ls):
    """Keras: rescale each row to sum 1, clip to [eps, 1 - eps], -sum t' log q; mean over rows."""
    total = 0.0
    for row, label in zip(p.tolist(), labels):
        s = sum(row)
        t = smoothed(label, len(row), ls)
        total -= sum(tj * math.log(min(max(v / s, EPS), 1 - EPS)) for tj, v in zip(t, row))
    return total / len(labels)


def naive_from_logits(z, labels, ls):
    total = 0.0
    for row, label in zip(z.tolist(), labels):
        m = max(row)
        lse = m + math.log(sum(math.exp(v - m) for v in row))
        t = smoothed(label, len(row), ls)
        total -= sum(tj * (v - lse) for tj, v in zip(t, row))
    return total / len(labels)


def cases(rng, n=6, k=5, scale=3.0):
    z = rng.standard_normal((n, k)) * scale
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    labels = rng.integers(0, k, n)
    return z, p, labels


@pytest.mark.parametrize("ls", [0.0, 0.2, 1.0])
def test_values_match_the_smoothed_formula(backend, ls):
    z, p, labels = cases(np.random.default_rng(0))
    z32, p32 = z.astype(np.float32), p.astype(np.float32)
    onehot = to_categorical(labels, 5)
    dev = minicnn.to_device
    from_p, from_z = naive_from_probabilities(p, labels, ls), naive_from_logits(z, labels, ls)
    for loss, pred, target, want in [
            (CategoricalCrossentropy(label_smoothing=ls), p32, onehot, from_p),
            (SparseCategoricalCrossentropy(label_smoothing=ls), p32, labels, from_p),
            (CategoricalCrossentropy(from_logits=True, label_smoothing=ls), z32, onehot, from_z),
            (SparseCategoricalCrossentropy(from_logits=True, label_smoothing=ls), z32, labels, from_z),
            (SoftmaxCrossEntropy(sparse=True, label_smoothing=ls), z32, labels, from_z)]:
        got = float(minicnn.to_host(loss.forward(dev(pred), dev(target))))
        assert got == pytest.approx(want, rel=1e-5), (loss, ls)


def test_the_fused_gradient_is_softmax_minus_the_smoothed_targets(backend):
    z, p, labels = cases(np.random.default_rng(1))
    loss = SoftmaxCrossEntropy(sparse=True, label_smoothing=0.2)
    loss.forward(minicnn.to_device(z.astype(np.float32)), minicnn.to_device(labels))
    want = np.array([[(pj - tj) / len(labels) for pj, tj in zip(row, smoothed(l, 5, 0.2))]
                     for row, l in zip(p.tolist(), labels)])
    assert_close(minicnn.to_host(loss.backward()), want.astype(np.float32))


@pytest.mark.parametrize("make", [
    lambda: CategoricalCrossentropy(label_smoothing=0.2),
    lambda: SparseCategoricalCrossentropy(label_smoothing=0.3),
    lambda: CategoricalCrossentropy(from_logits=True, label_smoothing=0.2),
    lambda: SparseCategoricalCrossentropy(from_logits=True, label_smoothing=0.1),
    lambda: SoftmaxCrossEntropy(label_smoothing=0.2)])
def test_gradients_pass_central_differences(make):
    minicnn.set_floatx("float64")
    for seed in range(5):
        # probabilities not too near 0: every smoothed target weighs 1/p, steep there
        z, p, labels = cases(np.random.default_rng(seed), scale=0.5)
        loss = make()
        pred = z if getattr(loss, "from_logits", True) else p
        target = labels if loss.sparse else to_categorical(labels, 5, dtype="float64")
        result = check_loss(loss, pred, target)
        assert result.passed, f"seed {seed}: {result}"


def test_compile_with_a_loss_instance_fuses_and_keeps_the_smoothing():
    minicnn.set_floatx("float64")
    rng = np.random.default_rng(0)
    x, labels = rng.standard_normal((6, 4)), rng.integers(0, 3, 6)
    for final, loss in [("softmax", CategoricalCrossentropy(label_smoothing=0.2)),
                        ("linear", CategoricalCrossentropy(from_logits=True, label_smoothing=0.2))]:
        minicnn.set_seed(0)
        model = Sequential([Dense(5, activation="tanh", input_shape=(4,)),
                            Dense(3, activation=final)])
        model.compile(optimizer="sgd", loss=loss)
        if final == "softmax":
            fused = model.loss_function()
            assert isinstance(fused, SoftmaxCrossEntropy) and fused.label_smoothing == 0.2
        y = to_categorical(labels, 3, dtype="float64")
        logits = np.tanh(x @ model.layers[0].params["kernel"] + model.layers[0].params["bias"]) \
            @ model.layers[1].params["kernel"] + model.layers[1].params["bias"]
        got = float(minicnn.to_host(model.compute_loss(x, y)))
        assert got == pytest.approx(naive_from_logits(logits, labels, 0.2), rel=1e-10)
        result = check_model(model, x, y, max_entries=None)
        assert result.passed, f"{final}: {result}"


def test_from_logits_after_a_softmax_reads_the_probabilities_as_logits():
    z, p, labels = cases(np.random.default_rng(2))
    assert losses.fused_with(CategoricalCrossentropy(from_logits=True),
                             minicnn.activations.get("softmax")) is None
    loss = SparseCategoricalCrossentropy(from_logits=True)
    got = float(loss.forward(p, labels))
    assert got == pytest.approx(naive_from_logits(p, labels, 0.0), rel=1e-6)


@pytest.mark.parametrize("bad", [-0.1, 1.5, "0.2", math.nan, True])
def test_bad_label_smoothing_is_named(bad):
    with pytest.raises(ValueError, match=r"CategoricalCrossentropy: label_smoothing must be"):
        CategoricalCrossentropy(label_smoothing=bad)


def test_a_saved_model_keeps_its_loss_arguments(tmp_path):
    rng = np.random.default_rng(0)
    x, labels = rng.standard_normal((6, 4)).astype(np.float32), rng.integers(0, 3, 6)
    model = Sequential([Dense(3, input_shape=(4,))])
    model.compile(optimizer="sgd", loss=SparseCategoricalCrossentropy(from_logits=True,
                                                                      label_smoothing=0.25))
    model.save(tmp_path / "m.npz")
    loaded = minicnn.models.load_model(tmp_path / "m.npz")
    assert type(loaded.loss) is SparseCategoricalCrossentropy
    assert loaded.loss.get_config() == {"from_logits": True, "label_smoothing": 0.25}
    assert_close(minicnn.to_host(loaded.compute_loss(x, labels)),
                 minicnn.to_host(model.compute_loss(x, labels)))
    assert losses.serialize(losses.get("mse")) == "mean_squared_error"  # plain: a name
    with pytest.raises(ValueError, match="does not take the config"):
        losses.get({"class_name": "categorical_crossentropy", "config": {"smoothing": 0.1}})
