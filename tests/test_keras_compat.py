"""No silent differences from Keras 2.2.4: its arguments, its semantics, its tutorial.

Each section checks one promise against what Keras 2.2.4 does (keras/engine/
base_layer.py, keras/layers/{convolutional,pooling,core}.py, keras/optimizers.py,
keras/engine/training.py and training_arrays.py):

* every Keras constructor argument of the tutorial's layers and of SGD is
  accepted; at its Keras default it changes nothing, and a value minicnn does
  not implement is refused with an error naming the argument;
* SGD's decay, momentum, Nesterov and Keras 2.2's gradient clipping, checked
  against updates computed by hand;
* ``trainable``, ``train_on_batch``/``test_on_batch``/``predict_on_batch``,
  ``input_shape``/``output_shape``/``compute_output_shape``/``build``;
* weight files (.npz only; the activation is part of the architecture);
* the checks ``fit`` makes before its first step, divergence, Keras-style
  callbacks and ``validation_split``;
* the classic Keras 2.2 CIFAR-10 tutorial, run verbatim with ``keras``
  renamed to ``minicnn`` (tiny data, one epoch).

Tiny models on 8x8x3 inputs keep the whole file to a few seconds (the
tutorial's real network dominates it).
"""
from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

import minicnn
from minicnn.callbacks import Callback
from minicnn.training.interrupts import TrainingDiverged
from minicnn.layers import Activation, Conv2D, Dense, Dropout, Flatten, MaxPooling2D
from minicnn.models import Sequential
from minicnn.optimizers import SGD
from minicnn.utils import to_categorical


# ---------------------------------------------------------------- helpers
def data(n=8, classes=3, seed=0):
    """n images of 8x8x3 in [0, 1) and one-hot labels over ``classes``."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, 8, 8, 3)).astype(np.float32)
    y = to_categorical(rng.integers(0, classes, n), classes)
    return x, y


def small_cnn(classes=3, metrics=("accuracy",), loss="categorical_crossentropy",
              optimizer=None):
    model = Sequential([Conv2D(4, (3, 3), activation="relu", input_shape=(8, 8, 3)),
                        MaxPooling2D((2, 2)), Flatten(),
                        Dense(classes, activation="softmax")])
    model.compile(optimizer=optimizer or SGD(lr=0.05), loss=loss, metrics=list(metrics))
    return model


def all_weights(model):
    """Host copies of every weight of every layer (minicnn's Sequential has no
    get_weights of its own)."""
    return [w for layer in model.layers for w in layer.get_weights()]


def same_weights(a, b) -> bool:
    return len(a) == len(b) and all(np.array_equal(u, v) for u, v in zip(a, b))


# ================================================================ 1. constructor arguments
# Every Keras 2.2.4 argument, at its Keras default value.
KERAS_DEFAULTS = {
    "Conv2D": dict(strides=(1, 1), padding="valid", data_format=None, dilation_rate=(1, 1),
                   activation=None, use_bias=True, kernel_initializer="glorot_uniform",
                   bias_initializer="zeros", kernel_regularizer=None, bias_regularizer=None,
                   activity_regularizer=None, kernel_constraint=None, bias_constraint=None),
    "Activation": {},
    "MaxPooling2D": dict(pool_size=(2, 2), strides=None, padding="valid", data_format=None),
    "Dropout": dict(noise_shape=None, seed=None),
    "Flatten": dict(data_format=None),
    "Dense": dict(activation=None, use_bias=True, kernel_initializer="glorot_uniform",
                  bias_initializer="zeros", kernel_regularizer=None, bias_regularizer=None,
                  activity_regularizer=None, kernel_constraint=None, bias_constraint=None),
}
# The base layer's keywords (keras/engine/base_layer.py), at their defaults.
BASE_DEFAULTS = dict(name=None, trainable=True, batch_size=None, dtype=None, weights=None)


def keras_network(explicit: str | None = None) -> Sequential:
    """Conv2D -> relu -> pool -> dropout -> flatten -> dense -> softmax, with every
    Keras argument of the layer type ``explicit`` spelled out at its default."""
    def kw(kind):
        return {**KERAS_DEFAULTS[kind], **BASE_DEFAULTS} if kind == explicit else {}
    model = Sequential([
        Conv2D(4, (3, 3), input_shape=(8, 8, 3), **kw("Conv2D")),
        Activation("relu", **kw("Activation")),
        MaxPooling2D(**kw("MaxPooling2D")),
        Dropout(0.25, **kw("Dropout")),
        Flatten(**kw("Flatten")),
        Dense(3, **kw("Dense")),
        Activation("softmax"),
    ])
    model.compile(optimizer=SGD(lr=0.05), loss="categorical_crossentropy", metrics=["accuracy"])
    return model


@pytest.mark.parametrize("kind", list(KERAS_DEFAULTS))
def test_every_keras_argument_at_its_default_changes_nothing(kind):
    """Spelling out all of Keras's defaults gives the very same model, step for step."""
    x, y = data()
    results = []
    for explicit in (None, kind):
        minicnn.set_seed(0)
        model = keras_network(explicit)
        first = model.train_on_batch(x, y)
        model.fit(x, y, batch_size=4, epochs=1, verbose=0)
        results.append((first, all_weights(model), model.predict(x)))
    (first_a, weights_a, out_a), (first_b, weights_b, out_b) = results
    assert first_a == first_b
    assert same_weights(weights_a, weights_b)
    assert np.array_equal(out_a, out_b)


def test_sgd_with_every_keras_argument_at_its_default_changes_nothing():
    x, y = data()
    results = []
    for optimizer in (SGD(), SGD(lr=0.01, momentum=0.0, decay=0.0, nesterov=False)):
        minicnn.set_seed(0)
        model = small_cnn(optimizer=optimizer)
        model.fit(x, y, batch_size=4, epochs=2, verbose=0)
        results.append(all_weights(model))
    assert same_weights(*results)


