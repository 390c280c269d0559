"""Mistakes a user makes, and the messages that tell them what went wrong.

Every check matches the meaningful part of the message: which layer or
argument, what was expected and what was given.
"""
from __future__ import annotations

import re

import numpy as np
import pytest

import minicnn
from minicnn import activations, initializers, losses, optimizers
from minicnn.gradcheck import check_model
from minicnn.layers import Activation, Conv2D, Dense, Dropout, Flatten, MaxPooling2D
from minicnn.models import Sequential
from minicnn.optimizers import SGD
from minicnn.utils import to_categorical


def dev(shape, value=0.5):
    return minicnn.to_device(np.full(shape, value, dtype=np.float32))


def cnn(input_shape=(8, 8, 3), classes=4, loss="categorical_crossentropy"):
    model = Sequential([Conv2D(4, 3, activation="relu", input_shape=input_shape),
                        MaxPooling2D(2), Flatten(), Dense(classes, activation="softmax")])
    model.compile(optimizer=SGD(lr=0.01), loss=loss, metrics=["accuracy"])
    return model


# ---------------------------------------------------------------- shapes into layers
@pytest.mark.parametrize("layer,shape,pattern", [
    (Conv2D(2, 3), (2, 8, 8), r"Conv2D: expected input of rank 4 .*got shape \(2, 8, 8\)"),
    (Conv2D(2, 3), (2, 8, 8, 3, 1), r"Conv2D: expected input of rank 4 .*\(2, 8, 8, 3, 1\)"),
    (MaxPooling2D(2), (2, 64), r"MaxPooling2D: expected input of rank 4 .*got shape \(2, 64\)"),
    (Dense(3), (2, 4, 4), r"Dense: expected input of rank 2 .*got shape \(2, 4, 4\).*Flatten"),
    (Dense(3, name="head"), (2, 4, 4), r"Dense 'head': expected input of rank 2"),
], ids=["conv-rank-2", "conv-rank-4", "pool-rank-1", "dense-rank-2", "named"])
def test_wrong_rank_into_unbuilt_layer(backend, layer, shape, pattern):
    with pytest.raises(ValueError, match=pattern):
        layer.forward(dev(shape))


@pytest.mark.parametrize("layer,built_for,shape,pattern", [
    (Conv2D(2, 3), (8, 8, 3), (2, 8, 8, 4),
     r"Conv2D: expected input of shape \(batch, 8, 8, 3\), got \(2, 8, 8, 4\)"),
    (Conv2D(2, 3), (8, 8, 3), (2, 9, 8, 3),
     r"Conv2D: expected input of shape \(batch, 8, 8, 3\), got \(2, 9, 8, 3\)"),
    (MaxPooling2D(2), (6, 6, 2), (2, 6, 6, 3),
     r"MaxPooling2D: expected input of shape \(batch, 6, 6, 2\), got \(2, 6, 6, 3\)"),
    (Dense(3), (5,), (2, 6), r"Dense: expected input of shape \(batch, 5\), got \(2, 6\)"),
    (Dense(3), (5,), (2, 5, 1), r"Dense: expected input of shape \(batch, 5\), got \(2, 5, 1\)"),
    (Dropout(0.5), (4, 4), (2, 4, 5), r"Dropout: expected input of shape \(batch, 4, 4\), got \(2, 4, 5\)"),
    (Flatten(), (4, 4), (2, 16), r"Flatten: expected input of shape \(batch, 4, 4\), got \(2, 16\)"),
    (Activation("relu"), (3,), (2, 4), r"Activation: expected input of shape \(batch, 3\), got \(2, 4\)"),
], ids=["conv-channels", "conv-height", "pool-channels", "dense-features", "dense-rank",
        "dropout", "flatten", "activation"])
def test_wrong_shape_into_built_layer(backend, layer, built_for, shape, pattern):
    layer.build((None, *built_for))
    with pytest.raises(ValueError, match=pattern):
        layer.forward(dev(shape))


