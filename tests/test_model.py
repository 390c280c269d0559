"""Sequential end to end: the tutorial's network, training, History, evaluate,
predict, weight files, dtypes and reproducibility."""
from __future__ import annotations

import os
import re
import warnings

import numpy as np
import pytest

import minicnn
from minicnn import backend as B
from minicnn.layers import Activation, Conv2D, Dense, Dropout, Flatten, MaxPooling2D
from minicnn.models import Sequential
from minicnn.optimizers import SGD
from minicnn.callbacks import History
from minicnn.utils import to_categorical

from conftest import assert_close, assert_same_accuracy


# ---------------------------------------------------------------- the tutorial's network
def tutorial_model(separate_activations: bool) -> Sequential:
    """The tutorial's CIFAR-10 network with the tutorial's own arguments."""
    model = Sequential()

    def conv(filters, **kwargs):
        if separate_activations:
            model.add(Conv2D(filters=filters, kernel_size=(3, 3), **kwargs))
            model.add(Activation("relu"))
        else:
            model.add(Conv2D(filters=filters, kernel_size=(3, 3), activation="relu", **kwargs))
        model.add(MaxPooling2D(pool_size=(2, 2)))
        model.add(Dropout(0.3))

    conv(256, input_shape=(32, 32, 3))
    conv(256)
    conv(128)
    model.add(Flatten())
    for units, activation in ((512, "relu"), (256, "relu"), (10, "softmax")):
        if separate_activations:  # the README's spelling: Dense(10) + Activation("softmax")
            model.add(Dense(units))
            model.add(Activation(activation))
        else:
            model.add(Dense(units, activation=activation))
    model.compile(loss=["categorical_crossentropy"], optimizer=SGD(lr=0.05, decay=1e-4),
                  metrics=["accuracy"])
    return model


TUTORIAL_ROWS = [  # (layer type, output shape, params)
    ("Conv2D", "(None, 30, 30, 256)", 7168),
    ("MaxPooling2D", "(None, 15, 15, 256)", 0),
    ("Dropout", "(None, 15, 15, 256)", 0),
    ("Conv2D", "(None, 13, 13, 256)", 590080),
    ("MaxPooling2D", "(None, 6, 6, 256)", 0),
    ("Dropout", "(None, 6, 6, 256)", 0),
    ("Conv2D", "(None, 4, 4, 128)", 295040),
    ("MaxPooling2D", "(None, 2, 2, 128)", 0),
    ("Dropout", "(None, 2, 2, 128)", 0),
    ("Flatten", "(None, 512)", 0),
    ("Dense", "(None, 512)", 262656),
    ("Dense", "(None, 256)", 131328),
    ("Dense", "(None, 10)", 2570),
]


@pytest.mark.parametrize("separate_activations", [False, True], ids=["activation=", "Activation"])
def test_tutorial_model_summary(separate_activations):
    model = tutorial_model(separate_activations)
    lines = []
    model.summary(print_fn=lines.append)
    text = "\n".join(lines)
    assert "Total params: 1,288,842" in text
    assert "Trainable params: 1,288,842" in text
    assert model.count_params() == 1288842
    assert model.input_shape == (None, 32, 32, 3)
    assert model.output_shape == (None, 10)
    rows = [line for line in lines if re.match(r"^\w+_\d+ \(\w+\)", line)]
    expected = list(TUTORIAL_ROWS)
    if separate_activations:  # an Activation after each Conv2D and Dense, same shape, no params
        for i in (13, 12, 11, 7, 4, 1):
            expected.insert(i, ("Activation", expected[i - 1][1], 0))
    assert len(rows) == len(expected), text
    for row, (kind, shape, params) in zip(rows, expected):
        assert f"({kind})" in row, row
        assert shape in row, (row, shape)
        assert row.split()[-1] == str(params), row
    assert rows[0].startswith("conv2d_1 (Conv2D)")
    assert rows[-1].startswith("activation_6 (Activation)" if separate_activations
                               else "dense_3 (Dense)")
    assert isinstance(model.loss_function(), minicnn.losses.SoftmaxCrossEntropy)  # the final softmax is fused with the loss either way