def test_sgd_takes_all_its_keras_arguments_at_once():
    optimizer = SGD(lr=0.02, momentum=0.9, decay=1e-4, nesterov=True, clipnorm=5.0,
                    clipvalue=0.5)
    assert (optimizer.lr, optimizer.momentum, optimizer.decay, optimizer.nesterov,
            optimizer.clipnorm, optimizer.clipvalue) == (0.02, 0.9, 1e-4, True, 5.0, 0.5)
    x, y = data()
    small_cnn(optimizer=optimizer).fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert optimizer.iterations == 2


# (the regularizers are supported: tests/test_regularizers.py)
REGULARIZERS_AND_CONSTRAINTS = [("kernel_constraint", "max_norm"), ("bias_constraint", "non_neg")]

UNSUPPORTED = [
    *[pytest.param(make, ValueError, r"data_format.*'channels_last'",
                   id=f"{name}-channels_first")
      for name, make in (("Conv2D", lambda: Conv2D(2, 3, data_format="channels_first")),
                         ("MaxPooling2D", lambda: MaxPooling2D(data_format="channels_first")),
                         ("Flatten", lambda: Flatten(data_format="channels_first")))],
    pytest.param(lambda: Conv2D(2, 3, strides=2, dilation_rate=2), ValueError,
                 r"strides=\(2, 2\) with dilation_rate=\(2, 2\) is not supported",
                 id="Conv2D-strides-and-dilation_rate"),
    *[pytest.param(lambda arg=arg, value=value: Dense(2, **{arg: value}),
                   ValueError, rf"Dense: {arg}='{value}' is not supported.*{arg}=None",
                   id=f"Dense-{arg}")
      for arg, value in REGULARIZERS_AND_CONSTRAINTS],
    *[pytest.param(lambda arg=arg, value=value: Conv2D(2, 3, **{arg: value}),
                   ValueError, rf"Conv2D: {arg}='{value}' is not supported.*{arg}=None",
                   id=f"Conv2D-{arg}")
      for arg, value in REGULARIZERS_AND_CONSTRAINTS],
    pytest.param(lambda: Dropout(0.5, noise_shape=(None, 1, 1, 3)), ValueError,
                 r"Dropout: noise_shape=\(None, 1, 1, 3\) is not supported.*noise_shape=None",
                 id="Dropout-noise_shape"),
    *[pytest.param(make, ValueError, r"dtype 'float64' differs from minicnn's float type "
                   r"'float32'.*set_floatx\('float64'\)", id=f"{name}-dtype=float64")
      for name, make in (("Conv2D", lambda: Conv2D(2, 3, dtype="float64")),
                         ("MaxPooling2D", lambda: MaxPooling2D(dtype="float64")),
                         ("Dropout", lambda: Dropout(0.5, dtype="float64")),
                         ("Flatten", lambda: Flatten(dtype="float64")),
                         ("Dense", lambda: Dense(2, dtype="float64")),
                         ("Activation", lambda: Activation("relu", dtype="float64")))],
    pytest.param(lambda: Dense(2, dtype="float16"), ValueError, r"dtype 'float16'",
                 id="Dense-dtype=float16"),
    *[pytest.param(make, TypeError, r"'kernel_init'", id=f"{name}-unknown-keyword")
      for name, make in (("Conv2D", lambda: Conv2D(2, 3, kernel_init="zeros")),
                         ("MaxPooling2D", lambda: MaxPooling2D(kernel_init="zeros")),
                         ("Dropout", lambda: Dropout(0.5, kernel_init="zeros")),
                         ("Flatten", lambda: Flatten(kernel_init="zeros")),
                         ("Dense", lambda: Dense(2, kernel_init="zeros")),
                         ("Activation", lambda: Activation("relu", kernel_init="zeros")),
                         ("SGD", lambda: SGD(kernel_init="zeros")))],
    # Keras's base layer refuses input_dim on anything but Dense (it is Dense's own).
    pytest.param(lambda: Conv2D(2, 3, input_dim=3), TypeError, r"'input_dim'",
                 id="Conv2D-input_dim"),
    pytest.param(lambda: Dense(2, trainable="yes"), TypeError,
                 r"Dense: trainable must be True or False, got 'yes'", id="Dense-trainable=yes"),
    pytest.param(lambda: Conv2D(2, 3, trainable=1), TypeError,
                 r"trainable must be True or False, got 1", id="Conv2D-trainable=1"),
]


@pytest.mark.parametrize("make,error,pattern", UNSUPPORTED)
def test_unsupported_keras_values_are_refused_by_name(make, error, pattern):
    with pytest.raises(error, match=pattern):
        make()


@pytest.mark.parametrize("make", [
    lambda: Conv2D(2, 3, data_format="channels_last"),
    lambda: MaxPooling2D(data_format="channels_last"),
    lambda: Flatten(data_format="channels_last"),
    lambda: Conv2D(2, 3, dilation_rate=1),
    lambda: Conv2D(2, 3, dilation_rate=(1, 1)),
    lambda: Conv2D(2, 3, dilation_rate=(2, 3)),
    lambda: Dense(2, dtype="float32"),
    lambda: Conv2D(2, 3, dtype=np.dtype("float32")),
    lambda: Dropout(0.5, seed=3, name="drop", trainable=False),
    lambda: Activation("relu", batch_size=4, input_shape=(8, 8, 3)),
], ids=["conv-channels_last", "pool-channels_last", "flatten-channels_last", "dilation-1",
        "dilation-(1, 1)", "dilation-(2, 3)", "dtype-float32", "dtype-np.dtype", "dropout-seed", "batch_size"])
def test_supported_values_of_the_same_arguments_are_accepted(make):
    make()


def test_dtype_equal_to_floatx_is_accepted_under_float64():
    minicnn.set_floatx("float64")
    model = Sequential([Dense(2, input_shape=(3,), dtype="float64")])
    assert model.layers[0].get_weights()[0].dtype == np.float64


def test_legacy_input_dtype_keyword_is_accepted():
    """keras/engine/base_layer.py (2.2.4) lists 'input_dtype' (legacy) among the
    keywords every layer takes, and reads it when dtype is not given."""
    model = Sequential([Dense(2, input_shape=(3,), input_dtype="float32")])
    assert model.input_shape == (None, 3)


