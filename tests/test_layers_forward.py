"""Forward passes against naive loop references written here, not in minicnn.

The references spell out Keras's definitions with plain Python loops over
n, oy, ox, f, i, j, c, including Keras's 'same' padding (the odd pixel of
padding goes after) and its floor behaviour for windows that do not divide
the input.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import minicnn
from minicnn import activations
from minicnn.layers import Activation, Conv2D, Dense, Dropout, Flatten, MaxPooling2D
from minicnn.ops import conv as conv_ops
from minicnn.ops import windows as win

from conftest import assert_close, distinct

HYPOTHESIS = settings(max_examples=30, deadline=None,
                      suppress_health_check=[HealthCheck.function_scoped_fixture])


# ---------------------------------------------------------------- references
def keras_out_len(size, window, stride, padding):
    if padding == "valid":
        return (size - window) // stride + 1
    return -(-size // stride)  # ceil


def keras_pads(size, window, stride, padding):
    if padding == "valid":
        return 0, 0
    out = keras_out_len(size, window, stride, padding)
    total = max((out - 1) * stride + window - size, 0)
    return total // 2, total - total // 2


def conv_reference(x, kernel, bias, strides, padding):
    """y[n, oy, ox, f] = b[f] + sum_{i, j, c} xpad[n, oy*sh + i, ox*sw + j, c] * W[i, j, c, f]."""
    n_, h, w, c_in = x.shape
    kh, kw, _, filters = kernel.shape
    sh, sw = strides
    oh, ow = keras_out_len(h, kh, sh, padding), keras_out_len(w, kw, sw, padding)
    top, _ = keras_pads(h, kh, sh, padding)
    left, _ = keras_pads(w, kw, sw, padding)
    y = np.zeros((n_, oh, ow, filters))
    for n in range(n_):
        for oy in range(oh):
            for ox in range(ow):
                for f in range(filters):
                    total = 0.0 if bias is None else float(bias[f])
                    for i in range(kh):
                        for j in range(kw):
                            r, s = oy * sh + i - top, ox * sw + j - left
                            if not (0 <= r < h and 0 <= s < w):
                                continue  # a zero of the padding
                            for c in range(c_in):
                                total += float(x[n, r, s, c]) * float(kernel[i, j, c, f])
                    y[n, oy, ox, f] = total
    return y


def pool_reference(x, pool, strides, padding):
    """y[n, oy, ox, c] = max over the window's pixels that lie inside the input."""
    n_, h, w, c_in = x.shape
    (ph, pw), (sh, sw) = pool, strides
    oh, ow = keras_out_len(h, ph, sh, padding), keras_out_len(w, pw, sw, padding)
    top, _ = keras_pads(h, ph, sh, padding)
    left, _ = keras_pads(w, pw, sw, padding)
    y = np.zeros((n_, oh, ow, c_in))
    for n in range(n_):
        for oy in range(oh):
            for ox in range(ow):
                for c in range(c_in):
                    best = -math.inf
                    for i in range(ph):
                        for j in range(pw):
                            r, s = oy * sh + i - top, ox * sw + j - left
                            if 0 <= r < h and 0 <= s < w:
                                best = max(best, float(x[n, r, s, c]))
                    y[n, oy, ox, c] = best
    return y


def dense_reference(x, kernel, bias):
    n_, d_in = x.shape
    units = kernel.shape[1]
    y = np.zeros((n_, units))
    for n in range(n_):
        for u in range(units):
            total = 0.0 if bias is None else float(bias[u])
            for k in range(d_in):
                total += float(x[n, k]) * float(kernel[k, u])
            y[n, u] = total
    return y


def softmax_reference(z):
    out = np.zeros(z.shape)
    for n in range(z.shape[0]):
        m = max(float(v) for v in z[n])
        exps = [math.exp(float(v) - m) for v in z[n]]
        s = sum(exps)
        for k, e in enumerate(exps):
            out[n, k] = e / s
    return out


def run(layer, x, training=False):
    return minicnn.to_host(layer.forward(minicnn.to_device(x, dtype=minicnn.floatx()), training))


def set_params(layer, input_shape, **values):
    layer.build((None, *input_shape))
    for name, value in values.items():
        assert layer.params[name].shape == value.shape, (name, layer.params[name].shape)
        layer.params[name][...] = minicnn.to_device(value, dtype=layer.params[name].dtype)