def test_tutorial_model_compiles_with_tutorial_arguments_and_trains_a_step(backend):
    model = tutorial_model(separate_activations=False)
    assert isinstance(model.loss_function(), minicnn.losses.SoftmaxCrossEntropy) and not model.loss_function().sparse
    assert model.metrics == ["acc"]
    assert model.optimizer.lr == 0.05 and model.optimizer.decay == 1e-4
    x = np.random.default_rng(0).random((2, 32, 32, 3), dtype=np.float32)
    y = to_categorical([3, 7], 10)
    history = model.fit(x, y, batch_size=2, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert model.optimizer.iterations == 1
    p = model.predict(x)
    assert p.shape == (2, 10)


# ---------------------------------------------------------------- training
def small_cnn(dropout=0.0, input_shape=(8, 8, 3), classes=4):
    layers = [Conv2D(8, (3, 3), padding="same", activation="relu", input_shape=input_shape),
              MaxPooling2D((2, 2))]
    if dropout:
        layers.append(Dropout(dropout))
    layers += [Flatten(), Dense(32, activation="relu"), Dense(classes, activation="softmax")]
    return Sequential(layers)


def fixed_data(n=64, shape=(8, 8, 3), classes=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, *shape), dtype=np.float32)
    labels = rng.integers(0, classes, n)
    return x, labels