def test_dense_refuses_input_dim_together_with_input_shape():
    """Keras's Dense only turns input_dim into input_shape when input_shape is absent;
    otherwise input_dim reaches the base layer, which raises TypeError. A conflicting
    pair must never be silently resolved."""
    with pytest.raises((TypeError, ValueError), match="input_dim"):
        Dense(4, input_shape=(3,), input_dim=5)


@pytest.mark.parametrize("layer,lower", [
    (lambda p: Conv2D(2, (3, 3), strides=2, padding=p), "same"),
    (lambda p: MaxPooling2D((3, 3), strides=2, padding=p), "same"),
    (lambda p: Conv2D(2, (3, 3), padding=p), "valid"),
], ids=["conv-SAME", "pool-SAME", "conv-VALID"])
@pytest.mark.parametrize("spelling", [str.upper, str.capitalize])
def test_padding_is_case_insensitive(layer, lower, spelling):
    shaped = layer(spelling(lower))
    assert shaped.padding == lower
    assert shaped.compute_output_shape((None, 7, 7, 3)) == \
        layer(lower).compute_output_shape((None, 7, 7, 3))


def test_weights_keyword_sets_the_initial_weights():
    rng = np.random.default_rng(3)
    kernel, bias = rng.normal(size=(4, 3)).astype(np.float32), rng.normal(size=3).astype(np.float32)
    ck, cb = rng.normal(size=(3, 3, 3, 2)).astype(np.float32), rng.normal(size=2).astype(np.float32)
    model = Sequential([Conv2D(2, (3, 3), input_shape=(8, 8, 3), weights=[ck, cb]), Flatten(),
                        Dense(4), Dense(3, weights=[kernel, bias])])
    conv, dense = model.layers[0], model.layers[-1]
    assert np.array_equal(conv.get_weights()[0], ck) and np.array_equal(conv.get_weights()[1], cb)
    assert np.array_equal(dense.get_weights()[0], kernel)
    assert np.array_equal(dense.get_weights()[1], bias)
    # and they are what the forward uses
    single = Sequential([Dense(3, input_shape=(4,), weights=[kernel, bias])])
    x = rng.normal(size=(5, 4)).astype(np.float32)
    np.testing.assert_allclose(single.predict(x), x @ kernel + bias, rtol=1e-5, atol=1e-6)


def test_batch_input_shape_and_input_dim_give_the_model_its_input_shape():
    model = Sequential([Conv2D(2, (3, 3), batch_input_shape=(None, 8, 8, 3))])
    assert model.input_shape == (None, 8, 8, 3)
    assert model.output_shape == (None, 6, 6, 2)
    assert model.built
    dense = Sequential([Dense(4, input_dim=3)])
    assert dense.input_shape == (None, 3)
    assert dense.output_shape == (None, 4)
    assert dense.count_params() == 16
    batched = Sequential([Conv2D(2, (3, 3), input_shape=(8, 8, 3), batch_size=16)])
    assert batched.output_shape[1:] == (6, 6, 2)


def test_name_keyword_names_the_layer():
    model = Sequential([Conv2D(2, (3, 3), input_shape=(8, 8, 3), name="features"), Flatten(),
                        Dense(3, name="head")])
    assert [layer.name for layer in model.layers] == ["features", "flatten_1", "head"]
    lines = []
    model.summary(print_fn=lines.append)
    assert any(line.startswith("features (Conv2D)") for line in lines)
    assert any(line.startswith("head (Dense)") for line in lines)


# ================================================================ 2. SGD and gradient clipping
def dense_model():
    """Two Dense layers (4 weights in all) on 4 features, built and compiled."""
    minicnn.set_seed(0)
    model = Sequential([Dense(3, input_shape=(4,)), Dense(2)])
    model.compile(optimizer="sgd", loss="mean_squared_error")
    return model


def set_gradients(model, scale=1.0, seed=0):
    """Put known gradients into every layer's grads; returns host copies of them."""
    rng = np.random.default_rng(seed)
    grads = []
    for layer in model.layers:
        for name, param in layer.params.items():
            g = (scale * rng.normal(size=param.shape)).astype(np.float32)
            layer.grads[name] = minicnn.to_device(g)
            grads.append(g)
    return grads


def applied(optimizer, model, grads_before):
    """Run one optimizer.apply; return (weights before, weights after), and check the
    layers' own gradients were left as they were."""
    before = all_weights(model)
    optimizer.apply(model.layers)
    after = all_weights(model)
    now = [minicnn.to_host(layer.grads[n]) for layer in model.layers for n in layer.params]
    assert same_weights(now, grads_before), "the optimizer changed the layers' gradients"
    return before, after


def test_clipnorm_scales_every_gradient_by_the_norm_of_all_of_them():
    model = dense_model()
    grads = set_gradients(model, scale=3.0)
    norm = np.sqrt(sum(float((g.astype(np.float64) ** 2).sum()) for g in grads))
    clipnorm, lr = 1.5, 0.1
    assert norm > clipnorm
    before, after = applied(SGD(lr=lr, clipnorm=clipnorm), model, grads)
    for w0, w1, g in zip(before, after, grads):
        expected = w0 - lr * g.astype(np.float64) * (clipnorm / norm)
        np.testing.assert_allclose(w1, expected, rtol=1e-5, atol=1e-7)


def test_clipnorm_larger_than_the_norm_changes_nothing():
    model = dense_model()
    grads = set_gradients(model, scale=0.01)
    norm = np.sqrt(sum(float((g.astype(np.float64) ** 2).sum()) for g in grads))
    assert norm < 1.0
    model_plain = dense_model()
    set_gradients(model_plain, scale=0.01)
    _, clipped = applied(SGD(lr=0.1, clipnorm=1.0), model, grads)
    _, plain = applied(SGD(lr=0.1), model_plain, grads)
    assert same_weights(clipped, plain)