# ---------------------------------------------------------------- Conv2D
CONV_CASES = [
    # (H, W, C, filters, kernel, strides, padding, use_bias)
    (5, 5, 1, 1, (3, 3), (1, 1), "valid", True),
    (6, 7, 3, 4, (3, 3), (1, 1), "valid", True),
    (6, 7, 3, 4, (3, 3), (1, 1), "same", True),
    (7, 7, 2, 3, (3, 3), (2, 2), "valid", True),
    (7, 6, 2, 3, (3, 3), (2, 2), "same", True),
    (6, 6, 2, 3, (2, 2), (2, 2), "same", False),
    (5, 7, 2, 3, (2, 3), (1, 2), "valid", True),
    (5, 7, 2, 3, (2, 3), (2, 1), "same", True),
    (8, 5, 3, 2, (1, 1), (3, 2), "same", False),
    (4, 4, 2, 2, (4, 4), (1, 1), "valid", True),
]


@pytest.mark.parametrize("h,w,c,filters,kernel,strides,padding,use_bias", CONV_CASES)
def test_conv2d_matches_naive_loops(backend, h, w, c, filters, kernel, strides, padding, use_bias):
    rng = np.random.default_rng(h * 100 + w)
    x = rng.standard_normal((2, h, w, c))
    kernel_value = rng.standard_normal((*kernel, c, filters))
    bias_value = rng.standard_normal(filters) if use_bias else None
    layer = Conv2D(filters, kernel, strides=strides, padding=padding, use_bias=use_bias)
    values = {"kernel": kernel_value}
    if use_bias:
        values["bias"] = bias_value
    set_params(layer, (h, w, c), **values)
    assert sorted(layer.params) == (["bias", "kernel"] if use_bias else ["kernel"])
    y = run(layer, x)
    expected = conv_reference(x, kernel_value, bias_value, strides, padding)
    assert y.shape == expected.shape
    assert y.shape[1:] == layer.output_shape[1:]
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("use_bias", [True, False])
def test_conv2d_inference_blocks_match_the_training_forward(backend, use_bias, monkeypatch):
    # Inference on the host runs at most BLOCK_ROWS output pixels' worth of images at a
    # time (here 8 images of 6x4) through a small col; 37 images are full blocks and a
    # short one, and must give what one big training col gives.
    monkeypatch.setattr(conv_ops, "BLOCK_ROWS", 8 * 6 * 4)
    monkeypatch.setattr(conv_ops, "COL_BLOCK_BYTES", 1 << 62)
    n = 37
    x = np.random.default_rng(7).standard_normal((n, 6, 7, 3))
    layer = Conv2D(4, 3, padding="same", strides=(1, 2), activation="relu", use_bias=use_bias)
    layer.build((None, 6, 7, 3))
    if use_bias:
        layer.params["bias"][...] = minicnn.to_device(np.linspace(-1, 1, 4), dtype="float32")
    inference, training = run(layer, x), run(layer, x, training=True)
    assert inference.shape == training.shape == (n, 6, 4, 4)
    # other products (8 images against 37): equal up to rounding
    assert_close(inference, training)
    assert_close(run(layer, x[-3:]), training[-3:])


def test_conv2d_same_padding_puts_the_odd_pixel_after(backend):
    # 2x2 input, 2x2 kernel, 'same': one row/column of zeros after, none before.
    x = np.array([[1.0, 2.0], [3.0, 4.0]]).reshape(1, 2, 2, 1)
    w = np.array([[1.0, 10.0], [100.0, 1000.0]]).reshape(2, 2, 1, 1)
    layer = Conv2D(1, (2, 2), padding="same", use_bias=False)
    set_params(layer, (2, 2, 1), kernel=w)
    y = run(layer, x)[0, :, :, 0]
    np.testing.assert_allclose(y, [[1 + 20 + 300 + 4000, 2 + 400], [3 + 40, 4]])


def test_conv2d_activation_is_applied_after_the_bias(backend):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 5, 5, 2))
    k, b = rng.standard_normal((3, 3, 2, 3)), rng.standard_normal(3)
    for name, f in [("relu", lambda z: np.maximum(z, 0)), ("tanh", np.tanh),
                    ("sigmoid", lambda z: 1 / (1 + np.exp(-z)))]:
        layer = Conv2D(3, 3, activation=name)
        set_params(layer, (5, 5, 2), kernel=k, bias=b)
        np.testing.assert_allclose(run(layer, x), f(conv_reference(x, k, b, (1, 1), "valid")),
                                   rtol=1e-4, atol=1e-5)


