"""The model's ReLU-after-pooling shortcut (see minicnn/models.py): it must change
no bit of any output, loss, gradient or weight, and must step aside whenever
someone watches the layers involved (hooks, retain, the gradient tracer)."""
from __future__ import annotations

import numpy as np
import pytest

import minicnn
from minicnn.layers import Activation, Conv2D, Dense, Dropout, Flatten, MaxPooling2D
from minicnn.models import Sequential
from minicnn.optimizers import SGD
from minicnn.utils import to_categorical


def pool_model(seed=0):
    """ReLU-then-pool pairs of every kind: 2x2 tiles, tiles that leave a row out
    (7x7), overlapping windows, 'same' padding, and an Activation("relu") layer."""
    minicnn.set_seed(seed)
    model = Sequential([
        Conv2D(6, 3, padding="same", activation="relu", input_shape=(10, 10, 2)),
        MaxPooling2D(2),                                   # 10 -> 5, tiles
        Dropout(0.25, seed=1),
        Conv2D(5, 2, padding="same", activation="relu"),
        MaxPooling2D(3, strides=1),                        # 5 -> 3, overlapping windows
        Conv2D(4, 1),
        Activation("relu"),
        MaxPooling2D(2, padding="same"),                   # 3 -> 2, padded windows
        Flatten(),
        Dense(3, activation="softmax"),
    ])
    model.compile(optimizer=SGD(lr=0.1, momentum=0.9), loss="categorical_crossentropy",
                  metrics=["accuracy"])
    return model


def data(n=6):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((n, 10, 10, 2))
    x[0] = 0.5   # a constant image: equal values in every window, so ties in every max
    x[1] = -0.5  # and its negative: windows where every value is <= 0
    return x, to_categorical(np.arange(n) % 3, 3, dtype="float64")


def run_steps(model, x, y, steps=3):
    """Outputs, losses and gradients of a few training steps, and the final weights."""
    seen = []
    for _ in range(steps):
        seen.append(minicnn.to_host(model.forward(x, training=False)))
        loss, _ = model.train_on_batch(x, y)
        seen.append(float(loss))
        seen += [minicnn.to_host(g) for layer in model.layers for g in layer.grads.values()]
    seen += [minicnn.to_host(p) for layer in model.layers for p in layer.params.values()]
    return seen


def assert_identical(a, b):
    """Exact, and so on any CPU: both models run the same products on the same shapes
    and blockings; only where the ReLU runs differs, and max and ReLU commute exactly
    (ReLU reorders no values), as do the ReLU's 0/1 mask and max-pool's routing of dy."""
    assert len(a) == len(b)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)  # exact: not one bit may move


@pytest.mark.parametrize("floatx", ["float32", "float64"])
def test_moving_relu_after_pool_changes_no_bit(backend, floatx):
    minicnn.set_floatx(floatx)
    x, y = data()
    x, y = minicnn.to_device(x, dtype=floatx), minicnn.to_device(y, dtype=floatx)
    moved, plain = pool_model(), pool_model()
    plain.move_relu_after_pool = False
    assert sorted(moved.relu_moves()) == [0, 3, 6]
    assert not plain.relu_moves()
    assert_identical(run_steps(moved, x, y), run_steps(plain, x, y))


def test_model_gradients_pass_the_gradient_check_with_relu_moved(backend):
    minicnn.set_floatx("float64")
    from minicnn.gradcheck import check_model
    model = pool_model()
    model.layers[2].rate = 0.0  # no dropout: the loss must be a fixed function of the weights
    x, y = data(4)
    result = check_model(model, x, y, max_entries=10)
    assert result.passed, str(result)


@pytest.mark.parametrize("watch", ["conv forward hook", "conv backward hook", "conv retain",
                                   "pool forward hook", "pool retain"])
def test_watchers_see_the_plain_values(backend, watch):
    x, y = data()
    x, y = minicnn.to_device(x, dtype="float32"), minicnn.to_device(y, dtype="float32")
    models = {"watched": pool_model(), "plain": pool_model()}
    models["plain"].move_relu_after_pool = False
    seen = {name: [] for name in models}
    handles = []
    for name, model in models.items():
        conv, pool = model.layers[0], model.layers[1]

        def record(layer, a, b, out=seen[name]):
            out.extend([minicnn.to_host(a).copy(), minicnn.to_host(b).copy()])

        if watch == "conv forward hook":
            handles.append(conv.register_forward_hook(record))
        elif watch == "conv backward hook":
            handles.append(conv.register_backward_hook(
                lambda layer, g, dx, out=seen[name]: out.append(minicnn.to_host(g).copy())))
        elif watch == "pool forward hook":
            handles.append(pool.register_forward_hook(record))
        else:
            (conv if watch == "conv retain" else pool).retain = True
        assert 0 not in model.relu_moves()
        model.train_on_batch(x, y)
        if watch.endswith("retain"):
            layer = conv if watch == "conv retain" else pool
            seen[name] += [minicnn.to_host(v) for v in (layer.last_input, layer.last_output,
                                                        layer.last_grad_output)]
    assert seen["watched"]
    assert_identical(seen["watched"], seen["plain"])
    if watch == "conv forward hook":
        assert (seen["watched"][1] >= 0).all()  # the hook saw relu(z), not z
    for handle in handles:
        handle.remove()
    models["watched"].layers[0].retain = models["watched"].layers[1].retain = False
    assert 0 in models["watched"].relu_moves()  # nobody watches any more: moved again


def test_gradient_tracer_sees_the_plain_values(backend):
    x, labels = data(12)
    runs = []
    for move in (True, False):
        model = pool_model()
        model.move_relu_after_pool = move
        history = model.fit(x, labels, batch_size=4, epochs=1, verbose=0, shuffle=False,
                            trace_gradients=2)
        runs.append(history.traces)
    assert runs[0] and runs[0] == runs[1]
    dead = [row["dead_relu"] for row in runs[0] if row["layer"] == "conv2d_1"]
    assert dead and all(0 <= d <= 1 for d in dead)