def test_non_array_into_layer():
    with pytest.raises(TypeError, match="Dense: expected an array, got list"):
        Dense(2).forward([[1.0, 2.0]])


@pytest.mark.parametrize("layer,pattern", [
    (Conv2D(2, 5), r"Conv2D: kernel \(5, 5\) with padding 'valid' does not fit an input of 4x4"),
    (MaxPooling2D((2, 5)), r"MaxPooling2D: pool \(2, 5\) with padding 'valid' does not fit an input of 4x4"),
])
def test_window_larger_than_input(backend, layer, pattern):
    with pytest.raises(ValueError, match=pattern):
        layer.forward(dev((1, 4, 4, 1)))


def test_input_shape_with_the_batch_axis():
    # A common slip: input_shape=x_train.shape, or Keras's printed (None, 32, 32, 3).
    with pytest.raises(ValueError, match=r"Conv2D.*rank 4.*\(None, 50000, 32, 32, 3\).*without the batch"):
        Sequential([Conv2D(2, 3, input_shape=(50000, 32, 32, 3))])
    with pytest.raises(ValueError, match=r"Conv2D.*\(None, 32, 32, 3\)"):
        Sequential([Conv2D(2, 3, input_shape=(None, 32, 32, 3))])


def test_input_shape_given_as_a_bare_int():
    with pytest.raises(ValueError, match=r"Dense: input_shape must be a tuple, got the int 784; write \(784,\)"):
        Dense(4, input_shape=784)


def test_forgotten_flatten_is_caught_when_the_model_is_built():
    model = Sequential([Conv2D(2, 3, input_shape=(6, 6, 1))])
    with pytest.raises(ValueError, match=r"Dense 'dense_1': expected input of rank 2 .*\(None, 4, 4, 2\).*add Flatten\(\)"):
        model.add(Dense(3))


# ---------------------------------------------------------------- shapes into models
def test_channels_first_data_gets_the_hint(backend):
    model = Sequential([Conv2D(2, 3, input_shape=(32, 32, 3)), Flatten(), Dense(2, activation="softmax")])
    model.compile(optimizer="sgd", loss="categorical_crossentropy")
    x = np.zeros((2, 3, 32, 32), dtype=np.float32)
    pattern = (r"Conv2D 'conv2d_1': expected input of shape \(batch, 32, 32, 3\), got \(2, 3, 32, 32\)"
               r".*channels-first.*transpose\(0, 2, 3, 1\)")
    with pytest.raises(ValueError, match=pattern):
        model.predict(x)
    with pytest.raises(ValueError, match=pattern):
        model.fit(x, to_categorical([0, 1], 2), verbose=0)
    with pytest.raises(ValueError, match=pattern):
        model.layers[0].forward(minicnn.to_device(x))


def test_data_format_channels_first_is_refused():
    with pytest.raises(ValueError, match=r"channels_last.*transpose\(0, 2, 3, 1\)"):
        Conv2D(2, 3, data_format="channels_first")


def test_wrong_image_size_into_model(backend):
    with pytest.raises(ValueError, match=r"expected input of shape \(batch, 8, 8, 3\), got \(4, 9, 9, 3\)"):
        cnn().predict(np.zeros((4, 9, 9, 3), np.float32))


def test_wrong_rank_into_model(backend):
    with pytest.raises(ValueError, match=r"expected input of shape \(batch, 8, 8, 3\), got \(4, 8, 8\)"):
        cnn().predict(np.zeros((4, 8, 8), np.float32))


# ---------------------------------------------------------------- data given to fit / evaluate
def test_x_y_length_mismatch(backend):
    with pytest.raises(ValueError, match="x has 5 samples but y has 4"):
        cnn().fit(np.zeros((5, 8, 8, 3)), to_categorical([0, 1, 2, 3], 4), verbose=0)
    with pytest.raises(ValueError, match=r"validation_data.*x has 3 samples but y has 2"):
        cnn().fit(np.zeros((4, 8, 8, 3)), to_categorical([0, 1, 2, 3], 4), verbose=0,
                  validation_data=(np.zeros((3, 8, 8, 3)), to_categorical([0, 1], 4)))