def test_conv2d_kernel_and_bias_shapes_are_keras_layouts():
    layer = Conv2D(5, (2, 3))
    layer.build((None, 9, 8, 4))
    assert layer.params["kernel"].shape == (2, 3, 4, 5)
    assert layer.params["bias"].shape == (5,)
    assert layer.count_params() == 2 * 3 * 4 * 5 + 5
    assert np.all(minicnn.to_host(layer.params["bias"]) == 0)
    limit = math.sqrt(6 / (2 * 3 * 4 + 2 * 3 * 5))  # glorot_uniform, Keras's fans
    kernel = minicnn.to_host(layer.params["kernel"])
    assert np.abs(kernel).max() <= limit
    assert np.abs(kernel).max() > 0.5 * limit


def test_he_normal_has_variance_two_over_fan_in_and_no_tails():
    from minicnn import initializers
    shape = (3, 3, 64, 128)  # fan_in 576: std sqrt(2/576) = 0.0589
    w = initializers.get("he_normal")(shape, np.random.default_rng(0))
    assert w.shape == shape
    assert abs(w.var() / (2 / 576) - 1) < 0.02  # 73,728 draws: about 0.5% noise
    raw_std = math.sqrt(2 / 576) / 0.87962566103423978  # the std before truncation
    assert np.abs(w).max() <= 2 * raw_std  # truncated at two (untruncated) stds
    assert np.abs(w).max() > 1.9 * raw_std
    assert abs(w.mean()) < 0.02 * raw_std  # about 5 standard errors


# ---------------------------------------------------------------- MaxPooling2D
POOL_CASES = [
    # (H, W, C, pool, strides, padding, expected output H, W)
    (4, 4, 2, (2, 2), None, "valid", (2, 2)),
    (5, 5, 2, (2, 2), None, "valid", (2, 2)),       # floor: the last row/col is dropped
    (13, 13, 3, (2, 2), None, "valid", (6, 6)),
    (7, 6, 2, (3, 3), (2, 2), "valid", (3, 2)),
    (5, 5, 2, (2, 2), None, "same", (3, 3)),
    (7, 6, 2, (3, 3), (2, 2), "same", (4, 3)),
    (6, 6, 1, (3, 3), (1, 1), "valid", (4, 4)),     # overlapping windows
    (5, 7, 2, (2, 3), (1, 2), "valid", (4, 3)),     # non-square pool and strides
    (5, 7, 2, (3, 2), (2, 1), "same", (3, 7)),
]


@pytest.mark.parametrize("h,w,c,pool,strides,padding,out_hw", POOL_CASES)
def test_maxpool_matches_naive_loops(backend, h, w, c, pool, strides, padding, out_hw):
    x = distinct((2, h, w, c), np.random.default_rng(h * w))
    layer = MaxPooling2D(pool, strides=strides, padding=padding)
    y = run(layer, x)
    expected = pool_reference(x, pool, strides or pool, padding)
    assert y.shape == (2, *out_hw, c) == expected.shape
    # exact on any machine: a max picks one of its inputs, no arithmetic rounds
    np.testing.assert_array_equal(y, expected.astype(np.float32))


def test_maxpool_negative_inputs_and_same_padding_never_pick_the_padding(backend):
    x = -1.0 - distinct((1, 5, 5, 1)) ** 2  # all values < -1: a zero pad would win
    y = run(MaxPooling2D(2, padding="same"), x)
    np.testing.assert_array_equal(y, pool_reference(x, (2, 2), (2, 2), "same").astype(np.float32))
    assert y.max() < -1


@pytest.mark.parametrize("h,w,strides,padding", [
    (12, 12, None, "valid"),      # one window over the whole map (a global max pool)
    (13, 14, (1, 1), "valid"),    # overlapping 12x12 windows
    (12, 12, (5, 5), "same"),     # padded windows
], ids=["global", "overlapping", "same"])
def test_maxpool_window_with_more_than_127_offsets(backend, h, w, strides, padding):
    # a 12x12 pool has 144 window offsets: more than an int8 offset index can count
    x = distinct((2, h, w, 2))
    layer = MaxPooling2D((12, 12), strides=strides, padding=padding)
    y = run(layer, x, training=True)
    expected = pool_reference(x, (12, 12), strides or (12, 12), padding)
    np.testing.assert_array_equal(y, expected.astype(np.float32))
    # and backward sends each window's gradient to its maximum
    dy = np.ones(y.shape, dtype=np.float32)
    dx = minicnn.to_host(layer.backward(minicnn.to_device(dy)))
    assert dx.sum() == dy.sum()  # sums of ones: exact in any order
    assert set(np.flatnonzero(dx)) <= set(np.flatnonzero(np.isin(x, expected)))