def test_clipvalue_clips_each_entry():
    model = dense_model()
    grads = set_gradients(model, scale=2.0)
    clipvalue, lr = 0.5, 0.1
    assert any((np.abs(g) > clipvalue).any() for g in grads)
    before, after = applied(SGD(lr=lr, clipvalue=clipvalue), model, grads)
    for w0, w1, g in zip(before, after, grads):
        expected = w0 - lr * np.clip(g.astype(np.float64), -clipvalue, clipvalue)
        np.testing.assert_allclose(w1, expected, rtol=1e-5, atol=1e-7)


def test_clipnorm_then_clipvalue_as_keras_applies_them():
    """keras/optimizers.py get_gradients: clip_norm first, then K.clip by value."""
    model = dense_model()
    grads = set_gradients(model, scale=3.0)
    norm = np.sqrt(sum(float((g.astype(np.float64) ** 2).sum()) for g in grads))
    clipnorm, clipvalue, lr = 2.0, 0.3, 0.1
    before, after = applied(SGD(lr=lr, clipnorm=clipnorm, clipvalue=clipvalue), model, grads)
    for w0, w1, g in zip(before, after, grads):
        step = np.clip(g.astype(np.float64) * (clipnorm / norm), -clipvalue, clipvalue)
        np.testing.assert_allclose(w1, w0 - lr * step, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("nesterov", [False, True], ids=["momentum", "nesterov"])
def test_decay_and_momentum_follow_keras_update_rule(nesterov):
    """Keras 2.2.4 SGD: lr_t = lr / (1 + decay * iterations); v = m*v - lr_t*g;
    p += v, or p += m*v - lr_t*g with Nesterov. Two steps by hand."""
    model = dense_model()
    lr, momentum, decay = 0.1, 0.9, 0.5
    optimizer = SGD(lr=lr, momentum=momentum, decay=decay, nesterov=nesterov)
    p = [w.astype(np.float64) for w in all_weights(model)]
    v = [np.zeros_like(w) for w in p]
    for t in range(2):
        grads = set_gradients(model, seed=t)
        lr_t = lr / (1 + decay * t)
        assert optimizer.current_learning_rate == pytest.approx(lr_t)
        applied(optimizer, model, grads)
        for i, g in enumerate(grads):
            v[i] = momentum * v[i] - lr_t * g
            p[i] = p[i] + (momentum * v[i] - lr_t * g if nesterov else v[i])
        for w, expected in zip(all_weights(model), p):
            np.testing.assert_allclose(w, expected, rtol=1e-5, atol=1e-6)
    assert optimizer.iterations == 2


# ================================================================ 3. trainable
def frozen_model(freeze_after_construction: bool) -> Sequential:
    conv = Conv2D(4, (3, 3), input_shape=(8, 8, 3))      # 3*3*3*4 + 4 = 112
    hidden = Dense(16) if freeze_after_construction else Dense(16, trainable=False)  # 144*16+16
    model = Sequential([conv, Activation("relu"), Flatten(), hidden,
                        Dense(3, activation="softmax")])  # 16*3 + 3 = 51
    if freeze_after_construction:
        hidden.trainable = False
    model.compile(optimizer=SGD(lr=0.1, momentum=0.9), loss="categorical_crossentropy")
    return model


@pytest.mark.parametrize("after", [False, True], ids=["trainable=False", "layer.trainable=False"])
def test_frozen_layer_is_left_exactly_unchanged_by_fit(after):
    model = frozen_model(after)
    hidden = model.layers[3]
    assert not hidden.trainable
    before = [layer.get_weights() for layer in model.layers]
    x, y = data()
    model.fit(x, y, batch_size=4, epochs=2, verbose=0)
    after_fit = [layer.get_weights() for layer in model.layers]
    assert same_weights(after_fit[3], before[3])
    for i in (0, 4):
        assert not any(np.array_equal(a, b) for a, b in zip(after_fit[i], before[i])), \
            f"layer {model.layers[i].name} did not train"


@pytest.mark.parametrize("after", [False, True], ids=["trainable=False", "layer.trainable=False"])
def test_summary_counts_trainable_and_non_trainable_params(after, capsys):
    model = frozen_model(after)
    model.summary()  # Keras prints to stdout by default
    text = capsys.readouterr().out
    assert "Total params: 2,483" in text
    assert "Trainable params: 163" in text
    assert "Non-trainable params: 2,320" in text
    assert model.count_params() == 2483


def test_trainable_and_non_trainable_weights_lists():
    model = frozen_model(False)
    conv, hidden = model.layers[0], model.layers[3]
    assert hidden.trainable_weights == []
    assert [w.shape for w in hidden.non_trainable_weights] == [(144, 16), (16,)]
    assert hidden.non_trainable_weights[0] is hidden.params["kernel"]
    assert [w.shape for w in conv.trainable_weights] == [(3, 3, 3, 4), (4,)]
    assert conv.non_trainable_weights == []
    hidden.trainable = True
    assert len(hidden.trainable_weights) == 2 and hidden.non_trainable_weights == []


# ================================================================ 4. *_on_batch
def test_train_on_batch_returns_a_float_or_loss_and_accuracy():
    x, y = data()
    plain = small_cnn(metrics=())
    loss = plain.train_on_batch(x, y)
    assert type(loss) is float and np.isfinite(loss)
    assert plain.optimizer.iterations == 1
    model = small_cnn()
    before = all_weights(model)
    result = model.train_on_batch(x, y)
    assert isinstance(result, list) and len(result) == 2
    assert all(type(v) is float for v in result)
    assert 0.0 <= result[1] <= 1.0
    assert not same_weights(all_weights(model), before)


def test_test_on_batch_matches_an_independent_computation_and_changes_nothing():
    x, y = data(n=12)
    model = small_cnn()
    model.fit(x, y, batch_size=4, epochs=2, verbose=0)
    before, iterations = all_weights(model), model.optimizer.iterations
    loss, acc = model.test_on_batch(x, y)
    assert type(loss) is float and type(acc) is float
    assert same_weights(all_weights(model), before)
    assert model.optimizer.iterations == iterations
    p = model.predict(x).astype(np.float64)
    assert acc == pytest.approx(float(np.mean(p.argmax(axis=1) == y.argmax(axis=1))))
    assert loss == pytest.approx(float(-np.mean(np.sum(y * np.log(p), axis=1))), rel=1e-5)
    plain = small_cnn(metrics=())
    assert type(plain.test_on_batch(x, y)) is float


def test_predict_on_batch_is_predict():
    x, _ = data()
    model = small_cnn()
    out = model.predict_on_batch(x)
    assert isinstance(out, np.ndarray) and out.shape == (8, 3)
    np.testing.assert_array_equal(out, model.predict(x))
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)


