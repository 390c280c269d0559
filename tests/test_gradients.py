"""Backward passes against central differences, in float64.

Every layer is checked over several configurations through
``minicnn.gradcheck.check_layer``; the losses through ``check_loss``; whole
models through ``check_model``, on every backend. The inputs are distinct,
well-spaced values (see conftest.distinct) so that no finite difference
straddles a ReLU kink or a max-pool tie. Finally, deliberately wrong backward
passes must be caught, by a wide margin. tests/test_gradcheck.py tests the
checker itself over many random seeds.
"""
from __future__ import annotations

import numpy as np
import pytest

import minicnn
from minicnn import losses
from minicnn.gradcheck import DEFAULT_TOLERANCE, check_layer, check_loss, check_model
from minicnn.layers import Activation, Conv2D, Dense, Dropout, Flatten, MaxPooling2D
from minicnn.models import Sequential
from minicnn.optimizers import SGD
from minicnn.utils import to_categorical

from conftest import distinct

ACTIVATIONS = ["relu", "sigmoid", "tanh", "softmax", "linear"]


@pytest.fixture
def f64():
    """float64 for everything built inside the test (set before any layer exists)."""
    minicnn.set_floatx("float64")
    yield
    minicnn.set_floatx("float32")


def assert_passes(layer, x, **kwargs):
    result = check_layer(layer, x, **kwargs)
    assert result.passed, str(result)
    # every parameter and the input were really compared
    expected = set(layer.params) | ({"x"} if layer.input_grad else set())
    assert set(result.errors) == expected, result.errors
    return result


# ---------------------------------------------------------------- Conv2D
CONV_CONFIGS = {
    "3x3-s1-valid": dict(shape=(2, 5, 5, 3), filters=4, kernel_size=(3, 3)),
    "3x3-s1-same": dict(shape=(2, 5, 6, 3), filters=3, kernel_size=(3, 3), padding="same"),
    "3x3-s2-valid-odd": dict(shape=(2, 7, 7, 2), filters=3, kernel_size=(3, 3), strides=(2, 2)),
    "3x3-s2-same-even": dict(shape=(2, 6, 7, 2), filters=3, kernel_size=(3, 3), strides=2,
                             padding="same"),
    "2x3-s1x2-valid": dict(shape=(2, 5, 7, 2), filters=3, kernel_size=(2, 3), strides=(1, 2)),
    "2x3-s2x1-same": dict(shape=(3, 5, 5, 2), filters=2, kernel_size=(2, 3), strides=(2, 1),
                          padding="same"),
    "no-bias": dict(shape=(2, 5, 5, 2), filters=3, kernel_size=3, use_bias=False),
    "1x1": dict(shape=(2, 3, 4, 3), filters=2, kernel_size=1),
    "whole-input": dict(shape=(2, 3, 3, 2), filters=2, kernel_size=3),
    "stride-larger-than-kernel": dict(shape=(2, 7, 8, 2), filters=2, kernel_size=2, strides=3),
    "kernel-larger-than-input-same": dict(shape=(2, 2, 3, 2), filters=2, kernel_size=(3, 4),
                                          padding="same"),
}


@pytest.mark.parametrize("config", list(CONV_CONFIGS), ids=list(CONV_CONFIGS))
def test_conv2d_gradients(backend, f64, config):
    kwargs = dict(CONV_CONFIGS[config])
    shape = kwargs.pop("shape")
    layer = Conv2D(**kwargs)
    assert_passes(layer, distinct(shape))


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_conv2d_with_activation_gradients(backend, f64, activation):
    layer = Conv2D(3, (2, 3), strides=(1, 2), padding="same", activation=activation,
                   bias_initializer=lambda shape, rng: rng.uniform(-0.5, 0.5, shape))
    assert_passes(layer, distinct((2, 5, 6, 2)))


# ---------------------------------------------------------------- Dense
@pytest.mark.parametrize("activation", ACTIVATIONS + [None])
@pytest.mark.parametrize("use_bias", [True, False])
def test_dense_gradients(backend, f64, activation, use_bias):
    layer = Dense(4, activation=activation, use_bias=use_bias)
    assert_passes(layer, distinct((3, 6)) * 2)


def test_dense_wide_batch_gradients(backend, f64):
    assert_passes(Dense(7, activation="tanh"), distinct((9, 2)))


# ---------------------------------------------------------------- Activation layer
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("shape", [(3, 5), (2, 3, 4, 3)], ids=["2d", "4d"])
def test_activation_layer_gradients(backend, f64, activation, shape):
    assert_passes(Activation(activation), 3 * distinct(shape))