def _tie_gradient(pool, strides, x):
    layer = MaxPooling2D(pool, strides=strides)
    y = layer.forward(minicnn.to_device(x.astype(np.float32)), training=True)
    dy = minicnn.to_device(np.ones(y.shape, np.float32))
    return minicnn.to_host(layer.backward(dy))[0, :, :, 0]


def test_maxpool_backward_routes_to_one_winner_on_ties(backend):
    # every window sends its whole gradient to exactly one input: the first maximum
    # in row-major window order, for tiled (stride == pool) and overlapping windows
    expected = np.zeros((4, 4))
    expected[::2, ::2] = 1
    np.testing.assert_array_equal(_tie_gradient(2, None, np.ones((1, 4, 4, 1))), expected)
    expected = np.zeros((4, 4))
    expected[:3, :3] = 1
    np.testing.assert_array_equal(_tie_gradient(2, 1, np.ones((1, 4, 4, 1))), expected)
    # partial ties: [[1, 3], [3, 2]] -> the 3 at (0, 1) wins
    x = np.array([[1, 3, 0, 0], [3, 2, 0, 5], [7, 7, 4, 4], [7, 7, 4, 4]]).reshape(1, 4, 4, 1)
    np.testing.assert_array_equal(_tie_gradient(2, None, x),
                                  [[0, 1, 0, 0], [0, 0, 0, 1], [1, 0, 1, 0], [0, 0, 0, 0]])


