"""The training package's public pieces: optimizer state, the compile-time plan, the
model's loss_function/backward, and the progress bar in a file."""
from __future__ import annotations

import io

import numpy as np

import minicnn
from minicnn.layers import Conv2D, Dense, Flatten, Layer, MaxPooling2D
from minicnn.models import Sequential
from minicnn.optimizers import SGD
from minicnn.progbar import Progbar

from conftest import assert_close


def pool_cnn(pool=None) -> Sequential:
    model = Sequential([Conv2D(4, (3, 3), padding="same", activation="relu", input_shape=(6, 6, 2)),
                        pool or MaxPooling2D((2, 2)), Flatten(), Dense(3, activation="softmax")])
    model.compile(optimizer=SGD(lr=0.1, momentum=0.9), loss="sparse_categorical_crossentropy")
    return model


def data(n=8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 6, 6, 2), dtype=np.float32), rng.integers(0, 3, n)


def test_optimizer_state_round_trips_by_layer_and_weight_name():
    x, y = data()
    model = pool_cnn()
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    state = model.optimizer.get_state()
    assert state["iterations"] == 2
    assert set(state["velocities"]) == {"conv2d_1", "dense_1"}
    assert set(state["velocities"]["conv2d_1"]) == {"kernel", "bias"}
    fresh = SGD(lr=0.1, momentum=0.9)
    fresh.set_state(state)
    assert fresh.iterations == 2
    again = fresh.get_state()
    for layer, weights in state["velocities"].items():
        for name, value in weights.items():
            np.testing.assert_array_equal(minicnn.to_host(again["velocities"][layer][name]),
                                          minicnn.to_host(value))


def test_set_state_continues_exactly_like_the_original():
    x, y = data()
    a, b = pool_cnn(), pool_cnn()
    for layer_a, layer_b in zip(a.layers, b.layers):
        layer_b.set_weights(layer_a.get_weights())
    a.train_on_batch(x, y)
    for layer_a, layer_b in zip(a.layers, b.layers):
        layer_b.set_weights(layer_a.get_weights())
    b.optimizer.set_state(a.optimizer.get_state())
    a.train_on_batch(x, y)
    b.train_on_batch(x, y)
    for layer_a, layer_b in zip(a.layers, b.layers):
        for u, v in zip(layer_a.get_weights(), layer_b.get_weights()):
            np.testing.assert_array_equal(u, v)


class MyMaxPool(Layer):
    """A custom layer that says ReLU commutes with it: the plan moves the ReLU after it."""
    commutes_with_relu = True

    def forward(self, x, training=False):
        n, h, w, c = x.shape
        self._x = x
        return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))

    def backward(self, dy):
        x = self._x
        n, h, w, c = x.shape
        tiles = x.reshape(n, h // 2, 2, w // 2, 2, c)
        winner = tiles == tiles.max(axis=(2, 4), keepdims=True)
        return (winner * dy[:, :, None, :, None, :]).reshape(x.shape)

    def compute_output_shape(self, input_shape):
        n, h, w, c = input_shape
        return (n, h // 2, w // 2, c)


def test_the_plan_reads_commutes_with_relu_from_any_layer():
    assert pool_cnn().relu_moves() == {0}
    assert pool_cnn(MyMaxPool()).relu_moves() == {0}
    model = pool_cnn()
    model.move_relu_after_pool = False
    assert model.relu_moves() == frozenset()


def test_loss_function_and_backward_are_what_compute_gradients_runs():
    x, y = data()
    a, b = pool_cnn(), pool_cnn()
    for layer_a, layer_b in zip(a.layers, b.layers):
        layer_b.set_weights(layer_a.get_weights())
    loss = a.compute_gradients(x, y)
    xd, yd = minicnn.to_device(x), minicnn.to_device(y, dtype="int64")
    moves = b.relu_moves()
    out = b.loss_input(xd, training=True, relu_moves=moves)
    loss_fn = b.loss_function()
    assert isinstance(loss_fn, minicnn.losses.SoftmaxCrossEntropy)
    assert_close(loss_fn.forward(out, yd), loss)
    b.backward(loss_fn.backward(), moves)
    for layer_a, layer_b in zip(a.layers, b.layers):
        for name in layer_a.grads:
            assert_close(layer_b.grads[name], layer_a.grads[name])


class Pipe(io.StringIO):
    def isatty(self):
        return False


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progbar_writes_one_line_per_epoch_into_a_file():
    out = Pipe()
    bar = Progbar(100, verbose=1, interval=0.0, stream=out)
    for seen in range(10, 100, 10):
        bar.update(seen, {"loss": 1.0})
    bar.update(100, {"loss": 0.5}, final=True)
    text = out.getvalue()
    assert "\r" not in text and text.count("\n") == 1
    assert text.startswith("100/100 [==============================]") and "loss: 0.5000" in text


def test_progbar_redraws_in_place_on_a_terminal():
    out = Terminal()
    bar = Progbar(100, verbose=1, interval=0.0, stream=out)
    for seen in range(10, 100, 10):
        bar.update(seen, {"loss": 1.0})
    bar.update(100, {"loss": 0.5}, final=True)
    assert out.getvalue().count("\r") == 10 and out.getvalue().endswith("\n")