# ---------------------------------------------------------------- MaxPooling2D
POOL_CONFIGS = {
    "5x5-pool2": dict(shape=(2, 5, 5, 2), pool_size=2),
    "7x6-pool3-stride2": dict(shape=(2, 7, 6, 2), pool_size=3, strides=2),
    "5x5-pool2-same": dict(shape=(2, 5, 5, 2), pool_size=2, padding="same"),
    "7x6-pool3-stride2-same": dict(shape=(2, 7, 6, 3), pool_size=3, strides=2, padding="same"),
    "overlapping-3-stride1": dict(shape=(2, 5, 5, 2), pool_size=3, strides=1),
    "non-square-2x3-stride1x2": dict(shape=(2, 6, 7, 2), pool_size=(2, 3), strides=(1, 2)),
    "13x13-pool2": dict(shape=(1, 13, 13, 2), pool_size=2),
    "stride-larger-than-pool": dict(shape=(2, 8, 7, 2), pool_size=2, strides=3),
}


@pytest.mark.parametrize("config", list(POOL_CONFIGS), ids=list(POOL_CONFIGS))
def test_maxpool_gradients(backend, f64, config):
    kwargs = dict(POOL_CONFIGS[config])
    shape = kwargs.pop("shape")
    assert_passes(MaxPooling2D(**kwargs), distinct(shape))


# ---------------------------------------------------------------- Dropout, Flatten
@pytest.mark.parametrize("rate", [0.3, 0.5])
def test_dropout_training_gradients(backend, f64, rate):
    layer = Dropout(rate)
    x = distinct((3, 4, 4, 2))
    assert_passes(layer, x, training=True)
    # the check is only meaningful if the mask really dropped something
    y = minicnn.to_host(layer.forward(minicnn.to_device(x), training=True))
    assert 0 < (y == 0).sum() < y.size


def test_dropout_inference_gradients(backend, f64):
    assert_passes(Dropout(0.5), distinct((3, 4, 4, 2)), training=False)


def test_flatten_gradients(backend, f64):
    assert_passes(Flatten(), distinct((2, 3, 4, 2)))


def test_readme_example_passes(f64):
    x = np.random.default_rng(0).standard_normal((2, 7, 6, 3))
    result = check_layer(Conv2D(4, (2, 3), strides=2, padding="same"), x)
    assert result.passed, str(result)
    assert str(result).startswith("gradient check passed")


def test_check_layer_refuses_float32():
    with pytest.raises(ValueError, match=r"check_layer\(Dense\): gradient checks need float64 "
                                         r"arrays, but x is float32"):
        check_layer(Dense(2), distinct((2, 3)).astype(np.float32))
    minicnn.set_floatx("float32")
    layer = Dense(2)
    layer.build((3,))  # float32 parameters, float64 x
    with pytest.raises(ValueError, match=r"but Dense kernel is float32"):
        check_layer(layer, distinct((2, 3)))


# ---------------------------------------------------------------- losses
def assert_loss_passes(loss, z, target):
    result = check_loss(loss, z, target)
    assert result.passed, str(result)
    assert result.max_error < DEFAULT_TOLERANCE / 10, str(result)


def test_fused_softmax_crossentropy_one_hot_gradient(backend, f64):
    z = 2 * distinct((5, 4))
    t = to_categorical([0, 3, 1, 1, 2], 4, dtype="float64")
    assert_loss_passes(losses.SoftmaxCrossEntropy(), z, t)


def test_fused_softmax_crossentropy_sparse_gradient(backend, f64):
    z = 2 * distinct((5, 4))
    assert_loss_passes(losses.SoftmaxCrossEntropy(sparse=True), z, np.array([0, 3, 1, 1, 2]))


def test_fused_softmax_crossentropy_soft_targets_gradient(backend, f64):
    z = 2 * distinct((3, 4))
    t = np.array([[0.1, 0.2, 0.3, 0.4], [0.5, 0.5, 0, 0], [0, 0, 0, 1.0]])
    assert_loss_passes(losses.SoftmaxCrossEntropy(), z, t)


def _probabilities(shape):
    z = 2 * distinct(shape)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_categorical_crossentropy_on_probabilities_gradient(backend, f64):
    p = _probabilities((5, 4))
    t = to_categorical([2, 0, 3, 1, 1], 4, dtype="float64")
    assert_loss_passes(losses.CategoricalCrossentropy(), p, t)
    assert_loss_passes(losses.SparseCategoricalCrossentropy(), p, np.array([2, 0, 3, 1, 1]))


def test_mean_squared_error_gradient(backend, f64):
    assert_loss_passes(losses.MeanSquaredError(), distinct((4, 3)), distinct((4, 3), np.random.default_rng(9)))


# ---------------------------------------------------------------- whole models
def small_cnn(head_activation_layer=False, dropout=0.3):
    model = Sequential()
    model.add(Conv2D(3, (3, 3), padding="same", activation="relu", input_shape=(6, 6, 2)))
    model.add(MaxPooling2D((2, 2)))
    model.add(Dropout(dropout))
    model.add(Conv2D(4, (2, 2), activation="tanh"))
    model.add(Flatten())
    if head_activation_layer:
        model.add(Dense(3))
        model.add(Activation("softmax"))
    else:
        model.add(Dense(3, activation="softmax"))
    return model