def test_maxpool_settles_ties_only_where_they_are(backend):
    # The host splits the batch over threads (the fixture forces 3 parts) and each
    # part settles its own ties: one image with ties between two without must
    # still send each window's gradient to its first maximum, and the others to
    # their single maximum.
    x = np.random.default_rng(5).permutation(3 * 4 * 4).reshape(3, 4, 4, 1).astype(np.float32)
    x[1] = 1.0  # every window of the middle image is a four-way tie
    dx = minicnn.to_host(_pool_backward_of_ones(x))[..., 0]
    first = np.zeros((4, 4))
    first[::2, ::2] = 1
    np.testing.assert_array_equal(dx[1], first)
    for image in (0, 2):
        windows = x[image, :, :, 0].reshape(2, 2, 2, 2).transpose(0, 2, 1, 3).reshape(4, 4)
        expected = np.zeros((4, 4))
        for w, k in enumerate(windows.argmax(axis=1)):
            expected[2 * (w // 2) + k // 2, 2 * (w % 2) + k % 2] = 1
        np.testing.assert_array_equal(dx[image], expected)


def _pool_backward_of_ones(x):
    layer = MaxPooling2D(2)
    y = layer.forward(minicnn.to_device(x), training=True)
    return layer.backward(minicnn.to_device(np.ones(y.shape, np.float32)))


# ---------------------------------------------------------------- every layer
LAYER_FACTORIES = {
    "conv-relu": (lambda: Conv2D(3, 3, padding="same", activation="relu"), (2, 5, 5, 2)),
    "conv-same-s2": (lambda: Conv2D(3, (2, 3), strides=2, padding="same"), (2, 5, 6, 2)),
    "conv-no-bias-tanh": (lambda: Conv2D(2, 2, use_bias=False, activation="tanh"), (2, 4, 4, 2)),
    "pool-tiles": (lambda: MaxPooling2D(2), (2, 5, 5, 2)),
    "pool-overlap": (lambda: MaxPooling2D(3, strides=1), (2, 5, 5, 2)),
    "pool-same": (lambda: MaxPooling2D(2, padding="same"), (2, 5, 5, 2)),
    "dense-relu": (lambda: Dense(4, activation="relu"), (3, 6)),
    "dense-softmax": (lambda: Dense(4, activation="softmax"), (3, 6)),
    "dropout": (lambda: Dropout(0.5), (3, 4, 4, 2)),
    "flatten": (lambda: Flatten(), (2, 3, 3, 2)),
    "activation-relu": (lambda: Activation("relu"), (3, 6)),
    "activation-sigmoid": (lambda: Activation("sigmoid"), (3, 6)),
}


@pytest.mark.parametrize("name", list(LAYER_FACTORIES))
def test_layers_leave_their_inputs_and_earlier_results_alone(backend, name):
    """forward must not write into x, backward not into dy; and a later call must not
    overwrite what an earlier call returned (no output aliases a reused buffer)."""
    make, shape = LAYER_FACTORIES[name]
    layer = make()
    rng = np.random.default_rng(0)
    x1, x2 = (rng.standard_normal(shape).astype(np.float32) for _ in range(2))
    d1, d2 = minicnn.to_device(x1), minicnn.to_device(x2)
    y1 = layer.forward(d1, training=True)
    y1_host = minicnn.to_host(y1).copy()
    g1 = minicnn.to_device(rng.standard_normal(y1.shape).astype(np.float32))
    g1_host = minicnn.to_host(g1).copy()
    dx1 = layer.backward(g1)
    dx1_host = minicnn.to_host(dx1).copy()
    np.testing.assert_array_equal(minicnn.to_host(d1), x1)  # x untouched
    np.testing.assert_array_equal(minicnn.to_host(g1), g1_host)  # dy untouched
    y2 = layer.forward(d2, training=True)
    dx2 = layer.backward(minicnn.to_device(rng.standard_normal(y2.shape).astype(np.float32)))
    np.testing.assert_array_equal(minicnn.to_host(y1), y1_host)
    np.testing.assert_array_equal(minicnn.to_host(dx1), dx1_host)
    assert not np.array_equal(minicnn.to_host(y2), y1_host)
    assert not np.array_equal(minicnn.to_host(dx2), dx1_host)


@pytest.mark.parametrize("name", [k for k in LAYER_FACTORIES if k.startswith(("conv", "pool"))])
def test_window_layers_follow_batch_size_changes(backend, name):
    # a reused work buffer must follow the batch size (predict's last, smaller batch)
    make, shape = LAYER_FACTORIES[name]
    layer = make()
    x = np.random.default_rng(0).standard_normal((5, *shape[1:])).astype(np.float32)
    whole = run(layer, x)
    parts = np.concatenate([run(layer, x[:3]), run(layer, x[3:]), run(layer, x[:1])])
    assert_close(parts[:5], whole)  # other batch sizes, other products: up to rounding
    assert_close(parts[5], whole[0])


# ---------------------------------------------------------------- Dense
@pytest.mark.parametrize("use_bias", [True, False])
def test_dense_matches_naive_loops(backend, use_bias):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 7))
    k = rng.standard_normal((7, 4))
    b = rng.standard_normal(4) if use_bias else None
    layer = Dense(4, use_bias=use_bias)
    set_params(layer, (7,), **({"kernel": k, "bias": b} if use_bias else {"kernel": k}))
    assert layer.params["kernel"].shape == (7, 4)  # Keras layout (in, units)
    np.testing.assert_allclose(run(layer, x), dense_reference(x, k, b), rtol=1e-5, atol=1e-5)