@pytest.mark.parametrize("labels,pattern", [
    ([0, 1, 4, 2], r"labels must lie in \[0, 3\] for a model with 4 outputs, got values from 0 to 4"),
    ([0, -1, 2, 3], r"labels must lie in \[0, 3\] .*got values from -1 to 3"),
])
def test_sparse_labels_out_of_range(backend, labels, pattern):
    model = cnn(loss="sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match=pattern):
        model.fit(np.zeros((4, 8, 8, 3)), np.array(labels), verbose=0)
    with pytest.raises(ValueError, match=pattern):
        model.evaluate(np.zeros((4, 8, 8, 3)), np.array(labels))


def test_sparse_loss_given_one_hot_or_fractional_labels(backend):
    model = cnn(loss="sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match=r"sparse_categorical_crossentropy expects integer labels"):
        model.fit(np.zeros((4, 8, 8, 3)), to_categorical([0, 1, 2, 3], 4), verbose=0)
    with pytest.raises(ValueError, match=r"expects integer labels, got float labels with a "
                                         r"fractional part"):
        model.fit(np.zeros((4, 8, 8, 3)), np.array([0.0, 1.5, 2.0, 3.0]), verbose=0)


def test_sparse_loss_takes_float_labels_that_hold_integers(backend):
    """As Keras does: y.astype('float32') of class indices is fine."""
    model = cnn(loss="sparse_categorical_crossentropy")
    x = np.random.default_rng(0).standard_normal((4, 8, 8, 3))
    as_float = model.evaluate(x, np.array([0.0, 1.0, 2.0, 3.0]))
    as_int = model.evaluate(x, np.array([[0], [1], [2], [3]]))
    assert as_float == as_int  # the same labels after the check: the same arithmetic


@pytest.mark.parametrize("labels", [np.array([0, 1, 2, 3]), np.array([[0], [1], [2], [3]])],
                         ids=["(N,)", "(N, 1)"])
def test_integer_labels_given_to_categorical_loss(backend, labels):
    with pytest.raises(ValueError, match=r"expects targets of shape \(N, 4\).*to_categorical"):
        cnn().fit(np.zeros((4, 8, 8, 3)), labels, verbose=0)


def test_one_hot_with_the_wrong_number_of_classes(backend):
    with pytest.raises(ValueError, match=r"expects targets of shape \(N, 4\), got \(4, 10\)"):
        cnn().fit(np.zeros((4, 8, 8, 3)), to_categorical([0, 1, 2, 3], 10), verbose=0)


def test_empty_x(backend):
    model = cnn()
    with pytest.raises(ValueError, match=r"fit: x is empty"):
        model.fit(np.zeros((0, 8, 8, 3)), np.zeros((0, 4)), verbose=0)
    with pytest.raises(ValueError, match=r"predict: x is empty"):
        model.predict(np.zeros((0, 8, 8, 3)))
    with pytest.raises(ValueError, match=r"evaluate: x is empty"):
        model.evaluate(np.zeros((0, 8, 8, 3)), np.zeros((0, 4)))


def test_scalar_x(backend):
    model = cnn()
    with pytest.raises(ValueError, match=r"predict: expected a batch of samples \(N, \.\.\.\), got a scalar"):
        model.predict(np.float32(1.0))
    with pytest.raises(ValueError, match=r"train_on_batch: expected a batch of samples \(N, \.\.\.\), got a scalar"):
        model.train_on_batch(np.float32(1.0), np.zeros(4))
    with pytest.raises(ValueError, match=r"profile_step: x has 2 samples but y has none"):
        model.profile_step(np.zeros((2, 8, 8, 3)), np.float32(1.0))
    for call in (lambda: model.fit(np.zeros((2, 8, 8, 3)), 1, verbose=0),
                 lambda: model.evaluate(np.zeros((2, 8, 8, 3)), 1),
                 lambda: model.compute_loss(np.zeros((2, 8, 8, 3)), 1)):
        with pytest.raises(ValueError, match=r"x has 2 samples but y has none \(a scalar\)"):
            call()


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
@pytest.mark.parametrize("bad", [np.nan, np.inf, 1e300], ids=["nan", "inf", "overflows-float32"])
def test_non_finite_x(backend, bad):
    x = np.zeros((4, 8, 8, 3))
    x[2, 3, 4, 1] = bad
    with pytest.raises(ValueError, match=r"fit: x contains NaN or infinite values"):
        cnn().fit(x, to_categorical([0, 1, 2, 3], 4), verbose=0)
    with pytest.raises(ValueError, match=r"predict: x contains NaN"):
        cnn().predict(x)


def test_non_numeric_x():
    with pytest.raises(TypeError, match=r"expected numeric x, got dtype <U1"):
        cnn().predict(np.full((2, 8, 8, 3), "a"))


@pytest.mark.parametrize("batch_size", [0, -3, 2.5, "32"])
def test_bad_batch_size(backend, batch_size):
    model = cnn()
    x, y = np.zeros((4, 8, 8, 3)), to_categorical([0, 1, 2, 3], 4)
    pattern = r"batch_size must be a positive int, got " + re.escape(repr(batch_size))
    with pytest.raises(ValueError, match=r"fit: " + pattern):
        model.fit(x, y, batch_size=batch_size, verbose=0)
    with pytest.raises(ValueError, match=r"evaluate: " + pattern):
        model.evaluate(x, y, batch_size=batch_size)
    with pytest.raises(ValueError, match=r"predict: " + pattern):
        model.predict(x, batch_size=batch_size)


def test_validation_data_must_be_a_pair():
    x, y = np.zeros((4, 8, 8, 3)), to_categorical([0, 1, 2, 3], 4)
    with pytest.raises(ValueError, match=r"validation_data must be \(x_val, y_val\) or "
                                         r"\(x_val, y_val, val_sample_weight\), a generator "
                                         r"or a Sequence, got 1 items"):
        cnn().fit(x, y, verbose=0, validation_data=(x,))


def test_fit_before_compile():
    model = Sequential([Dense(2, input_shape=(3,))])
    with pytest.raises(RuntimeError, match=r"Sequential.fit: call model.compile"):
        model.fit(np.zeros((2, 3)), np.zeros((2, 2)), verbose=0)
    with pytest.raises(RuntimeError, match=r"Sequential.evaluate: call model.compile"):
        model.evaluate(np.zeros((2, 3)), np.zeros((2, 2)))


def test_compile_empty_model():
    with pytest.raises(ValueError, match="the model has no layers"):
        Sequential().compile()


def test_add_non_layer_and_duplicate_names():
    model = Sequential()
    with pytest.raises(TypeError, match="expected a minicnn layer, got str"):
        model.add("Dense")
    model.add(Dense(2, name="out", input_shape=(3,)))
    with pytest.raises(ValueError, match="a layer named 'out' is already in the model"):
        model.add(Dense(2, name="out"))


# ---------------------------------------------------------------- unknown names
@pytest.mark.parametrize("make,pattern", [
    (lambda: losses.get("hinges"), r"unknown loss 'hinges': expected one of .*categorical_crossentropy"),
    (lambda: cnn(loss="Hinge"), r"unknown loss 'Hinge'"),
    (lambda: losses.get(["mse", "categorical_crossentropy"]), r"give one loss, got 2"),
    (lambda: Dense(2, activation="swish"), r"Dense: unknown activation 'swish': expected one of .*relu.*softmax"),
    (lambda: Conv2D(2, 3, activation="relux"), r"Conv2D: unknown activation 'relux'"),
    (lambda: Activation("mish"), r"Activation: unknown activation 'mish'"),
    (lambda: activations.get("Relu"), r"unknown activation 'Relu'"),
    (lambda: Conv2D(2, 3, kernel_initializer="xavier"), r"Conv2D kernel_initializer: unknown initializer 'xavier': expected one of .*glorot_uniform"),
    (lambda: Dense(2, bias_initializer="One"), r"Dense bias_initializer: unknown initializer 'One'"),
    (lambda: initializers.get("kaiming_uniform"), r"unknown initializer 'kaiming_uniform'"),
    (lambda: Conv2D(2, 3, padding="full"), r"Conv2D: unknown padding 'full': expected 'valid' or 'same'"),
    (lambda: MaxPooling2D(2, padding="causal"), r"MaxPooling2D: unknown padding 'causal'"),
    (lambda: optimizers.get("adamw"), r"unknown optimizer 'adamw': expected one of sgd, rmsprop, "
                                       r"adagrad, adadelta, adam, adamax, nadam"),
    (lambda: cnn().compile(optimizer="lbfgs"), r"unknown optimizer 'lbfgs'"),
    (lambda: cnn().compile(optimizer="sgd", metrics=["f1"]), r"Sequential.compile: unknown metric 'f1': expected 'accuracy'"),
    (lambda: minicnn.set_backend("jax"), r"unknown backend 'jax': expected one of numpy, cupy, strict"),
    (lambda: minicnn.set_floatx("half"), r"unknown floatx 'half'"),
], ids=["loss", "loss-compile", "two-losses", "activation", "activation-conv", "activation-layer",
        "activation-case",
        "initializer", "bias-initializer", "initializer-get", "padding-conv", "padding-pool",
        "optimizer", "optimizer-compile", "metric", "backend", "floatx"])
def test_unknown_names(make, pattern):
    with pytest.raises(ValueError, match=pattern):
        make()


# ---------------------------------------------------------------- bad hyper-parameters
@pytest.mark.parametrize("rate", [1.0, 1.5, -0.1, float("nan"), "0.5", None, True, [0.5]])
def test_dropout_rate_out_of_range(rate):
    with pytest.raises(ValueError, match=r"Dropout: rate must be a number in \[0, 1\), got"):
        Dropout(rate)


def test_dropout_rate_accepts_numpy_numbers():
    assert Dropout(np.float32(0.25)).rate == 0.25 and Dropout(np.array(0.5)).rate == 0.5
    assert Dropout(0).rate == 0.0


@pytest.mark.parametrize("make,pattern", [
    (lambda: Conv2D(0, 3), r"Conv2D: filters must be a positive int, got 0"),
    (lambda: Conv2D(2.0, 3), r"Conv2D: filters must be a positive int, got 2\.0"),
    (lambda: Conv2D(2, 0), r"Conv2D: kernel_size must be positive, got \(0, 0\)"),
    (lambda: Conv2D(2, (3,)), r"Conv2D: kernel_size must be an int or a pair of ints"),
    (lambda: Conv2D(2, 3, strides=(1, 0)), r"Conv2D: strides must be positive"),
    (lambda: MaxPooling2D((2, 2, 2)), r"MaxPooling2D: pool_size must be an int or a pair"),
    (lambda: MaxPooling2D(2, strides=-1), r"MaxPooling2D: strides must be positive"),
    (lambda: Dense(0), r"Dense: units must be a positive int, got 0"),
    (lambda: SGD(lr=-0.1), r"SGD: lr must be a finite number >= 0, got -0.1"),
    (lambda: SGD(lr=float("nan")), r"SGD: lr must be a finite number >= 0, got nan"),
    (lambda: SGD(lr=float("inf")), r"SGD: lr must be a finite number >= 0, got inf"),
    (lambda: SGD(momentum=-1), r"SGD: momentum must be a finite number \[0, 1\), got -1"),
    (lambda: SGD(momentum=1.5), r"SGD: momentum must be a finite number \[0, 1\), got 1\.5"),
    (lambda: SGD(momentum=1), r"SGD: momentum must be a finite number \[0, 1\), got 1"),
    (lambda: SGD(decay="1e-4"), r"SGD: decay must be a finite number >= 0, got '1e-4'"),
    (lambda: SGD(clipnorm=-1.0), r"SGD: clipnorm must be a finite number >= 0, got -1\.0"),
    (lambda: SGD(clipvalue=float("nan")), r"SGD: clipvalue must be a finite number >= 0, got nan"),
], ids=["filters-0", "filters-float", "kernel-0", "kernel-1-tuple", "strides-0", "pool-3-tuple",
        "pool-strides", "units-0", "lr", "lr-nan", "lr-inf", "momentum", "momentum-1.5",
        "momentum-1", "decay", "clipnorm", "clipvalue"])
def test_bad_hyper_parameters(make, pattern):
    with pytest.raises(ValueError, match=pattern):
        make()


def test_numpy_scalar_hyper_parameters_are_accepted(backend):
    # Not bad input: numbers computed with NumPy (num_classes = y.max() + 1, a learning
    # rate read from a float32 array) are numpy scalars, and Keras takes them.
    classes, filters, size = np.int64(4), np.int64(3), np.int64(2)
    model = Sequential([Conv2D(filters, size, strides=np.int64(1), input_shape=(5, 5, 1)),
                        MaxPooling2D(pool_size=size), Flatten(),
                        Dense(classes, activation="softmax")])
    model.compile(optimizer=SGD(lr=np.float32(0.05), momentum=np.int64(0), decay=np.float32(1e-4)),
                  loss="categorical_crossentropy")
    assert model.output_shape == (None, 4)
    assert model.layers[0].params["kernel"].shape == (2, 2, 1, 3)
    model.fit(np.zeros((2, 5, 5, 1)), to_categorical([0, 3], 4), batch_size=np.int64(2),
              epochs=1, verbose=0)


def test_gradient_check_in_float32_is_refused():
    model = cnn()
    with pytest.raises(ValueError, match=r"check_model: gradient checks need float64, but the "
                                         r"default float type is float32.*set_floatx\('float64'\)"):
        check_model(model, np.zeros((2, 8, 8, 3)), to_categorical([0, 1], 4))


def test_gradient_check_of_a_float64_model_under_float32_is_refused():
    minicnn.set_floatx("float64")
    model = cnn()
    model.build((None, 8, 8, 3))
    minicnn.set_floatx("float32")  # the batches would be cast to float32
    with pytest.raises(ValueError, match=r"check_model: .*default float type is float32"):
        check_model(model, np.zeros((2, 8, 8, 3)), to_categorical([0, 1], 4))
    minicnn.set_floatx("float64")
    with pytest.raises(ValueError, match=r"check_model: compute_gradients: x has 2 samples but y has 1"):
        check_model(model, np.zeros((2, 8, 8, 3)), to_categorical([0], 4))


# ---------------------------------------------------------------- weight files
def test_weights_file_with_other_layer_count(tmp_path):
    cnn().save_weights(tmp_path / "w.npz")
    other = Sequential([Flatten(input_shape=(8, 8, 3)), Dense(4, activation="softmax")])
    with pytest.raises(ValueError, match=r"w\.npz holds 4 layers, the model has 2"):
        other.load_weights(tmp_path / "w.npz")


def test_weights_file_with_other_layer_config(tmp_path):
    cnn(classes=4).save_weights(tmp_path / "w.npz")
    with pytest.raises(ValueError, match=r"layer 'dense_1' is Dense \{'units': 10.*holds Dense \{'units': 4"):
        cnn(classes=10).load_weights(tmp_path / "w.npz")


def test_weights_file_with_other_input_shape(tmp_path):
    cnn(input_shape=(8, 8, 3)).save_weights(tmp_path / "w.npz")
    with pytest.raises(ValueError, match=r"Conv2D 'conv2d_1' kernel expects shape \(3, 3, 1, 4\), .*holds shape \(3, 3, 3, 4\)"):
        cnn(input_shape=(8, 8, 1)).load_weights(tmp_path / "w.npz")


def test_weights_file_that_is_not_minicnn(tmp_path):
    np.savez(tmp_path / "plain.npz", a=np.zeros(3))
    with pytest.raises(ValueError, match=r"plain\.npz has no minicnn metadata"):
        cnn().load_weights(tmp_path / "plain.npz")
    (tmp_path / "junk.npz").write_bytes(b"this is not a zip file")
    with pytest.raises(ValueError, match=r"junk\.npz is not a readable minicnn weights file"):
        cnn().load_weights(tmp_path / "junk.npz")
    with pytest.raises(FileNotFoundError):
        cnn().load_weights(tmp_path / "missing.npz")


def test_save_weights_of_unbuilt_model(tmp_path):
    with pytest.raises(RuntimeError, match=r"save_weights: the model is not built yet"):
        Sequential([Dense(2)]).save_weights(tmp_path / "w.npz")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- training inputs people get wrong
def test_unscaled_integer_images_warn_but_train(backend):
    model = cnn()
    x = np.random.default_rng(0).integers(0, 256, (8, 8, 8, 3), dtype=np.uint8)
    with pytest.warns(UserWarning, match=r"integers up to \d+.*x.astype\('float32'\) / 255"):
        model.fit(x, to_categorical(np.arange(8) % 4, 4), batch_size=4, verbose=0)


def test_batch_size_larger_than_the_data_warns(backend):
    model = cnn()
    with pytest.warns(UserWarning, match="batch_size 64 is larger than the 8 samples"):
        model.fit(np.zeros((8, 8, 8, 3)), to_categorical(np.arange(8) % 4, 4), batch_size=64,
                  verbose=0)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_corrupt_weights_file(tmp_path, damage):
    path = tmp_path / "w.npz"
    model = cnn()
    model.save_weights(path)
    raw = path.read_bytes()
    path.write_bytes({"truncated": raw[: len(raw) // 2], "garbage": b"\x00garbage" * 10,
                      "empty": b""}[damage])
    with pytest.raises(ValueError, match=rf"{path.name} is not a readable minicnn weights file"):
        cnn().load_weights(path)


def test_unwritable_folder_names_the_file_and_leaves_nothing(tmp_path, monkeypatch):
    import tempfile as tempfile_module

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile_module, "mkstemp", refuse)
    target = tmp_path / "weights.npz"
    with pytest.raises(PermissionError, match=rf"cannot write {target}: Permission denied"):
        cnn().save_weights(target)
    assert list(tmp_path.iterdir()) == []


def test_example_output_folder_that_cannot_be_made(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, str(root / "examples" / "cifar10.py"), "--data",
                             str(tmp_path), "--out", str(blocker / "run")],
                            capture_output=True, text=True, timeout=120,
                            env={**__import__("os").environ, "PYTHONPATH": str(root)})
    assert result.returncode != 0
    assert f"cannot write to the output folder {blocker / 'run'}" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("labels, pattern", [([0, 1, 10], r"must lie in \[0, 9\].* 0 to 10"),
                                             ([[0, 1]], r"shape \(N,\) or \(N, 1\)"),
                                             ([0.5, 1], "whole numbers")])
def test_to_categorical_bad_labels(labels, pattern):
    with pytest.raises(ValueError, match=pattern):
        to_categorical(labels, 10)


def test_fused_loss_refuses_targets_of_another_shape(backend):
    """On a GPU the fused kernel indexes the targets by hand: a wrong shape must stop first."""
    from minicnn.losses import SoftmaxCrossEntropy
    logits = minicnn.to_device(np.zeros((4, 10), dtype=np.float32))
    labels = minicnn.to_device(np.zeros(4, dtype=np.float32))
    with pytest.raises(ValueError, match=r"softmax_crossentropy: targets of shape \(4,\) do not "
                                         r"match the logits' \(4, 10\)"):
        SoftmaxCrossEntropy().forward(logits, labels)