# ================================================================ 5. shapes
def test_layer_input_and_output_shape_attributes():
    conv = Conv2D(256, (3, 3), input_shape=(32, 32, 3))
    model = Sequential([conv, MaxPooling2D((2, 2)), Flatten(), Dense(10)])
    assert conv.input_shape == (None, 32, 32, 3)
    assert conv.output_shape == (None, 30, 30, 256)
    assert model.layers[1].output_shape == (None, 15, 15, 256)
    assert model.layers[2].input_shape == (None, 15, 15, 256)
    assert model.layers[2].output_shape == (None, 57600)
    assert model.input_shape == (None, 32, 32, 3)
    assert model.output_shape == (None, 10)


@pytest.mark.parametrize("layer,input_shape,expected", [
    (Conv2D(256, (3, 3)), (None, 32, 32, 3), (None, 30, 30, 256)),
    (Conv2D(8, (3, 3), strides=2, padding="same"), (None, 32, 32, 3), (None, 16, 16, 8)),
    (MaxPooling2D((2, 2)), (None, 13, 13, 256), (None, 6, 6, 256)),
    (MaxPooling2D((2, 2), padding="same"), (None, 13, 13, 256), (None, 7, 7, 256)),
    (Dropout(0.3), (None, 6, 6, 256), (None, 6, 6, 256)),
    (Flatten(), (None, 2, 2, 128), (None, 512)),
    (Dense(10), (None, 512), (None, 10)),
    (Activation("softmax"), (None, 10), (None, 10)),
], ids=["conv", "conv-same-stride2", "pool", "pool-same", "dropout", "flatten", "dense",
        "activation"])
def test_compute_output_shape_on_an_unbuilt_layer(layer, input_shape, expected):
    assert layer.compute_output_shape(input_shape) == expected
    assert not layer.built


def test_model_build_with_the_batch_axis():
    model = Sequential([Conv2D(4, (3, 3), activation="relu"), MaxPooling2D(), Flatten(),
                        Dense(3, activation="softmax")])
    assert not model.built and model.output_shape is None
    model.build((None, 8, 8, 3))
    assert model.built
    assert model.input_shape == (None, 8, 8, 3)
    assert model.output_shape == (None, 3)
    assert model.count_params() == 112 + (3 * 3 * 4 * 3 + 3)
    assert model.predict(data()[0]).shape == (8, 3)


# ================================================================ 6. HDF5 names
@pytest.mark.parametrize("name", ["w.h5", "w.hdf5", "W.H5"])
def test_hdf5_weight_file_names_are_refused_and_nothing_is_written(tmp_path, name):
    model = small_cnn()
    path = tmp_path / name
    with pytest.raises(ValueError, match=r"HDF5.*\.npz"):
        model.save_weights(str(path))
    assert os.listdir(tmp_path) == []
    with pytest.raises(ValueError, match=r"HDF5.*\.npz"):
        model.load_weights(str(path))
    assert os.listdir(tmp_path) == []


def test_fit_with_an_hdf5_checkpoint_is_refused_before_training(tmp_path):
    model = small_cnn()
    before = all_weights(model)
    x, y = data()
    with pytest.raises(ValueError, match=r"HDF5.*\.npz"):
        model.fit(x, y, batch_size=4, epochs=2, verbose=0, checkpoint=str(tmp_path / "c.h5"))
    assert model.optimizer.iterations == 0
    assert same_weights(all_weights(model), before)
    assert os.listdir(tmp_path) == []


# ================================================================ 7. activations in weight files
def activation_model(activation: str) -> Sequential:
    model = Sequential([Conv2D(4, (3, 3), activation=activation, input_shape=(8, 8, 3)),
                        Flatten(), Dense(3, activation="softmax")])
    model.compile(optimizer=SGD(lr=0.05), loss="categorical_crossentropy")
    return model


def test_weights_saved_with_relu_refuse_to_load_into_tanh(tmp_path):
    path = tmp_path / "w.npz"
    activation_model("relu").save_weights(str(path))
    other = activation_model("tanh")
    before = all_weights(other)
    with pytest.raises(ValueError, match=r"conv2d_1.*relu|conv2d_1.*tanh"):
        other.load_weights(str(path))
    assert same_weights(all_weights(other), before)


def test_weights_saved_with_relu_load_into_relu(tmp_path):
    path = tmp_path / "w.npz"
    minicnn.set_seed(1)
    saved = activation_model("relu")
    saved.save_weights(str(path))
    minicnn.set_seed(2)
    loaded = activation_model("relu")
    loaded.load_weights(str(path))
    assert same_weights(all_weights(loaded), all_weights(saved))
    x, _ = data()
    np.testing.assert_array_equal(loaded.predict(x), saved.predict(x))


def test_dense_activation_is_recorded_too(tmp_path):
    path = tmp_path / "w.npz"
    activation_model("relu").save_weights(str(path))
    other = Sequential([Conv2D(4, (3, 3), activation="relu", input_shape=(8, 8, 3)), Flatten(),
                        Dense(3, activation="sigmoid")])
    with pytest.raises(ValueError, match=r"dense_1"):
        other.load_weights(str(path))


# ================================================================ 8. NaN or inf in y
@pytest.mark.parametrize("bad", [np.nan, np.inf], ids=["nan", "inf"])
@pytest.mark.parametrize("call", ["fit", "evaluate", "train_on_batch", "test_on_batch",
                                  "validation_data"])
