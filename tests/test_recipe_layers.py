"""What the fast CIFAR recipe (airbench) needs of the layers and initializers:
Rescaling; the Dirac and patch-whitening kernels; per-weight set_trainable that
the optimizers respect; and BatchNormalization as the recipe configures it
(scale=False, epsilon=1e-12, momentum=0.6). Forward results against loops
written here, gradients by float64 central differences."""
from __future__ import annotations

import json

import numpy as np
import pytest

import minicnn
from minicnn import initializers
from minicnn import backend as mbackend
from minicnn.gradcheck import DEFAULT_TOLERANCE, check_layer
from minicnn.initializers import Dirac, patch_whitening
from minicnn.layers import BatchNormalization, Conv2D, Dense, Flatten, Rescaling
from minicnn.models import Sequential
from minicnn.optimizers import SGD

from conftest import assert_close


@pytest.fixture
def f64():
    minicnn.set_floatx("float64")
    yield
    minicnn.set_floatx("float32")


# ---------------------------------------------------------------- Rescaling
def test_rescaling_forward_and_backward_match_loops(backend):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4, 5)).astype(np.float32)
    layer = Rescaling(1 / 9, offset=0.25)
    y = mbackend.to_host(layer.run_forward(mbackend.to_device(x), training=True))
    assert y.dtype == np.float32
    expected = np.array([[[v / 9 + 0.25 for v in row] for row in plane] for plane in x])
    assert_close(y, expected)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    dx = mbackend.to_host(layer.run_backward(mbackend.to_device(dy)))
    assert_close(dx, np.array([[[v / 9 for v in row] for row in plane] for plane in dy]))


def test_rescaling_gradients(f64):
    for seed in range(5):
        rng = np.random.default_rng(seed)
        layer = Rescaling(rng.uniform(-3, 3), offset=rng.uniform(-1, 1))
        result = check_layer(layer, rng.standard_normal((2, 3, 4)), seed=seed)
        assert result.passed and result.max_error < DEFAULT_TOLERANCE / 10, result
        wrong = Rescaling(2.0)
        wrong._backward = lambda grad: grad * 2.02
        assert check_layer(wrong, rng.standard_normal((2, 3)), seed=seed).verdict == "FAILED"


def test_rescaling_config_and_errors():
    layer = Rescaling(0.5, 1.0, name="scale")
    again = Rescaling.from_config(json.loads(json.dumps(layer.get_config())))
    assert again.scale == 0.5 and again.offset == 1.0 and again.name == "scale"
    assert layer.count_params() == 0
    for bad in (float("nan"), "2", True, None):
        with pytest.raises(ValueError, match="Rescaling: scale must be a finite number"):
            Rescaling(bad)
    with pytest.raises(ValueError, match="Rescaling: offset"):
        Rescaling(1.0, offset=float("inf"))