def test_small_model_overfits_64_samples(backend):
    x, labels = fixed_data()
    model = small_cnn()
    # (robust: over 12 seeds the final loss is below 0.1% of the first)
    model.compile(optimizer=SGD(lr=0.05, momentum=0.9), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    first = model.evaluate(x, labels)[0]
    history = model.fit(x, labels, batch_size=16, epochs=60, verbose=0)
    last = model.evaluate(x, labels)
    assert last[0] < 0.1 * first, (first, last, history.history["loss"][::10])
    assert last[1] >= 0.95
    assert history.history["loss"][-1] < 0.1 * history.history["loss"][0]


def test_history_keys_aliases_and_per_epoch_values(backend):
    x, labels = fixed_data(n=20)
    xv, lv = fixed_data(n=9, seed=1)
    model = small_cnn(dropout=0.3)
    model.compile(optimizer=SGD(lr=0.05), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    seen = []
    history = model.fit(x, labels, batch_size=7, epochs=3, verbose=0, validation_data=(xv, lv),
                        callbacks=[lambda epoch, logs: seen.append((epoch, dict(logs)))])
    assert isinstance(history, History) and model.history is history
    assert history.epoch == [0, 1, 2]
    h = history.history
    assert {"loss", "acc", "val_loss", "val_acc", "accuracy", "val_accuracy"} <= set(h)
    for key in h:
        assert len(h[key]) == 3, key
        assert all(isinstance(v, float) for v in h[key]), key
    assert h["accuracy"] == h["acc"] and h["val_accuracy"] == h["val_acc"]
    for v in h["acc"]:
        assert round(v * 20) == pytest.approx(v * 20)  # a fraction of the 20 samples
    for v in h["val_acc"]:
        assert round(v * 9) == pytest.approx(v * 9)
    assert [epoch for epoch, _ in seen] == [0, 1, 2]
    assert seen[-1][1]["val_loss"] == h["val_loss"][-1]  # the same number, handed on
    # validation values are over the whole validation set, with the final weights
    # (fit validates in batches of 7, evaluate in one of 9: other products, so the
    # loss up to rounding, and the same predictions unless rounding breaks a near-tie)
    loss, acc = model.evaluate(xv, lv, batch_size=9)
    p = model.predict(xv)
    assert h["val_loss"][-1] == pytest.approx(loss, rel=1e-5)
    assert_same_accuracy(h["val_acc"][-1], acc, 9, p)
    assert_same_accuracy(acc, np.mean(p.argmax(axis=1) == lv), 9, p)


def test_epoch_loss_is_the_sample_weighted_mean(backend):
    # With a zero learning rate the weights never move, so the epoch's loss and
    # accuracy must be those of the whole set, although 20 = 7 + 7 + 6.
    x, labels = fixed_data(n=20)
    model = small_cnn()
    model.compile(optimizer=SGD(lr=0.0), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    history = model.fit(x, labels, batch_size=7, epochs=2, verbose=0, shuffle=False)
    whole_loss, whole_acc = model.evaluate(x, labels, batch_size=20)
    assert history.history["loss"] == pytest.approx([whole_loss] * 2, rel=1e-5)
    p = model.predict(x)  # batches of 7 and one of 20: equal up to near-ties
    for acc in history.history["acc"]:
        assert_same_accuracy(acc, whole_acc, 20, p)
    # the unweighted mean of the three batch means is measurably different
    batch_means = [model.evaluate(x[s:s + 7], labels[s:s + 7], batch_size=7)[0]
                   for s in (0, 7, 14)]
    assert abs(np.mean(batch_means) - whole_loss) > 1e-4


def test_evaluate_with_ragged_batches_equals_manual_computation(backend):
    x, labels = fixed_data(n=23)
    model = small_cnn()
    model.compile(optimizer="sgd", loss="categorical_crossentropy", metrics=["accuracy"])
    result = model.evaluate(x, to_categorical(labels, 4), batch_size=5)
    assert isinstance(result, list) and len(result) == 2
    assert all(isinstance(v, float) for v in result)
    p = model.predict(x, batch_size=23).astype(np.float64)
    manual_loss = -np.mean(np.log(p[np.arange(23), labels]))
    manual_acc = np.mean(p.argmax(axis=1) == labels)
    assert result[0] == pytest.approx(manual_loss, rel=1e-5)
    assert_same_accuracy(result[1], manual_acc, 23, p)  # batches of 5 against one of 23
    # without a metric: just the loss
    model.compile(optimizer="sgd", loss="categorical_crossentropy")
    loss_only = model.evaluate(x, to_categorical(labels, 4), batch_size=5)
    assert isinstance(loss_only, float) and loss_only == pytest.approx(manual_loss, rel=1e-5)


def test_predict_returns_host_probabilities(backend):
    x, _ = fixed_data(n=11)
    model = small_cnn(dropout=0.5)
    p = model.predict(x, batch_size=4)
    # the same batches through the same products: bit for bit, as no dropout mask is drawn
    np.testing.assert_array_equal(model.predict(x, batch_size=4), p)
    assert type(p) is np.ndarray  # not a device array, whatever the backend
    assert p.shape == (11, 4) and p.dtype == np.float32
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-5)
    assert np.all(p >= 0)
    assert_close(model.predict(x, batch_size=11), p)  # other batches: other products


# ---------------------------------------------------------------- dtypes
def test_uint8_input_is_cast_once(backend, monkeypatch):
    rng = np.random.default_rng(0)
    x8 = rng.integers(0, 256, (12, 8, 8, 3), dtype=np.uint8)
    labels = rng.integers(0, 4, 12)
    calls = []
    real = B.to_device

    def counting(a, dtype=None):
        if getattr(a, "dtype", None) == np.uint8:
            calls.append(dtype)
        return real(a, dtype)

    monkeypatch.setattr(B, "to_device", counting)
    model = small_cnn()
    model.compile(optimizer=SGD(lr=1e-4), loss="sparse_categorical_crossentropy")
    seen = []
    first = model.layers[0]
    original = first._forward
    first._forward = lambda x, training: (seen.append(x.dtype), original(x, training))[1]
    with pytest.warns(UserWarning, match=r"astype\('float32'\) / 255"):
        model.fit(x8, labels, batch_size=5, epochs=2, verbose=0)
    assert calls == ["float32"]  # one cast of the whole set, not one per batch
    assert seen and set(seen) == {np.dtype("float32")}
    # the same numbers in float32 train the same network, through the same arithmetic
    minicnn.set_seed(0)
    twin = small_cnn()
    twin.compile(optimizer=SGD(lr=1e-4), loss="sparse_categorical_crossentropy")
    twin.fit(x8.astype(np.float32), labels, batch_size=5, epochs=2, verbose=0)
    for a, b in zip(model.layers, twin.layers):
        for key in a.params:
            np.testing.assert_array_equal(minicnn.to_host(a.params[key]),
                                          minicnn.to_host(b.params[key]))


def test_float64_input_with_float32_floatx_keeps_float32(backend):
    x, labels = fixed_data(n=10)
    model = small_cnn(dropout=0.5)
    model.compile(optimizer=SGD(lr=0.01, momentum=0.9), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(x.astype(np.float64), labels, batch_size=4, epochs=1, verbose=0)
    for layer in model.layers:
        for key, value in layer.params.items():
            assert value.dtype == np.float32, (layer.name, key)
    assert model.predict(x.astype(np.float64)).dtype == np.float32


def test_one_training_step_is_float32_everywhere(backend):
    model = Sequential([
        Conv2D(4, (3, 3), padding="same", input_shape=(6, 6, 2)), Activation("relu"),
        MaxPooling2D(2), Dropout(0.5), Conv2D(3, (2, 2), activation="tanh"), Flatten(),
        Dense(5, activation="sigmoid"), Dense(3), Activation("softmax"),
    ])
    model.compile(optimizer=SGD(lr=0.1, momentum=0.9, nesterov=True),
                  loss="categorical_crossentropy", metrics=["acc"])
    x = np.random.default_rng(0).standard_normal((4, 6, 6, 2))  # float64 on purpose
    y = to_categorical([0, 1, 2, 1], 3, dtype="float64")
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert model.optimizer.iterations == 1
    for layer in model.layers:
        for key in layer.params:
            assert layer.params[key].dtype == np.float32, (layer.name, key)
            assert layer.grads[key] is not None and layer.grads[key].dtype == np.float32, \
                (layer.name, key, layer.grads[key].dtype)
    for key, v in model.optimizer.velocities.items():
        assert v.dtype == np.float32, key
    # activations and gradients, layer by layer
    h = minicnn.to_device(x, dtype="float32")
    for layer in model.layers:
        h = layer.forward(h, training=True)
        assert h.dtype == np.float32, (layer.name, h.dtype)
    g = minicnn.to_device(np.ones(h.shape, dtype=np.float32))
    for layer in reversed(model.layers[1:]):
        g = layer.backward(g)
        assert g.dtype == np.float32, (layer.name, g.dtype)
    yd = minicnn.to_device(y, dtype="float32")
    loss_value = model.compute_loss(minicnn.to_device(x, dtype="float32"), yd, training=True)
    assert loss_value.dtype == np.float32


# ---------------------------------------------------------------- weight files
def test_save_load_weights_round_trip(backend, tmp_path):
    x, labels = fixed_data(n=8)
    model = small_cnn(dropout=0.3)
    model.compile(optimizer=SGD(lr=0.1), loss="sparse_categorical_crossentropy")
    model.fit(x, labels, batch_size=4, epochs=1, verbose=0)  # weights != their initial values
    path = tmp_path / "weights.npz"
    model.save_weights(path)
    assert sorted(os.listdir(tmp_path)) == ["weights.npz"]  # no temporary file left behind
    with np.load(path) as data:
        assert "conv2d_1/kernel" in data.files and "dense_2/bias" in data.files
    minicnn.set_seed(123)
    other = small_cnn(dropout=0.3)
    assert not np.array_equal(minicnn.to_host(other.layers[0].params["kernel"]),
                              minicnn.to_host(model.layers[0].params["kernel"]))
    other.load_weights(path)
    for a, b in zip(model.layers, other.layers):
        assert a.params.keys() == b.params.keys()
        for key in a.params:
            assert b.params[key].dtype == a.params[key].dtype
            np.testing.assert_array_equal(minicnn.to_host(b.params[key]),
                                          minicnn.to_host(a.params[key]))
    np.testing.assert_array_equal(other.predict(x), model.predict(x))
    # overwriting an existing file also leaves nothing else behind
    other.save_weights(path)
    assert sorted(os.listdir(tmp_path)) == ["weights.npz"]


def test_load_weights_into_unbuilt_model(tmp_path):
    model = small_cnn()
    model.save_weights(tmp_path / "w.npz")
    fresh = Sequential([Conv2D(8, (3, 3), padding="same", activation="relu"), MaxPooling2D((2, 2)),
                        Flatten(), Dense(32, activation="relu"), Dense(4, activation="softmax")])
    fresh.load_weights(tmp_path / "w.npz")
    x, _ = fixed_data(n=3)
    np.testing.assert_array_equal(fresh.predict(x), model.predict(x))


def test_weights_of_another_architecture_raise_naming_the_layer(backend, tmp_path):
    model = small_cnn()
    model.save_weights(tmp_path / "w.npz")
    other = Sequential([Conv2D(6, (3, 3), padding="same", activation="relu", input_shape=(8, 8, 3)),
                        MaxPooling2D((2, 2)), Flatten(), Dense(32, activation="relu"),
                        Dense(4, activation="softmax")])
    before = minicnn.to_host(other.layers[-1].params["kernel"]).copy()
    with pytest.raises(ValueError, match=r"layer 'conv2d_1' is Conv2D.*'filters': 6.*'filters': 8"):
        other.load_weights(tmp_path / "w.npz")
    # nothing was half-loaded
    np.testing.assert_array_equal(minicnn.to_host(other.layers[-1].params["kernel"]), before)


# ---------------------------------------------------------------- reproducibility
def _train(seed):
    minicnn.set_seed(seed)
    x, labels = fixed_data(n=16)
    model = small_cnn(dropout=0.5)
    model.compile(optimizer=SGD(lr=0.1, momentum=0.5), loss="sparse_categorical_crossentropy")
    model.fit(x, labels, batch_size=5, epochs=2, verbose=0, shuffle=True)
    return [minicnn.to_host(p).copy() for layer in model.layers for p in layer.params.values()]


def test_same_seed_same_weights(backend):
    a, b, c = _train(7), _train(7), _train(8)
    assert len(a) == 6
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    assert any(not np.array_equal(u, v) for u, v in zip(a, c))


def test_numpy_and_strict_backends_train_the_same_network():
    # The strict backend takes the device paths where a layer has one (a convolution's
    # input gradient as one product and col2im), which add in other orders: the same
    # network up to float32 rounding.
    runs = []
    for name in ("numpy", "strict"):
        with minicnn.use_backend(name):
            runs.append(_train(3))
    for u, v in zip(*runs):
        assert_close(v, u)


def test_fit_predict_evaluate_accept_device_arrays(backend):
    x, labels = fixed_data(n=10)
    model = small_cnn()
    model.compile(optimizer=SGD(lr=0.05), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    xd, yd = minicnn.to_device(x), minicnn.to_device(labels)
    history = model.fit(xd, yd, batch_size=4, epochs=1, verbose=0, validation_data=(xd, yd))
    assert np.isfinite(history.history["val_loss"][0])
    loss, acc = model.evaluate(xd, yd)
    assert type(model.predict(xd)) is np.ndarray
    np.testing.assert_allclose(model.predict(xd), model.predict(x))
    # x goes to the device first and then runs exactly as xd does: bit for bit
    assert (loss, acc) == tuple(model.evaluate(x, labels))


@pytest.mark.parametrize("verbose", [1, 2])
def test_fit_prints_progress_when_verbose(capsys, verbose):
    x, labels = fixed_data(n=6)
    model = small_cnn()
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.fit(x, labels, batch_size=3, epochs=2, verbose=verbose)
    out = capsys.readouterr().out
    assert "Epoch 1/2" in out and "Epoch 2/2" in out and "loss" in out


def test_large_inference_batches_go_through_in_slices_with_the_same_results(backend,
                                                                              monkeypatch):
    # minicnn.plan.INFERENCE_SLICE images at a time; 70 images = 32 + 32 + 6
    from minicnn import plan
    monkeypatch.setattr(plan, "INFERENCE_SLICE", 32)
    sliced = []
    forward = plan.forward
    monkeypatch.setattr(plan, "forward", lambda layers, x, *rest: sliced.append(len(x))
                        or forward(layers, x, *rest))
    x, _ = fixed_data(n=70)
    model = small_cnn(dropout=0.3)
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    whole = model.predict(x, batch_size=70)
    if not minicnn.backend.is_device_array(minicnn.to_device(x)):  # a GPU takes it whole
        assert sliced == [70, 32, 32, 6]
    one_by_one = np.concatenate([model.predict(x[i:i + 1], batch_size=1) for i in range(70)])
    assert_close(whole, one_by_one)
    seen = []  # a hook wants the batch it was given, whole: no slicing then
    model.layers[0].register_forward_hook(lambda layer, inputs, outputs: seen.append(len(inputs)))
    assert_close(model.predict(x, batch_size=70), whole)
    assert seen == [70]


def test_validation_batch_size_changes_no_number_only_the_passes(backend):
    x, labels = fixed_data(n=12)
    xv, lv = fixed_data(n=9, seed=1)
    results, outputs = [], []
    for validation_batch_size in (None, 4, 9):
        minicnn.set_seed(0)
        model = small_cnn(dropout=0.3)
        model.compile(optimizer=SGD(lr=0.05), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
        seen = []  # each epoch's validation outputs, to tell a near-tie from a real change
        h = model.fit(x, labels, batch_size=5, epochs=2, verbose=0, validation_data=(xv, lv),
                      validation_batch_size=validation_batch_size,
                      callbacks=[lambda epoch, logs, m=model: seen.append(m.predict(xv))]).history
        results.append((h["loss"], h["val_loss"], h["val_acc"]))
        outputs.append(seen)
    for other in results[1:]:
        assert other[0] == results[0][0]  # training is untouched: the same steps, bit for bit
        # validation in batches of 5, 4 and 9: other products, equal up to rounding
        np.testing.assert_allclose(other[1], results[0][1], rtol=1e-5)
        for acc, expected, p in zip(other[2], results[0][2], outputs[0]):
            assert_same_accuracy(acc, expected, 9, p)
    with pytest.raises(ValueError, match=r"validation_batch_size.*positive int, got 0"):
        model.fit(x, labels, epochs=1, verbose=0, validation_data=(xv, lv),
                  validation_batch_size=0)


def test_train_on_batch_takes_host_arrays_and_checks_shapes(backend):
    x, labels = fixed_data(n=6)
    model = small_cnn(dropout=0.0)
    model.compile(optimizer=SGD(lr=0.05), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    loss, acc = model.train_on_batch(x.astype(np.float64), labels)  # host, float64
    assert isinstance(loss, float) and np.isfinite(loss)
    assert isinstance(acc, float) and acc * 6 == round(acc * 6)  # a fraction of the 6 samples
    assert model.layers[0].params["kernel"].dtype == np.float32
    with pytest.raises(ValueError, match=r"Conv2D 'conv2d_1': expected input of shape \(batch, 8, 8, 3\)"):
        model.train_on_batch(x[:, :4], labels)
    with pytest.raises(ValueError, match="train_on_batch: x has 6 samples but y has 5"):
        model.train_on_batch(x, labels[:5])


# ---------------------------------------------------------------- profile_step
def _two_steps(step_name: str):
    """Two steps of one method on a seeded model with dropout and a moved ReLU."""
    minicnn.set_seed(5)
    x, labels = fixed_data(n=6)
    model = small_cnn(dropout=0.5)
    model.compile(optimizer=SGD(lr=0.1, momentum=0.5), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    results = [getattr(model, step_name)(x, labels) for _ in range(2)]
    return model, results, [minicnn.to_host(p).copy() for l in model.layers for p in l.params.values()]


def test_profile_step_trains_exactly_like_train_on_batch(backend):
    _, _, trained = _two_steps("train_on_batch")
    model, profiles, profiled = _two_steps("profile_step")
    for u, v in zip(trained, profiled):
        np.testing.assert_array_equal(u, v)  # same dropout masks, same updates
    assert model.optimizer.iterations == 2
    profile = profiles[-1]
    assert set(profile) == {"forward", "backward", "loss", "finite check", "optimizer", "step"}
    assert len(profile["forward"]) == len(profile["backward"]) == len(model.layers)
    parts = sum(profile["forward"]) + sum(profile["backward"]) + sum(
        profile[k] for k in ("loss", "finite check", "optimizer"))
    assert all(t >= 0 for t in profile["forward"] + profile["backward"])
    assert 0 < parts <= profile["step"]


def test_profile_step_puts_a_slow_layer_where_it_is(monkeypatch):
    import time as time_module
    model, _, _ = _two_steps("train_on_batch")
    dense = model.layers[-2]  # the first of two Dense layers: only this one is slowed
    slow_backward = dense._backward

    def backward(grad):
        time_module.sleep(0.05)
        return slow_backward(grad)
    monkeypatch.setattr(dense, "_backward", backward)
    x, labels = fixed_data(n=6)
    profile = model.profile_step(x, labels)
    i = model.layers.index(dense)
    assert profile["backward"][i] >= 0.05
    assert max(t for j, t in enumerate(profile["backward"]) if j != i) < 0.05
    assert max(profile["forward"]) < 0.05


# ---------------------------------------------------------------- compute_gradients / compute_loss
def test_compute_gradients_are_what_a_training_step_applies(backend):
    def fresh():
        minicnn.set_seed(11)
        model = small_cnn()  # no dropout: the two models see the same network
        model.compile(optimizer=SGD(lr=0.1), loss="sparse_categorical_crossentropy")
        return model
    x, labels = fixed_data(n=6)
    a, b = fresh(), fresh()
    loss = a.compute_gradients(x, labels)
    before = [minicnn.to_host(p).copy() for l in a.layers for p in l.params.values()]
    grads = [minicnn.to_host(l.grads[k]) for l in a.layers for k in l.params]
    b.train_on_batch(x, labels)
    after = [minicnn.to_host(p) for l in b.layers for p in l.params.values()]
    for w0, g, w1 in zip(before, grads, after):
        np.testing.assert_allclose(w1, w0 - 0.1 * g, rtol=1e-5, atol=1e-7)
    assert a.optimizer.iterations == 0  # no update happened
    assert float(loss) == pytest.approx(float(a.compute_loss(x, labels, training=True)), rel=1e-6)
    assert float(a.compute_loss(x, labels)) == pytest.approx(a.evaluate(x, labels), rel=1e-6)


def test_compute_gradients_needs_a_compiled_model():
    with pytest.raises(RuntimeError, match=r"Sequential.compute_gradients: call model.compile"):
        small_cnn().compute_gradients(*fixed_data(n=2))
    with pytest.raises(RuntimeError, match=r"Sequential.compute_loss: call model.compile"):
        small_cnn().compute_loss(*fixed_data(n=2))