def test_dense_softmax_matches_reference(backend):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((4, 5))
    k, b = rng.standard_normal((5, 3)), rng.standard_normal(3)
    layer = Dense(3, activation="softmax")
    set_params(layer, (5,), kernel=k, bias=b)
    np.testing.assert_allclose(run(layer, x), softmax_reference(dense_reference(x, k, b)),
                               rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- activations
def test_softmax_matches_reference_and_survives_huge_logits(backend):
    z = np.array([[1.0, 2.0, 3.0, 4.0],
                  [-3.0, 0.0, 0.5, 0.5],
                  [1e4, -1e4, 0.0, 1e4],
                  [-1e4, -1e4 + 1, -1e4, -1e4]])
    y = run(Activation("softmax"), z)
    assert np.all(np.isfinite(y))
    np.testing.assert_allclose(y, softmax_reference(z), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-6)


@pytest.mark.parametrize("name,reference", [
    ("relu", lambda z: max(z, 0.0)),
    ("sigmoid", lambda z: 1 / (1 + math.exp(-z)) if z >= 0 else math.exp(z) / (1 + math.exp(z))),
    ("tanh", math.tanh),
    ("linear", lambda z: z),
])
def test_elementwise_activations_match_math(backend, name, reference):
    z = np.array([[-800.0, -3.0, -0.5, 0.25, 2.0, 800.0]])
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # no overflow at +-800
        y = run(Activation(name), z)
    expected = np.array([[reference(v) for v in z[0]]])
    np.testing.assert_allclose(y, expected, rtol=1e-6, atol=1e-7)
    assert y.dtype == np.float32


def test_activation_get_returns_fresh_objects():
    relu = activations.get("relu")
    assert activations.get("relu") is not relu
    assert activations.get(relu) is not relu and activations.get(relu).name == "relu"
    assert activations.get(None).name == "linear"


# ---------------------------------------------------------------- Dropout
def test_dropout_inference_is_identity(backend):
    x = np.random.default_rng(0).standard_normal((4, 6, 6, 3))
    layer = Dropout(0.5)
    np.testing.assert_array_equal(run(layer, x, training=False), x.astype(np.float32))
    dy = np.random.default_rng(1).standard_normal(x.shape).astype(np.float32)
    np.testing.assert_array_equal(minicnn.to_host(layer.backward(minicnn.to_device(dy))), dy)


@pytest.mark.parametrize("rate", [0.1, 0.3, 0.5, 0.8])
def test_dropout_training_zeroes_about_rate_and_scales_the_rest(backend, rate):
    x = 1.0 + np.random.default_rng(0).random((50, 400))  # no zeros of its own
    layer = Dropout(rate)
    y = run(layer, x, training=True)
    dropped = y == 0
    assert abs(dropped.mean() - rate) < 0.02  # 20000 draws: 5+ standard deviations
    np.testing.assert_allclose(y[~dropped], (x / (1 - rate))[~dropped], rtol=1e-6)
    # backward uses the same mask and the same scale
    dy = np.ones_like(x, dtype=np.float32)
    dx = minicnn.to_host(layer.backward(minicnn.to_device(dy)))
    np.testing.assert_array_equal(dx == 0, dropped)
    np.testing.assert_allclose(dx[~dropped], 1 / (1 - rate), rtol=1e-6)


def test_dropout_same_seed_same_mask_fresh_mask_each_step(backend):
    x = np.ones((8, 50))
    a = run(Dropout(0.5, seed=7), x, training=True)
    b = run(Dropout(0.5, seed=7), x, training=True)
    np.testing.assert_array_equal(a, b)
    c = run(Dropout(0.5, seed=8), x, training=True)
    assert not np.array_equal(a, c)
    # the global seed does the same for unseeded layers
    minicnn.set_seed(11)
    layer = Dropout(0.5)
    first = run(layer, x, training=True)
    second = run(layer, x, training=True)
    assert not np.array_equal(first, second)  # a new mask every training step
    minicnn.set_seed(11)
    np.testing.assert_array_equal(run(Dropout(0.5), x, training=True), first)


def test_dropout_rate_zero_is_identity_in_training(backend):
    x = np.random.default_rng(0).standard_normal((3, 4))
    np.testing.assert_array_equal(run(Dropout(0.0), x, training=True), x.astype(np.float32))


# ---------------------------------------------------------------- Flatten
def test_flatten_is_row_major_and_backward_reshapes(backend):
    x = np.arange(2 * 3 * 4 * 5, dtype=np.float64).reshape(2, 3, 4, 5)
    layer = Flatten()
    y = run(layer, x, training=True)
    assert y.shape == (2, 60)
    for n in range(2):
        k = 0
        for r in range(3):
            for s in range(4):
                for c in range(5):
                    assert y[n, k] == x[n, r, s, c]
                    k += 1
    dy = minicnn.to_device(np.arange(120, dtype=np.float32).reshape(2, 60))
    dx = minicnn.to_host(layer.backward(dy))
    np.testing.assert_array_equal(dx, np.arange(120, dtype=np.float32).reshape(2, 3, 4, 5))
    assert layer.output_shape == (None, 60)
    assert layer.compute_output_shape((None, 3, 4, 5)) == (None, 60)


# ---------------------------------------------------------------- im2col / col2im
def test_im2col_rows_are_windows():
    x = np.arange(1 * 4 * 5 * 2, dtype=np.float64).reshape(1, 4, 5, 2)
    col = win.im2col(x, (2, 3), (2, 1), (2, 3))
    assert col.shape == (1 * 2 * 3, 2 * 3 * 2)
    for oy in range(2):
        for ox in range(3):
            row = col[oy * 3 + ox]
            k = 0
            for i in range(2):
                for j in range(3):
                    for c in range(2):
                        assert row[k] == x[0, oy * 2 + i, ox + j, c]
                        k += 1


window_configs = st.fixed_dictionaries({
    "n": st.integers(1, 2), "h": st.integers(1, 9), "w": st.integers(1, 9),
    "c": st.integers(1, 3), "kh": st.integers(1, 4), "kw": st.integers(1, 4),
    "sh": st.integers(1, 3), "sw": st.integers(1, 3),
    "padding": st.sampled_from(["valid", "same"]), "seed": st.integers(0, 2 ** 16),
})


def _fits(cfg):
    return cfg["padding"] == "same" or (cfg["kh"] <= cfg["h"] and cfg["kw"] <= cfg["w"])


@HYPOTHESIS
@given(cfg=window_configs.filter(_fits))
def test_im2col_col2im_are_adjoint(backend, cfg):
    rng = np.random.default_rng(cfg["seed"])
    kernel, strides = (cfg["kh"], cfg["kw"]), (cfg["sh"], cfg["sw"])
    pads = (keras_pads(cfg["h"], cfg["kh"], cfg["sh"], cfg["padding"]),
            keras_pads(cfg["w"], cfg["kw"], cfg["sw"], cfg["padding"]))
    hp, wp = cfg["h"] + sum(pads[0]), cfg["w"] + sum(pads[1])
    out_hw = (keras_out_len(cfg["h"], cfg["kh"], cfg["sh"], cfg["padding"]),
              keras_out_len(cfg["w"], cfg["kw"], cfg["sw"], cfg["padding"]))
    x = rng.standard_normal((cfg["n"], hp, wp, cfg["c"]))
    col = win.im2col(minicnn.to_device(x), kernel, strides, out_hw)
    assert col.shape == (cfg["n"] * out_hw[0] * out_hw[1], cfg["kh"] * cfg["kw"] * cfg["c"])
    y = rng.standard_normal(col.shape)
    back = win.col2im(minicnn.to_device(y), x.shape, kernel, strides, out_hw)
    lhs = float((minicnn.to_host(col) * y).sum())
    rhs = float((x * minicnn.to_host(back)).sum())
    assert lhs == pytest.approx(rhs, rel=1e-10, abs=1e-10)


@HYPOTHESIS
@given(cfg=window_configs.filter(_fits))
def test_layer_output_shapes_follow_keras_formulas(backend, cfg):
    h, w, kh, kw, sh, sw, padding = (cfg[k] for k in ("h", "w", "kh", "kw", "sh", "sw", "padding"))
    if padding == "valid":
        expected_hw = ((h - kh) // sh + 1, (w - kw) // sw + 1)
    else:
        expected_hw = (math.ceil(h / sh), math.ceil(w / sw))
    assert win.output_length(h, kh, sh, padding) == expected_hw[0]
    assert win.padding_amounts(h, kh, sh, padding) == keras_pads(h, kh, sh, padding)
    x = distinct((cfg["n"], h, w, cfg["c"]), np.random.default_rng(cfg["seed"]))
    conv = Conv2D(2, (kh, kw), strides=(sh, sw), padding=padding)
    pool = MaxPooling2D((kh, kw), strides=(sh, sw), padding=padding)
    assert run(conv, x).shape == (cfg["n"], *expected_hw, 2)
    assert conv.output_shape == (None, *expected_hw, 2)
    y = run(pool, x)
    assert y.shape == (cfg["n"], *expected_hw, cfg["c"])
    np.testing.assert_array_equal(y, pool_reference(x, (kh, kw), (sh, sw), padding).astype(np.float32))


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cfg=window_configs.filter(_fits))
def test_conv2d_random_configs_match_naive_loops(backend, cfg):
    rng = np.random.default_rng(cfg["seed"])
    x = rng.standard_normal((cfg["n"], cfg["h"], cfg["w"], cfg["c"]))
    k = rng.standard_normal((cfg["kh"], cfg["kw"], cfg["c"], 2))
    b = rng.standard_normal(2)
    layer = Conv2D(2, (cfg["kh"], cfg["kw"]), strides=(cfg["sh"], cfg["sw"]), padding=cfg["padding"])
    set_params(layer, x.shape[1:], kernel=k, bias=b)
    expected = conv_reference(x, k, b, (cfg["sh"], cfg["sw"]), cfg["padding"])
    np.testing.assert_allclose(run(layer, x), expected, rtol=1e-4, atol=1e-4)