# ---------------------------------------------------------------- Dirac
def test_dirac_is_pytorchs_dirac():
    rng = np.random.default_rng(0)
    for shape in [(3, 3, 4, 6), (3, 3, 6, 4), (1, 1, 2, 2), (2, 2, 3, 3)]:
        kh, kw, c_in, filters = shape
        kernel = Dirac()(shape, rng)
        expected = np.zeros(shape)
        for f in range(min(c_in, filters)):
            expected[kh // 2, kw // 2, f, f] = 1.0  # torch: weight[f, f, kh // 2, kw // 2] = 1
        np.testing.assert_array_equal(kernel, expected)


def test_dirac_passes_the_first_channels_through(backend):
    """A 'same' conv with a Dirac kernel is the identity on the first min(c_in, filters)
    channels (and zero on the others)."""
    x = np.random.default_rng(1).standard_normal((2, 5, 5, 3)).astype(np.float32)
    conv = Conv2D(5, 3, padding="same", use_bias=False, kernel_initializer="dirac")
    y = mbackend.to_host(conv.run_forward(mbackend.to_device(x)))
    assert_close(y[..., :3], x)
    assert not y[..., 3:].any()


def test_dirac_others_and_serialization():
    kernel = Dirac(others="he_uniform")((3, 3, 2, 5), np.random.default_rng(2))
    assert np.array_equal(kernel[1, 1, :, :2], np.eye(2))
    assert kernel[..., :2].sum() == 2 and np.abs(kernel[..., 2:]).min() > 0
    limit = np.sqrt(6 / (3 * 3 * 2))
    assert np.abs(kernel[..., 2:]).max() <= limit
    config = initializers.serialize(Dirac(others="he_uniform"))
    again = initializers.deserialize(json.loads(json.dumps(config)))
    assert isinstance(again, Dirac) and initializers.serialize(again) == config
    assert isinstance(initializers.get("dirac"), Dirac)
    with pytest.raises(ValueError, match="Dirac: needs a conv kernel shape"):
        Dirac()((3, 4), np.random.default_rng(0))


# ---------------------------------------------------------------- patch whitening
def naive_moments(images, kh, kw):
    """Every patch's (kh, kw, C) vector, one by one, and their mean outer product."""
    n, h, w, c = images.shape
    d = kh * kw * c
    total, count = np.zeros((d, d)), 0
    for k in range(n):
        for i in range(h - kh + 1):
            for j in range(w - kw + 1):
                p = np.array([images[k, i + a, j + b, ch] for a in range(kh)
                              for b in range(kw) for ch in range(c)], dtype=np.float64)
                total += np.outer(p, p)
                count += 1
    return total / count


@pytest.mark.parametrize("kernel_size", [2, (2, 3)])
def test_patch_whitening_against_a_naive_covariance(kernel_size):
    rng = np.random.default_rng(3)
    mixing = rng.standard_normal((3, 3))
    images = (rng.standard_normal((7, 6, 5, 3)) @ mixing + 0.3).astype(np.float32)
    kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
    eps = 5e-4
    kernel = patch_whitening(images, kernel_size, eps=eps, chunk=3)  # chunks: 3 + 3 + 1
    d = kh * kw * 3
    assert kernel.shape == (kh, kw, 3, 2 * d)
    np.testing.assert_array_equal(kernel[..., d:], -kernel[..., :d])
    moments = naive_moments(images, kh, kw)
    eigenvalues = np.linalg.eigvalsh(moments)[::-1]
    w = kernel.reshape(d, 2 * d)[:, :d]
    # each filter is an eigenvector of the patch moments, scaled by 1/sqrt(lambda + eps),
    # the largest eigenvalue first: W^T S W = diag(lambda / (lambda + eps))
    assert_close(w.T @ moments @ w, np.diag(eigenvalues / (eigenvalues + eps)), rtol=1e-9)
    assert_close(np.sum(w * w, axis=0), 1 / (eigenvalues + eps), rtol=1e-9)


def test_whitened_patches_have_identity_covariance():
    """Through a real Conv2D: the first half of the outputs, over every patch of the
    images, have (nearly) the identity as their second-moment matrix."""
    rng = np.random.default_rng(4)
    images = rng.standard_normal((20, 8, 8, 3)) @ rng.standard_normal((3, 3)) * 2
    kernel = patch_whitening(images, 2, eps=1e-8)
    conv = Conv2D(24, 2, use_bias=False)
    conv.maybe_build((None, 8, 8, 3))
    conv.params["kernel"][...] = kernel
    out = minicnn.to_host(conv.run_forward(minicnn.to_device(images.astype(np.float32))))
    first = out[..., :12].reshape(-1, 12).astype(np.float64)
    assert np.abs(first.T @ first / len(first) - np.eye(12)).max() < 1e-3


def test_patch_whitening_takes_images_from_any_backend(backend):
    images = np.random.default_rng(5).standard_normal((3, 4, 4, 2)).astype(np.float32)
    kernel = patch_whitening(minicnn.to_device(images), 2)
    assert isinstance(kernel, np.ndarray)
    np.testing.assert_array_equal(kernel, patch_whitening(images, 2))


def test_patch_whitening_errors():
    with pytest.raises(ValueError, match=r"patch_whitening: images must be \(N, H, W, C\)"):
        patch_whitening(np.zeros((4, 4, 3)), 2)
    with pytest.raises(ValueError, match="eps must be"):
        patch_whitening(np.zeros((1, 4, 4, 3)), 2, eps=0.0)


# ---------------------------------------------------------------- set_trainable
def whitening_model():
    model = Sequential([Conv2D(4, 2, input_shape=(5, 5, 1)), Flatten(), Dense(2)])
    model.compile(SGD(lr=0.1, momentum=0.9), "mse")
    return model


def test_a_frozen_kernel_stays_while_its_bias_trains():
    rng = np.random.default_rng(5)
    x, y = rng.standard_normal((6, 5, 5, 1)), rng.standard_normal((6, 2))
    model = whitening_model()
    conv = model.layers[0]
    conv.set_trainable("kernel", False)
    assert conv.trained_params() == ["bias"]
    kernel, bias = (minicnn.to_host(p).copy() for p in conv.params.values())
    model.train_on_batch(x, y)
    model.train_on_batch(x, y)
    np.testing.assert_array_equal(minicnn.to_host(conv.params["kernel"]), kernel)
    assert not np.array_equal(minicnn.to_host(conv.params["bias"]), bias)
    # summary counts: kernel 2*2*1*4 = 16 frozen
    assert sum(int(w.size) for w in conv.trainable_weights) == 4
    assert sum(int(w.size) for w in conv.non_trainable_weights) == 16
    conv.set_trainable("bias", False)  # the recipe: the bias too, after 3 epochs
    bias = minicnn.to_host(conv.params["bias"]).copy()
    model.train_on_batch(x, y)
    np.testing.assert_array_equal(minicnn.to_host(conv.params["bias"]), bias)
    conv.set_trainable("kernel", True)
    model.train_on_batch(x, y)
    assert not np.array_equal(minicnn.to_host(conv.params["kernel"]), kernel)


def test_set_trainable_errors():
    conv = Conv2D(2, 2)
    with pytest.raises(ValueError, match="build the layer first"):
        conv.set_trainable("kernel", False)
    conv.maybe_build((None, 4, 4, 1))
    with pytest.raises(ValueError, match="no weight named 'weights'"):
        conv.set_trainable("weights", False)
    with pytest.raises(TypeError, match="True or False"):
        conv.set_trainable("kernel", 0)
    norm = BatchNormalization()
    norm.maybe_build((None, 3))
    with pytest.raises(ValueError, match="'moving_mean' is not a trainable weight"):
        norm.set_trainable("moving_mean", True)
    norm.set_trainable("moving_mean", False)  # already so: accepted
    assert norm.trained_params() == ["gamma", "beta"]


# ---------------------------------------------------------------- BatchNormalization, the recipe's
def test_batchnorm_recipe_settings_match_loops(backend):
    """scale=False, center=True, epsilon=1e-12, momentum=0.6 (PyTorch's momentum 0.4):
    y = (x - mu) / sqrt(var + eps) + beta, and moving = 0.6 moving + 0.4 batch value,
    the variance unbiased (m / (m - 1 - eps))."""
    minicnn.set_floatx("float64")
    rng = np.random.default_rng(6)
    layer = BatchNormalization(scale=False, epsilon=1e-12, momentum=0.6)
    layer.maybe_build((None, 3, 3, 2))
    assert list(layer.params) == ["beta", "moving_mean", "moving_variance"]
    beta = rng.uniform(-1, 1, 2)
    layer.params["beta"][...] = mbackend.to_device(beta)
    moving_mean, moving_var = np.zeros(2), np.ones(2)
    for _ in range(2):
        x = rng.standard_normal((4, 3, 3, 2)) * 3 + 1
        y = mbackend.to_host(layer.run_forward(mbackend.to_device(x), training=True))
        flat = x.reshape(-1, 2)
        m = flat.shape[0]
        for c in range(2):
            values = list(flat[:, c])
            mu = sum(values) / m
            var = sum((v - mu) ** 2 for v in values) / m
            expected = [(v - mu) / np.sqrt(var + 1e-12) + beta[c] for v in values]
            assert_close(y.reshape(-1, 2)[:, c], expected)
            moving_mean[c] = 0.6 * moving_mean[c] + 0.4 * mu
            moving_var[c] = 0.6 * moving_var[c] + 0.4 * var * m / (m - 1 - 1e-12)
        assert_close(mbackend.to_host(layer.params["moving_mean"]), moving_mean)
        assert_close(mbackend.to_host(layer.params["moving_variance"]), moving_var)
    minicnn.set_floatx("float32")


def test_batchnorm_recipe_settings_gradients(f64):
    for seed in range(4):
        rng = np.random.default_rng(seed)
        layer = BatchNormalization(scale=False, epsilon=1e-12, momentum=0.6)
        layer.maybe_build((None, 3, 3, 4))
        layer.params["beta"][...] = rng.uniform(-1, 1, 4)
        result = check_layer(layer, rng.standard_normal((3, 3, 3, 4)) * 2 + 1, seed=seed)
        assert result.passed, result
