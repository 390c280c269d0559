"""No silent float64: a float32 model keeps every array float32.

A single float64 array (a NumPy default slipping into a mask, a bias or a
Python-side constant) doubles the memory traffic of everything downstream and
quietly halves the speed of the float32 BLAS products, while every result
still looks right. So after a real training step of a tiny copy of the
tutorial network these tests look at every parameter, every parameter
gradient, every optimizer state, every activation and every gradient passed
between layers (running the layers one by one), the loss value and the
predictions; and they check that uint8 or float64 input is cast to float32
once, for the whole data set, not batch by batch.

``float_leaks`` returns what it found instead of asserting, so the last tests
can check that it does catch a layer that upcasts.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import minicnn
from minicnn import backend as B
from minicnn.layers import Conv2D, Dense, Dropout, Flatten, MaxPooling2D
from minicnn.models import Sequential
from minicnn.optimizers import SGD
from minicnn.utils import to_categorical


def tiny_tutorial_net() -> Sequential:
    """The tutorial's architecture (3 x conv-relu/pool/dropout, dense 3 layers, softmax)
    with few filters: the same shapes, including the 13x13 -> 6x6 pool that crops."""
    model = Sequential()
    model.add(Conv2D(8, (3, 3), activation="relu", input_shape=(32, 32, 3)))
    model.add(MaxPooling2D((2, 2)))
    model.add(Dropout(0.3))
    model.add(Conv2D(8, (3, 3), activation="relu"))
    model.add(MaxPooling2D((2, 2)))
    model.add(Dropout(0.3))
    model.add(Conv2D(4, (3, 3), activation="relu"))
    model.add(MaxPooling2D((2, 2)))
    model.add(Dropout(0.3))
    model.add(Flatten())
    model.add(Dense(16, activation="relu"))
    model.add(Dense(8, activation="relu"))
    model.add(Dense(10, activation="softmax"))
    return model


def data(n: int = 6, dtype=np.float32):
    rng = np.random.default_rng(0)
    if np.dtype(dtype) == np.uint8:
        x = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    else:
        x = rng.random((n, 32, 32, 3)).astype(dtype)
    y = to_categorical(rng.integers(0, 10, n), 10)
    return x, y


def float_leaks(model: Sequential, x, y, want: str) -> list[str]:
    """Every array of ``model`` (after it trained) and of one more step, layer by layer,
    whose dtype is not ``want``: a list of 'where: dtype' strings, empty when clean."""
    want = np.dtype(want)
    leaks = []

    def check(where: str, value) -> None:
        if value is None:
            return
        dtype = np.dtype(value.dtype)
        if dtype != want:
            leaks.append(f"{where}: {dtype}")

    for layer in model.layers:
        for key in layer.params:
            check(f"{layer.name} param {key}", layer.params[key])
            check(f"{layer.name} grad {key}", layer.grads[key])
    for key, v in model.optimizer.velocities.items():
        check(f"optimizer velocity {key}", v)

    # One training step by hand, layer by layer: every activation, every gradient.
    xd, yd = B.to_device(x, dtype=want), B.to_device(y, dtype=want)
    h = xd
    *body, head = model.layers
    for layer in body:
        h = layer.forward(h, training=True)
        check(f"{layer.name} output", h)
    logits = head.run_forward(h, training=True, activate=False)  # softmax is fused into the loss
    check(f"{head.name} logits", logits)
    loss_fn = model.loss_function()
    check("loss value", loss_fn.forward(logits, yd))
    g = loss_fn.backward()
    check("loss gradient", g)
    g = head.run_backward(g, activate=False)
    check(f"{head.name} input gradient", g)
    for layer in reversed(body):
        g = layer.backward(g)
        check(f"{layer.name} input gradient", g)
        for key in layer.params:
            check(f"{layer.name} grad {key}", layer.grads[key])

    check("compute_loss", model.compute_loss(xd, yd, training=True))
    model.train_on_batch(xd, yd)
    for layer in model.layers:
        for key in layer.params:
            check(f"{layer.name} param {key} after update", layer.params[key])
    check("predict", model.predict(x))
    return leaks


# ---------------------------------------------------------------- the checks
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_training_step_is_float32_everywhere(backend, momentum):
    x, y = data()
    model = tiny_tutorial_net()
    model.compile(optimizer=SGD(lr=0.05, decay=1e-4, momentum=momentum),
                  loss="categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)  # a full batch and a partial one
    assert float_leaks(model, x, y, "float32") == []


def test_float64_floatx_is_float64_everywhere(backend):
    # The gradient-check mode: the same code paths, all in float64.
    minicnn.set_floatx("float64")
    x, y = data(dtype=np.float64)
    model = tiny_tutorial_net()
    model.compile(optimizer=SGD(lr=0.05), loss="categorical_crossentropy")
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert float_leaks(model, x, y, "float64") == []


@pytest.mark.parametrize("dtype", [np.uint8, np.float64])
def test_input_is_cast_to_float32_once(backend, monkeypatch, dtype):
    x, y = data(n=10, dtype=dtype)
    if dtype == np.uint8:
        x = x // 255  # 0/1 pixels: no "unscaled images" warning
    casts = []
    real = B.to_device

    def counting(a, dtype=None):
        if getattr(a, "shape", None) == x.shape:
            casts.append((np.dtype(a.dtype), dtype))
        return real(a, dtype)

    monkeypatch.setattr(B, "to_device", counting)
    model = tiny_tutorial_net()
    model.compile(optimizer=SGD(lr=0.01), loss="categorical_crossentropy")
    seen = []
    model.layers[0].register_forward_hook(lambda layer, inputs, outputs: seen.append(inputs.dtype))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and no warning about the input either
        model.fit(x, y, batch_size=4, epochs=2, verbose=0)
    # one cast of the whole set, not one per batch
    assert casts == [(np.dtype(dtype), "float32")]
    assert len(seen) == 6 and set(seen) == {np.dtype("float32")}  # 3 batches x 2 epochs


# ---------------------------------------------------------------- the checks can fail
def upcast(method):
    """Wrap a layer method so that it returns float64: the bug these tests look for."""
    def wrapped(*args, **kwargs):
        out = method(*args, **kwargs)
        return None if out is None else out.astype(np.float64)
    return wrapped


@pytest.mark.parametrize("where", ["pool forward", "dropout backward", "dense kernel grad"])
def test_float_leaks_catches_a_layer_that_upcasts(where):
    x, y = data()
    model = tiny_tutorial_net()
    model.compile(optimizer=SGD(lr=0.05), loss="categorical_crossentropy")
    model.fit(x, y, batch_size=6, epochs=1, verbose=0)
    if where == "pool forward":
        pool = model.layers[1]
        pool._forward = upcast(pool._forward)
        expected = "max_pooling2d_1 output: float64"
    elif where == "dropout backward":
        drop = model.layers[5]
        drop._backward = upcast(drop._backward)
        expected = "dropout_2 input gradient: float64"
    else:
        dense = model.layers[-2]
        original = dense._backward

        def leaky(grad):
            dx = original(grad)
            dense.grads["kernel"] = dense.grads["kernel"].astype(np.float64)
            return dx
        dense._backward = leaky
        expected = "dense_2 grad kernel: float64"
    leaks = float_leaks(model, x, y, "float32")
    assert expected in leaks, leaks