def _xy(n=4):
    x = distinct((n, 6, 6, 2))
    labels = np.arange(n) % 3
    return x, labels


@pytest.mark.parametrize("loss", ["categorical_crossentropy", "sparse_categorical_crossentropy"])
def test_model_end_to_end_gradients(backend, f64, loss):
    model = small_cnn()
    model.compile(optimizer=SGD(lr=0.1), loss=loss)
    assert isinstance(model.loss_function(), minicnn.losses.SoftmaxCrossEntropy)
    x, labels = _xy()
    y = labels if loss.startswith("sparse") else to_categorical(labels, 3)
    result = check_model(model, x, y, max_entries=25)
    assert result.passed, str(result)
    assert len(result.errors) == 6  # 3 weighted layers x (kernel, bias)


def test_model_ending_in_activation_softmax_gradients(backend, f64):
    model = small_cnn(head_activation_layer=True)
    model.compile(optimizer="sgd", loss="categorical_crossentropy")
    assert isinstance(model.loss_function(), minicnn.losses.SoftmaxCrossEntropy)
    x, labels = _xy()
    result = check_model(model, x, to_categorical(labels, 3), max_entries=25)
    assert result.passed, str(result)


@pytest.mark.parametrize("loss", ["mean_squared_error", "categorical_crossentropy"])
def test_unfused_model_gradients(backend, f64, loss):
    model = Sequential([Conv2D(2, 3, activation="sigmoid", input_shape=(5, 5, 1)), Flatten(),
                        Dense(3, activation="sigmoid")])
    model.compile(optimizer="sgd", loss=loss)
    assert not isinstance(model.loss_function(), minicnn.losses.SoftmaxCrossEntropy)
    x = distinct((3, 5, 5, 1))
    result = check_model(model, x, to_categorical([0, 1, 2], 3), max_entries=None)
    assert result.passed, str(result)


# ---------------------------------------------------------------- the checker must bite
# Each overrides the public backward (no activation, so dy reaches the layer as is).
class BiasNotSummedDense(Dense):
    """Bias gradient of the first sample only: the sum over the batch is missing."""

    def backward(self, grad, **kwargs):
        dx = super().backward(grad, **kwargs)
        self.grads["bias"] = grad[0]
        return dx


class ScaledDxDense(Dense):
    """dx scaled by 1.01: a 1% error, the kind a hand-derived formula makes."""

    def backward(self, grad, **kwargs):
        return super().backward(grad, **kwargs) * 1.01


class UntransposedDense(Dense):
    """dx = dy @ W instead of dy @ W^T (shapes agree when units == inputs)."""

    def backward(self, grad, **kwargs):
        super().backward(grad, **kwargs)
        return grad @ self.params["kernel"]


class FlippedKernelConv2D(Conv2D):
    """The kernel gradient flipped in space: the classic convolution/correlation mix-up."""

    def backward(self, grad, **kwargs):
        dx = super().backward(grad, **kwargs)
        self.grads["kernel"] = self.grads["kernel"][::-1, ::-1].copy()
        return dx


@pytest.mark.parametrize("layer_factory,x_shape,bad", [
    (lambda: BiasNotSummedDense(4), (3, 5), "bias"),
    (lambda: ScaledDxDense(4), (3, 5), "x"),
    (lambda: UntransposedDense(5), (3, 5), "x"),
    (lambda: FlippedKernelConv2D(2, (2, 3)), (2, 4, 5, 2), "kernel"),
], ids=["bias-not-summed", "dx-scaled-1.01", "untransposed", "flipped-kernel"])
def test_wrong_backward_is_caught(backend, f64, layer_factory, x_shape, bad):
    layer = layer_factory()
    result = check_layer(layer, distinct(x_shape))
    assert result.passed is False, str(result)
    assert result.max_error > 100 * DEFAULT_TOLERANCE, str(result)  # not a near miss
    assert result.where.startswith(bad), str(result)
    assert "FAILED" in str(result)
    # the tensors that are right still pass: the checker points at the culprit
    for name, error in result.errors.items():
        if name != bad:
            assert error <= DEFAULT_TOLERANCE, str(result)


def test_correct_backward_is_far_below_tolerance(backend, f64):
    result = check_layer(Dense(4), distinct((3, 5)))
    assert result.max_error < DEFAULT_TOLERANCE / 10, str(result)


def test_wrong_backward_is_caught_in_a_model(backend, f64):
    model = Sequential([Flatten(input_shape=(3, 3, 1)), BiasNotSummedDense(4, activation="tanh", name="hidden"),
                        Dense(3, activation="softmax")])
    model.compile(optimizer="sgd", loss="categorical_crossentropy")
    result = check_model(model, distinct((4, 3, 3, 1)), to_categorical([0, 1, 2, 0], 3))
    assert result.passed is False, str(result)
    assert result.where.startswith("hidden/bias"), str(result)
    assert result.max_error > 100 * DEFAULT_TOLERANCE, str(result)