def test_non_finite_targets_are_refused(call, bad):
    model = small_cnn()
    x, y = data()
    bad_y = y.copy()
    bad_y[3, 1] = bad
    before = all_weights(model)
    with pytest.raises(ValueError, match=r"y contains NaN or infinite values"):
        if call == "fit":
            model.fit(x, bad_y, verbose=0)
        elif call == "evaluate":
            model.evaluate(x, bad_y)
        elif call == "train_on_batch":
            model.train_on_batch(x, bad_y)
        elif call == "test_on_batch":
            model.test_on_batch(x, bad_y)
        else:
            model.fit(x, y, verbose=0, validation_data=(x, bad_y))
    assert model.optimizer.iterations == 0
    assert same_weights(all_weights(model), before)


# ================================================================ 9. fit's checks before step 1
class NoHooks:
    """Neither a function nor an object with any of Keras's on_* hooks."""


@pytest.mark.parametrize("kwargs,error,pattern", [
    (dict(epochs=2.5), ValueError, r"epochs must be a whole number.*2\.5"),
    (dict(epochs=True), ValueError, r"epochs must be a whole number.*True"),
    (dict(epochs=-1), ValueError, r"epochs must be a whole number.*-1"),
    (dict(initial_epoch=1.5), ValueError, r"initial_epoch must be a whole number.*1\.5"),
    (dict(verbose=3), ValueError, r"verbose must be 0, 1 or 2, got 3"),
    (dict(shuffle="batch"), ValueError, r"shuffle must be True or False, got 'batch'"),
    (dict(class_weight={0: 1}), ValueError, r"class_weight must contain all classes in the "
                                            r"data. The classes \[1, 2\] exist"),
    (dict(sample_weight=np.ones(7)), ValueError, r"x has 8 samples but sample_weight has 7"),
    (dict(steps_per_epoch=2), ValueError, r"steps_per_epoch is for a generator or Sequence x"),
    (dict(validation_steps=2), ValueError, r"validation_steps is for a generator or Sequence"),
    (dict(validation_freq=0), ValueError, r"validation_freq must be an int >= 1.*got 0"),
    (dict(validation_freq=[1, 2.5]), ValueError, r"validation_freq must be.*\[1, 2\.5\]"),
    (dict(validation_split=1.0), ValueError, r"validation_split must be a number in \[0, 1\)"),
    (dict(validation_split=1e-17), ValueError, r"leaves no training or no validation samples"),
    (dict(callbacks=[3]), TypeError, r"callback 3 is neither a function"),
    (dict(callbacks=[NoHooks()]), TypeError, r"NoHooks.*neither a function.*on_epoch_end"),
    (dict(callbacks=Callback()), TypeError, r"callbacks must be a list, got Callback"),
    (dict(callbacks=lambda epoch, logs: None), TypeError, r"callbacks must be a list"),
], ids=["epochs=2.5", "epochs=True", "epochs=-1", "initial_epoch=1.5", "verbose=3",
        "shuffle=batch", "class_weight", "sample_weight", "steps_per_epoch", "validation_steps",
        "validation_freq=0", "validation_freq-float",
        "validation_split=1.0", "validation_split-too-small", "callback-int",
        "callback-no-hooks", "callbacks-not-a-list", "callbacks-a-function"])
def test_fit_refuses_before_the_first_step(kwargs, error, pattern):
    model = small_cnn()
    x, y = data()
    before = all_weights(model)
    args = dict(epochs=2, verbose=0, batch_size=4)
    args.update(kwargs)
    with pytest.raises(error, match=pattern):
        model.fit(x, y, **args)
    assert model.optimizer.iterations == 0
    assert same_weights(all_weights(model), before)


# ================================================================ 10. divergence
@pytest.mark.parametrize("lr", [1e6, 1e8])
@pytest.mark.parametrize("verbose", [0, 1])
def test_huge_learning_rate_raises_training_diverged_without_warnings(lr, verbose, capsys):
    """A linear output under mean squared error grows without bound at such rates
    (a softmax cross-entropy's gradient stays bounded, so it need not diverge)."""
    model = Sequential([Conv2D(4, (3, 3), activation="relu", input_shape=(8, 8, 3)),
                        MaxPooling2D(), Flatten(), Dense(3, activation="relu"), Dense(3)])
    model.compile(optimizer=SGD(lr=lr), loss="mean_squared_error")
    x, y = data()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(TrainingDiverged, match=r"training diverged in epoch \d+, step \d+/4"):
            model.fit(x, y, batch_size=2, epochs=50, verbose=verbose)
    capsys.readouterr()
    # the step that diverged was refused before its update: every weight is still finite
    assert all(np.isfinite(w).all() for w in all_weights(model))


def test_non_finite_validation_loss_stops_after_the_first_epoch():
    """Validation images of 1e38 are finite in float32, but a convolution whose
    kernel is all ones sums 27 of them to inf; the Dense layer's mixed-sign weights
    then meet inf - inf, so the validation loss is NaN."""
    model = Sequential([
        Conv2D(4, (3, 3), activation="relu", input_shape=(8, 8, 3),
               weights=[np.ones((3, 3, 3, 4), np.float32), np.zeros(4, np.float32)]),
        MaxPooling2D((2, 2)), Flatten(), Dense(3, activation="softmax")])
    model.compile(optimizer=SGD(lr=0.01), loss="categorical_crossentropy", metrics=["accuracy"])
    x, y = data()
    seen = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(TrainingDiverged, match=r"epoch 1: the validation loss became"):
            model.fit(x, y, batch_size=4, epochs=3, verbose=0,
                      validation_data=(np.full((4, 8, 8, 3), 1e38, np.float32), y[:4]),
                      callbacks=[lambda epoch, logs: seen.append(epoch)])
    assert model.optimizer.iterations == 2  # one epoch of 8 samples in batches of 4, no more
    assert seen == []


# ================================================================ 11. callbacks
class Recorder(Callback):
    def __init__(self):
        super().__init__()
        self.calls = []
        self.model_seen = None

    def on_train_begin(self, logs=None):
        self.model_seen = self.model
        self.calls.append(("train_begin", None, dict(logs or {})))

    def on_epoch_begin(self, epoch, logs=None):
        self.calls.append(("epoch_begin", epoch, dict(logs or {})))

    def on_batch_begin(self, batch, logs=None):
        self.calls.append(("batch_begin", batch, dict(logs or {})))

    def on_batch_end(self, batch, logs=None):
        self.calls.append(("batch_end", batch, dict(logs or {})))

    def on_epoch_end(self, epoch, logs=None):
        self.calls.append(("epoch_end", epoch, dict(logs or {})))

    def on_train_end(self, logs=None):
        self.calls.append(("train_end", None, dict(logs or {})))


