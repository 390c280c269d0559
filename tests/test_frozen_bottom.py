"""Training steps skip the frozen layers at the bottom of a model (minicnn/plan.py).

Below the lowest layer with a trained weight nothing can learn, so a training
step runs no backward there (their grads are zeros) and that layer computes
no dL/dx. What must hold:

* the trained weights end exactly where a full backward takes them;
* the frozen layers' backward does not run, and the layer above them gets
  ``input_grad`` False during the step;
* ``compute_gradients`` (the gradient checks' path) still gives the frozen
  weights' real gradient, and a saliency map still reaches the input;
* unfreezing brings the whole backward back.
"""
from __future__ import annotations

import numpy as np

import minicnn
from minicnn import plan
from minicnn.layers import Activation, BatchNormalization, Conv2D, Dense, Flatten, MaxPooling2D
from minicnn.models import Sequential
from minicnn.optimizers import SGD

from conftest import assert_close


def make_model(seed: int = 0) -> Sequential:
    minicnn.set_seed(seed)
    model = Sequential([
        Conv2D(4, 2, padding="valid", input_shape=(8, 8, 3), name="frozen"),
        Activation("gelu"),
        Conv2D(6, 3, padding="same", use_bias=False, name="first_trained"),
        MaxPooling2D(2),
        BatchNormalization(scale=False),
        Activation("relu"),
        Flatten(),
        Dense(5, activation="softmax"),
    ])
    model.compile(optimizer=SGD(lr=0.1, momentum=0.9), loss="categorical_crossentropy")
    model.get_layer("frozen").set_trainable("kernel", False)
    model.get_layer("frozen").set_trainable("bias", False)
    return model


def data():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((6, 8, 8, 3)).astype(np.float32)
    y = np.eye(5, dtype=np.float32)[rng.integers(0, 5, 6)]
    return x, y


def test_trained_weights_match_a_full_backward(monkeypatch):
    x, y = data()
    skipping = make_model()
    for _ in range(3):
        skipping.train_on_batch(x, y)
    real_backward = plan.backward
    monkeypatch.setattr(plan, "backward", lambda *args: real_backward(*args[:4]))  # no skip
    full = make_model()
    for _ in range(3):
        full.train_on_batch(x, y)
    for a, b in zip(skipping.get_weights(), full.get_weights()):
        assert_close(a, b)


def test_frozen_layers_run_no_backward():
    x, y = data()
    model = make_model()
    calls, flags = [], []
    model.get_layer("frozen").register_backward_hook(lambda *a: calls.append("frozen"))
    model.layers[1].register_backward_hook(lambda *a: calls.append("gelu"))
    model.get_layer("first_trained").register_backward_hook(
        lambda layer, dy, dx: flags.append((layer.input_grad, dx)))
    model.train_on_batch(x, y)
    assert calls == [] and flags == [(False, None)]
    assert plan.first_trained(model.layers) == 2
    for grad in model.get_layer("frozen").grads.values():
        assert not np.any(grad)


def test_compute_gradients_still_reaches_frozen_weights():
    x, y = data()
    model = make_model()
    model.train_on_batch(x, y)  # leaves the frozen grads at zero
    model.compute_gradients(x, y)
    assert np.any(model.get_layer("frozen").grads["kernel"])
    saliency = model.input_gradient(x, np.zeros(len(x), dtype=int))
    assert saliency.shape == x.shape and np.any(saliency)


def test_unfreezing_brings_the_whole_backward_back():
    x, y = data()
    model = make_model()
    model.train_on_batch(x, y)
    frozen = model.get_layer("frozen")
    before = frozen.params["bias"].copy()
    frozen.set_trainable("bias", True)
    model.train_on_batch(x, y)
    assert np.any(frozen.grads["bias"]) and not np.array_equal(frozen.params["bias"], before)
    assert model.get_layer("first_trained").input_grad


def test_a_model_with_nothing_to_train_steps_without_error():
    x, y = data()
    model = make_model()
    for layer in model.layers:
        for name in layer.trained_params():
            layer.set_trainable(name, False)
    frozen = {(layer.name, name): param.copy() for layer in model.layers
              for name, param in layer.params.items() if name in ("kernel", "bias", "beta")}
    model.train_on_batch(x, y)
    assert plan.first_trained(model.layers) == len(model.layers)
    for (layer, name), before in frozen.items():
        assert np.array_equal(model.get_layer(layer).params[name], before)
