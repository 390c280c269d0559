"""Keras 2.2.4's Sequential API beyond fit/evaluate/predict: get_weights/set_weights,
weights, get_layer, pop, metrics_names, predict_classes and predict_proba."""
from __future__ import annotations

import numpy as np
import pytest

from minicnn import backend as mbackend
from minicnn.layers import BatchNormalization, Dense, Flatten
from minicnn.models import Sequential


def small_model(activation="softmax", units=3):
    return Sequential([Flatten(input_shape=(2, 2, 1)), Dense(5, activation="relu"),
                       BatchNormalization(), Dense(units, activation=activation)])


def test_get_and_set_weights_round_trip(backend):
    model, other = small_model(), small_model()
    weights = model.get_weights()
    assert [w.shape for w in weights] == [(4, 5), (5,), (5,), (5,), (5,), (5,), (5, 3), (3,)]
    assert all(isinstance(w, np.ndarray) for w in weights)
    other.set_weights(weights)
    for a, b in zip(other.get_weights(), weights):  # copies: exact on every CPU
        np.testing.assert_array_equal(a, b)
    x = np.random.default_rng(0).standard_normal((4, 2, 2, 1)).astype(np.float32)
    # the same weights through the same code and batch: the same arithmetic, exact
    np.testing.assert_array_equal(other.predict(x), model.predict(x))
    weights[0][...] = 0  # a copy: changing it leaves the model alone
    assert np.any(model.get_weights()[0] != 0)


def test_set_weights_checks_everything_before_writing():
    model = small_model()
    before = model.get_weights()
    wrong = [w + 1 for w in before]
    wrong[-1] = np.zeros(4)  # the last array has the wrong shape
    with pytest.raises(ValueError, match=r"dense_2.* bias has shape \(3,\), got \(4,\)"):
        model.set_weights(wrong)
    with pytest.raises(ValueError, match="has 8 weight arrays, got 7"):
        model.set_weights(before[:-1])
    for a, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(a, b)  # nothing written


def test_weights_are_the_arrays_in_order():
    model = small_model()
    weights = model.weights
    assert len(weights) == 8
    assert weights[0] is model.layers[1].params["kernel"]
    assert weights[4] is model.layers[2].params["moving_mean"]


def test_get_layer():
    model = small_model()
    assert model.get_layer("dense_2") is model.layers[3]
    assert model.get_layer(index=0) is model.layers[0]
    assert model.get_layer(index=-1) is model.layers[3]
    with pytest.raises(ValueError, match="no layer named 'conv'; the layers are 'flatten_1'"):
        model.get_layer("conv")
    with pytest.raises(ValueError, match="index 4, but the model has 4 layers"):
        model.get_layer(index=4)
    with pytest.raises(ValueError, match="give a layer name or an index"):
        model.get_layer()


def test_pop_moves_the_output_and_refuses_an_empty_model():
    model = small_model()
    model.compile("sgd", "categorical_crossentropy", metrics=["accuracy"])
    assert model.output_shape == (None, 3)
    model.pop()
    assert len(model.layers) == 3 and model.output_shape == (None, 5)
    x = np.random.default_rng(1).standard_normal((6, 2, 2, 1)).astype(np.float32)
    assert model.predict(x).shape == (6, 5)
    model.add(Dense(2, activation="softmax"))
    model.compile("sgd", "categorical_crossentropy")
    model.train_on_batch(x, np.eye(2)[[0, 1, 0, 1, 0, 1]])
    for _ in range(4):
        model.pop()
    with pytest.raises(TypeError, match="no layers in the model"):
        model.pop()


def test_pop_drops_the_fused_softmax():
    """The popped head's softmax was folded into the loss: the new head's output is
    what the loss must see."""
    model = Sequential([Dense(4, input_shape=(3,)), Dense(2, activation="softmax")])
    model.compile("sgd", "categorical_crossentropy")
    model.pop()
    assert model.loss_function() is model.loss  # not softmax-with-cross-entropy any more
    x = np.abs(np.random.default_rng(2).standard_normal((5, 3)))
    out = model.predict(x)
    np.testing.assert_array_equal(out, mbackend.to_host(model.loss_input(mbackend.to_device(
        x.astype(np.float32)))))


def test_metrics_names():
    model = small_model()
    model.compile("sgd", "categorical_crossentropy")
    assert model.metrics_names == ["loss"]
    model.compile("sgd", "categorical_crossentropy", metrics=["accuracy"])
    assert model.metrics_names == ["loss", "acc"]
    x = np.zeros((2, 2, 2, 1), np.float32)
    assert len(model.evaluate(x, np.eye(3)[[0, 1]])) == len(model.metrics_names)


def test_predict_classes_and_proba():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((7, 2, 2, 1)).astype(np.float32)
    model = small_model()
    proba = model.predict_proba(x)
    np.testing.assert_array_equal(proba, model.predict(x))
    np.testing.assert_array_equal(model.predict_classes(x), proba.argmax(axis=-1))
    binary = small_model("sigmoid", units=1)
    out = binary.predict(x)
    classes = binary.predict_classes(x)
    assert classes.shape == (7, 1) and classes.dtype == np.int32
    np.testing.assert_array_equal(classes, (out > 0.5).astype(np.int32))
    linear = small_model(None)
    linear.set_weights([w * 10 for w in linear.get_weights()])
    with pytest.warns(UserWarning, match="outside \\[0, 1\\]"):
        linear.predict_proba(x)