def test_keras_callback_hooks_run_in_order_with_their_logs():
    model = small_cnn()
    x, y = data()
    first_batch_loss = model.test_on_batch(x[:4], y[:4])[0]  # no Dropout: training loss equals
    recorder = Recorder()
    history = model.fit(x, y, batch_size=4, epochs=2, verbose=0, shuffle=False,
                        validation_data=(x[:4], y[:4]), callbacks=[recorder])
    order = [(hook, index) for hook, index, _ in recorder.calls]
    epoch = [("batch_begin", 0), ("batch_end", 0), ("batch_begin", 1), ("batch_end", 1)]
    assert order == [("train_begin", None),
                     ("epoch_begin", 0), *epoch, ("epoch_end", 0),
                     ("epoch_begin", 1), *epoch, ("epoch_end", 1),
                     ("train_end", None)]
    assert recorder.model_seen is model and recorder.model is model
    assert recorder.params["epochs"] == 2 and recorder.params["samples"] == 8
    assert recorder.params["batch_size"] == 4
    assert recorder.params["metrics"] == ["loss", "acc", "val_loss", "val_acc"]
    begins = [logs for hook, _, logs in recorder.calls if hook == "batch_begin"]
    assert begins[0] == {"batch": 0, "size": 4} and begins[1] == {"batch": 1, "size": 4}
    ends = [(index, logs) for hook, index, logs in recorder.calls if hook == "batch_end"]
    for index, logs in ends:
        assert logs["batch"] == index and logs["size"] == 4
        assert type(logs["loss"]) is float and 0.0 <= logs["acc"] <= 1.0
    assert ends[0][1]["loss"] == pytest.approx(first_batch_loss, rel=1e-5)
    epoch_logs = [logs for hook, _, logs in recorder.calls if hook == "epoch_end"]
    for i, logs in enumerate(epoch_logs):
        assert {"loss", "acc", "val_loss", "val_acc"} <= set(logs)
        for key in ("loss", "acc", "val_loss", "val_acc"):
            assert logs[key] == history.history[key][i]
        # Keras's BaseLogger: the epoch's loss is the size-weighted mean of its batches'
        batch_losses = [lg["loss"] for _, lg in ends[2 * i:2 * i + 2]]
        assert logs["loss"] == pytest.approx(np.mean(batch_losses), rel=1e-6)


class StopAfterEpoch(Callback):
    def on_epoch_end(self, epoch, logs=None):
        self.model.stop_training = True


class StopAfterFirstBatch(Callback):
    def on_batch_end(self, batch, logs=None):
        self.model.stop_training = True


def test_stop_training_in_on_epoch_end_ends_fit_after_that_epoch():
    model = small_cnn()
    x, y = data()
    recorder = Recorder()
    history = model.fit(x, y, batch_size=4, epochs=5, verbose=0,
                        callbacks=[StopAfterEpoch(), recorder])
    assert len(history.history["loss"]) == 1
    assert model.optimizer.iterations == 2
    assert recorder.calls[-1][0] == "train_end"  # Keras still calls on_train_end


def test_stop_training_in_on_batch_end_ends_the_epoch_after_that_batch():
    """keras/engine/training_arrays.py fit_loop (2.2.4): right after
    callbacks.on_batch_end, `if callback_model.stop_training: break` leaves the
    batch loop; then on_epoch_end, and the epoch loop breaks too."""
    model = small_cnn()
    x, y = data()
    model.fit(x, y, batch_size=2, epochs=3, verbose=0, callbacks=[StopAfterFirstBatch()])
    assert model.optimizer.iterations == 1


def test_a_plain_function_is_called_after_every_epoch():
    model = small_cnn()
    x, y = data()
    seen = []
    history = model.fit(x, y, batch_size=4, epochs=3, verbose=0,
                        callbacks=[lambda epoch, logs: seen.append((epoch, dict(logs)))])
    assert [epoch for epoch, _ in seen] == [0, 1, 2]
    assert [logs["loss"] for _, logs in seen] == history.history["loss"]


def test_a_duck_typed_callback_with_only_on_epoch_end_works():
    class OnlyEpochEnd:  # not a Callback subclass
        def __init__(self):
            self.epochs = []

        def on_epoch_end(self, epoch, logs=None):
            self.epochs.append((epoch, logs["loss"]))

    model = small_cnn()
    x, y = data()
    duck = OnlyEpochEnd()
    history = model.fit(x, y, batch_size=4, epochs=2, verbose=0, callbacks=[duck])
    assert duck.epochs == list(enumerate(history.history["loss"]))


# ================================================================ 12. validation_split
def test_validation_split_holds_out_the_last_samples_before_shuffling():
    model = small_cnn()
    x, y = data(seed=5)
    recorder = Recorder()
    history = model.fit(x, y, batch_size=3, epochs=1, verbose=0, validation_split=0.25,
                        callbacks=[recorder])
    assert recorder.params["samples"] == 6  # int(8 * (1 - 0.25)), Keras's split_at
    assert set(history.history) >= {"val_loss", "val_acc"}
    val_loss, val_acc = model.evaluate(x[6:], y[6:])
    assert history.history["val_loss"][0] == pytest.approx(val_loss, rel=1e-5)
    assert history.history["val_acc"][0] == pytest.approx(val_acc)
    # and not on the first two
    first_loss, _ = model.evaluate(x[:2], y[:2])
    assert history.history["val_loss"][0] != pytest.approx(first_loss, rel=1e-5)


# ================================================================ 13. the tutorial, verbatim
TUTORIAL = '''\
from keras.datasets import cifar10
from keras.models import Sequential
from keras.layers import Dense, Activation, Flatten, Conv2D, MaxPooling2D, Dropout
from keras.optimizers import SGD
from keras.utils import to_categorical

(x_train, y_train), (x_test, y_test) = cifar10.load_data()

x_train = x_train.astype("float32") / 255
x_test = x_test.astype("float32") / 255

y_train = to_categorical(y_train, 10)
y_test = to_categorical(y_test, 10)

model = Sequential()

model.add(Conv2D(filters = 256, kernel_size = (3,3), input_shape = (32,32,3), data_format = "channels_last"))
model.add(Activation("relu"))
model.add(MaxPooling2D(pool_size = (2,2), data_format = "channels_last"))
model.add(Dropout(0.3))

model.add(Conv2D(filters = 256, kernel_size = (3,3), data_format = "channels_last"))
model.add(Activation("relu"))
model.add(MaxPooling2D(pool_size = (2,2), data_format = "channels_last"))
model.add(Dropout(0.3))

model.add(Conv2D(filters = 128, kernel_size = (3,3), data_format = "channels_last"))
model.add(Activation("relu"))
model.add(MaxPooling2D(pool_size = (2,2), data_format = "channels_last"))
model.add(Dropout(0.3))

model.add(Flatten(data_format = "channels_last"))
model.add(Dense(512))
model.add(Activation("relu"))
model.add(Dense(256))
model.add(Activation("relu"))
model.add(Dense(10))
model.add(Activation("softmax"))

model.summary()

model.compile(loss = ["categorical_crossentropy"], optimizer = SGD(lr = 0.05, decay = 1e-4), metrics = ["accuracy"])

model_history = model.fit(x_train, y_train, batch_size = 32, epochs = 20, validation_data = (x_test, y_test))

print(model_history.history["val_acc"][-1])
'''

# The same program written against the top-level package only (`import keras`).
TUTORIAL_MODULE_STYLE = '''\
import keras

(x_train, y_train), (x_test, y_test) = keras.datasets.cifar10.load_data()
x_train = x_train.astype("float32") / 255
x_test = x_test.astype("float32") / 255
y_train = keras.utils.to_categorical(y_train, 10)
y_test = keras.utils.to_categorical(y_test, 10)

model = keras.models.Sequential()
for i, filters in enumerate([256, 256, 128]):
    if i == 0:
        model.add(keras.layers.Conv2D(filters = filters, kernel_size = (3,3), input_shape = (32,32,3), data_format = "channels_last"))
    else:
        model.add(keras.layers.Conv2D(filters = filters, kernel_size = (3,3), data_format = "channels_last"))
    model.add(keras.layers.Activation("relu"))
    model.add(keras.layers.MaxPooling2D(pool_size = (2,2), data_format = "channels_last"))
    model.add(keras.layers.Dropout(0.3))
model.add(keras.layers.Flatten(data_format = "channels_last"))
model.add(keras.layers.Dense(512))
model.add(keras.layers.Activation("relu"))
model.add(keras.layers.Dense(256))
model.add(keras.layers.Activation("relu"))
model.add(keras.layers.Dense(10))
model.add(keras.layers.Activation("softmax"))
model.summary()
model.compile(loss = ["categorical_crossentropy"], optimizer = keras.optimizers.SGD(lr = 0.05, decay = 1e-4), metrics = ["accuracy"])
model_history = model.fit(x_train, y_train, batch_size = 32, epochs = 20, validation_data = (x_test, y_test))
print(model_history.history["val_acc"][-1])
'''


def run_tutorial(code: str, monkeypatch) -> tuple[dict, str]:
    """Run ``code`` with keras renamed to minicnn, on tiny random data of CIFAR-10's
    shapes, for one epoch instead of 20; returns its namespace and what it printed."""
    # This import also makes minicnn.datasets.cifar10 an attribute in this process;
    # test_import_minicnn_exposes_the_keras_subpackages checks a fresh interpreter.
    from minicnn.datasets import cifar10

    rng = np.random.default_rng(0)

    def tiny(*args, **kwargs):
        assert not args and not kwargs, "the tutorial calls load_data() without arguments"
        images = rng.integers(0, 256, (34, 32, 32, 3), dtype=np.uint8)
        labels = rng.integers(0, 10, (34, 1), dtype=np.uint8)
        return (images, labels), (images[:6].copy(), labels[:6].copy())

    monkeypatch.setattr(cifar10, "load_data", tiny)
    assert "epochs = 20" in code
    code = code.replace("keras", "minicnn").replace("epochs = 20", "epochs = 1")
    namespace: dict = {}
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, "Keras 2.2 CIFAR-10 tutorial", "exec"), namespace)
    return namespace, printed.getvalue()


@pytest.mark.parametrize("code", [TUTORIAL, TUTORIAL_MODULE_STYLE],
                         ids=["from-imports", "import-keras"])
def test_the_keras_tutorial_runs_verbatim(code, monkeypatch):
    namespace, printed = run_tutorial(code, monkeypatch)
    model, history = namespace["model"], namespace["model_history"]
    assert model.count_params() == 1_288_842
    assert "Total params: 1,288,842" in printed
    assert "Trainable params: 1,288,842" in printed
    assert len(history.history["val_acc"]) == 1
    last_line = printed.strip().splitlines()[-1]
    assert float(last_line) == history.history["val_acc"][-1]
    assert model.output_shape == (None, 10)


def test_import_minicnn_exposes_the_keras_subpackages():
    """`import keras` gives keras.layers, .models, .optimizers, .utils, .datasets
    (with .cifar10) and .callbacks; so must `import minicnn`, in a fresh interpreter
    where nothing else has imported the submodules yet."""
    probe = ("import minicnn\n"
             "for name in ('layers', 'models', 'optimizers', 'utils', 'datasets', 'callbacks'):\n"
             "    assert hasattr(minicnn, name), name\n"
             "minicnn.layers.Dense, minicnn.layers.Conv2D, minicnn.models.Sequential\n"
             "minicnn.optimizers.SGD, minicnn.utils.to_categorical, minicnn.callbacks.Callback\n"
             "minicnn.datasets.cifar10.load_data\n")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
