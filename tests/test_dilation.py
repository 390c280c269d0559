"""Conv2D's dilation_rate (Keras 2.2.4 / TF semantics).

* the output sizes and 'same' padding against Keras's conv_output_length and
  TF's padding rule, written out here;
* forward against a naive loop over (n, oy, ox, f, i, j, c) for square and
  non-square kernels, dilations and inputs, 'valid' and 'same', on every backend
  (the "kernels" backend runs the GPU kernels' CUDA source, compiled for the CPU);
* float64 central-difference checks of the kernel, bias and input gradients;
* the plain reference ops and the fast ops agree (training and blocked inference);
* im2col and col2im stay adjoint with a dilation, and the GPU kernels match
  their twins (a kernel that forgets the dilation is caught);
* errors: dilation with strides, bad values, a dilated kernel that does not fit.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import minicnn
from minicnn import backend as B
from minicnn.gradcheck import DEFAULT_TOLERANCE, check_layer
from minicnn.layers import Conv2D, Dense, Flatten
from minicnn.models import Sequential
from minicnn.ops import kernels as K
from minicnn.ops import windows as win
from minicnn.serialization import WeightsFileError

from conftest import assert_close, distinct

# (input (N, H, W, C), kernel, dilation, padding, filters)
CONFIGS = [
    ((2, 7, 7, 2), (3, 3), (2, 2), "valid", 3),
    ((2, 7, 7, 2), (3, 3), (2, 2), "same", 3),
    ((1, 9, 6, 3), (3, 2), (3, 2), "valid", 2),   # non-square everything
    ((2, 6, 8, 1), (2, 3), (1, 3), "same", 4),    # dilation along one axis only
    ((1, 8, 5, 2), (2, 2), (4, 1), "same", 2),    # even kernels: the odd pad goes after
    ((2, 5, 5, 2), (1, 1), (3, 3), "valid", 2),   # a 1x1 kernel: dilation changes nothing
    ((1, 10, 9, 2), (4, 3), (2, 3), "same", 3),
]
IDS = [f"{s[1]}x{s[2]}-k{k}-d{d}-{p}" for s, k, d, p, _ in CONFIGS]


@pytest.fixture
def f64():
    minicnn.set_floatx("float64")
    yield
    minicnn.set_floatx("float32")


def keras_output_length(size, k, stride, d, padding):
    """keras/utils/conv_utils.py conv_output_length, as written there."""
    span = (k - 1) * d + 1
    out = size if padding == "same" else size - span + 1
    return (out + stride - 1) // stride


def naive_conv(x, kernel, bias, dilation, padding):
    """y[n, oy, ox, f] = b[f] + sum x_padded[n, oy + i*dh, ox + j*dw, c] W[i, j, c, f],
    with TF's 'same' padding: total span - 1, the smaller half before."""
    n, h, w, c = x.shape
    kh, kw, _, f = kernel.shape
    dh, dw = dilation
    span_h, span_w = (kh - 1) * dh + 1, (kw - 1) * dw + 1
    if padding == "same":
        top, left = (span_h - 1) // 2, (span_w - 1) // 2
        xp = np.zeros((n, h + span_h - 1, w + span_w - 1, c))
        xp[:, top:top + h, left:left + w] = x
    else:
        xp = x
    oh, ow = xp.shape[1] - span_h + 1, xp.shape[2] - span_w + 1
    y = np.zeros((n, oh, ow, f))
    for b in range(n):
        for oy in range(oh):
            for ox in range(ow):
                for o in range(f):
                    total = bias[o]
                    for i in range(kh):
                        for j in range(kw):
                            for ch in range(c):
                                total += xp[b, oy + i * dh, ox + j * dw, ch] * kernel[i, j, ch, o]
                    y[b, oy, ox, o] = total
    return y


def make_layer(kernel, dilation, padding, filters, x_shape):
    minicnn.set_seed(0)
    layer = Conv2D(filters, kernel, padding=padding, dilation_rate=dilation,
                   bias_initializer="random_uniform")
    layer.build(x_shape)
    return layer


# ---------------------------------------------------------------- shapes
@pytest.mark.parametrize("padding", ["valid", "same"])
def test_output_shape_is_keras_conv_output_length(padding):
    for size in range(1, 14):
        for k in (1, 2, 3, 4):
            for d in (1, 2, 3):
                if padding == "valid" and (k - 1) * d + 1 > size:
                    continue
                layer = Conv2D(2, (k, 1), padding=padding, dilation_rate=(d, 1))
                got = layer.compute_output_shape((3, size, 4, 2))
                assert got == (3, keras_output_length(size, k, 1, d, padding),
                               keras_output_length(4, 1, 1, 1, padding), 2), (size, k, d)


def test_same_padding_is_tf_rule_for_the_dilated_span():
    # span 5 (k=3, d=2): 4 zeros, 2 before and 2 after; span 4 (k=2, d=3): 1 before, 2 after
    assert win.padding_amounts(7, win.dilated(3, 2), 1, "same") == (2, 2)
    assert win.padding_amounts(7, win.dilated(2, 3), 1, "same") == (1, 2)
    assert win.dilated(3, 1) == 3 and win.dilated(1, 5) == 1 and win.dilated(4, 3) == 10


def test_a_tiny_dilated_kernel_by_hand():
    """A 2x2 kernel of ones with dilation 2 adds the corners of each 3x3 window."""
    x = np.arange(25, dtype=np.float64).reshape(1, 5, 5, 1)
    with minicnn.use_floatx("float64"):
        layer = Conv2D(1, 2, dilation_rate=2, kernel_initializer="ones")
        y = layer.forward(x, training=False)
    assert y.shape == (1, 3, 3, 1)
    assert y[0, 0, 0, 0] == 0 + 2 + 10 + 12
    assert y[0, 2, 1, 0] == 11 + 13 + 21 + 23


# ---------------------------------------------------------------- forward
@pytest.mark.parametrize("x_shape,kernel,dilation,padding,filters", CONFIGS, ids=IDS)
def test_forward_matches_naive_loops(backend, f64, x_shape, kernel, dilation, padding, filters):
    x = distinct(x_shape)
    layer = make_layer(kernel, dilation, padding, filters, x_shape)
    w, b = (B.to_host(layer.params[k]) for k in ("kernel", "bias"))
    expected = naive_conv(x, w, b, dilation, padding)
    for training in (True, False):
        y = B.to_host(layer.forward(B.to_device(x), training=training))
        assert y.shape == layer.compute_output_shape(x_shape) == expected.shape
        assert_close(y, expected)


# ---------------------------------------------------------------- gradients
@pytest.mark.parametrize("x_shape,kernel,dilation,padding,filters", CONFIGS, ids=IDS)
def test_gradients_pass_central_differences(f64, x_shape, kernel, dilation, padding, filters):
    x = distinct(x_shape, np.random.default_rng(1))
    layer = make_layer(kernel, dilation, padding, filters, x_shape)
    result = check_layer(layer, x)
    assert result.passed, f"{layer.describe()}: {result}"
    assert result.max_error < DEFAULT_TOLERANCE / 10, result
    assert {"x", "kernel", "bias"} <= set(result.errors), result.errors


def test_gradients_on_the_strict_and_kernels_backends(backend, f64):
    if backend == "numpy":
        pytest.skip("the sweep above runs on numpy")
    x_shape, kernel, dilation, padding, filters = CONFIGS[2]
    layer = make_layer(kernel, dilation, padding, filters, x_shape)
    result = check_layer(layer, distinct(x_shape, np.random.default_rng(1)))
    assert result.passed, result


def test_a_wrong_input_gradient_fails(f64):
    """The check can fail: col2im that ignores the dilation is caught."""
    x_shape, kernel, dilation, padding, filters = CONFIGS[0]
    layer = make_layer(kernel, dilation, padding, filters, x_shape)
    layer._backward = _undilated_backward(layer)
    assert check_layer(layer, distinct(x_shape)).verdict == "FAILED"


def _undilated_backward(layer):
    def backward(grad):
        cache = layer._cache
        layer._cache = cache._replace(dilation=(1, 1))
        try:
            return type(layer)._backward(layer, grad)
        finally:
            layer._cache = cache
    return backward


# ---------------------------------------------------------------- reference ops
@pytest.mark.parametrize("x_shape,kernel,dilation,padding,filters", CONFIGS, ids=IDS)
def test_reference_ops_match_fast_ops(backend, x_shape, kernel, dilation, padding, filters):
    x = distinct(x_shape)
    dy_shape = Conv2D(filters, kernel, padding=padding,
                      dilation_rate=dilation).compute_output_shape(x_shape)
    dy = distinct(dy_shape, np.random.default_rng(2)).astype(np.float32)

    def step():
        layer = make_layer(kernel, dilation, padding, filters, x_shape)
        y = layer.forward(B.to_device(x.astype(np.float32)), training=True)
        dx = layer.backward(B.to_device(dy))
        return [B.to_host(a) for a in (y, dx, layer.grads["kernel"], layer.grads["bias"])]
    fast = step()
    with minicnn.use_ops("reference"):
        plain = step()
    for got, ref in zip(fast, plain):
        assert_close(got, ref)


def test_blocked_inference_matches_reference():
    """Inference on the host goes 16 images at a time through one col: 20 images."""
    x = distinct((20, 9, 8, 2)).astype(np.float32)
    layer = make_layer((3, 2), (2, 3), "same", 3, x.shape)
    fast = layer.forward(x, training=False)
    with minicnn.use_ops("reference"):
        plain = layer.forward(x, training=False)
    assert_close(fast, plain)


# ---------------------------------------------------------------- im2col / col2im / kernels
WINDOWS = [((7, 6, 3), (3, 2), (2, 2)), ((9, 8, 2), (2, 3), (3, 1)), ((6, 9, 1), (2, 2), (1, 4))]


@pytest.mark.parametrize("shape,kernel,dilation", WINDOWS)
def test_im2col_col2im_are_adjoint_and_match_numpy(backend, shape, kernel, dilation):
    """<im2col(x), g> = <x, col2im(g)>; each backend (and the GPU kernels) as numpy."""
    x = distinct((2, *shape))
    out_hw = tuple(s - win.dilated(k, d) + 1 for s, k, d in zip(shape, kernel, dilation))
    g = distinct((2 * out_hw[0] * out_hw[1], kernel[0] * kernel[1] * shape[2]),
                 np.random.default_rng(3))
    col = B.to_host(win.im2col(B.to_device(x), kernel, (1, 1), out_hw, dilation=dilation))
    back = B.to_host(win.col2im(B.to_device(g), x.shape, kernel, (1, 1), out_hw, dilation))
    np.testing.assert_allclose((col * g).sum(), (x * back).sum(), rtol=1e-12)
    # row (n, oy, ox), column (i, j, c) is x[n, oy + i*dh, ox + j*dw, c]
    rows = col.reshape(2, *out_hw, *kernel, shape[2])
    (dh, dw) = dilation
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            np.testing.assert_array_equal(
                rows[:, :, :, i, j], x[:, i * dh:i * dh + out_hw[0], j * dw:j * dw + out_hw[1]])
    assert_close(back, win.col2im(g, x.shape, kernel, (1, 1), out_hw, dilation))


@pytest.mark.parametrize("name,old,new", [
    ("IM2COL", "ky * DH", "ky"),
    ("COL2IM", "window_holding(px, kx * DW", "window_holding(px, kx"),
])
def test_a_kernel_that_forgets_the_dilation_is_caught(monkeypatch, kernel_emulator,
                                                      name, old, new):
    x = distinct((2, 7, 7, 2))

    def im2col_col2im(a):
        col = win.im2col(a, (2, 2), (1, 1), (5, 4), dilation=(2, 3))
        return win.col2im(col, a.shape, (2, 2), (1, 1), (5, 4), (2, 3))

    def on_kernels():
        K.set_kernel_emulator(kernel_emulator)
        try:
            with minicnn.use_backend("strict"):
                return B.to_host(im2col_col2im(B.to_device(x)))
        finally:
            K.set_kernel_emulator(None)
    expected = im2col_col2im(x)
    assert_close(on_kernels(), expected)
    spec = getattr(win, name)
    assert old in spec.operation
    monkeypatch.setattr(win, name, dataclasses.replace(
        spec, operation=spec.operation.replace(old, new)))
    assert not np.allclose(on_kernels(), expected)


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize("kwargs,pattern", [
    (dict(strides=2, dilation_rate=2), r"strides=\(2, 2\) with dilation_rate=\(2, 2\)"),
    (dict(strides=(1, 2), dilation_rate=(3, 1)), r"strides > 1 cannot be combined"),
    (dict(dilation_rate=0), r"Conv2D: dilation_rate must be positive, got \(0, 0\)"),
    (dict(dilation_rate=(2, -1)), r"Conv2D: dilation_rate must be positive"),
    (dict(dilation_rate=1.5), r"Conv2D: dilation_rate must be an int or a pair of ints"),
    (dict(dilation_rate=(2,)), r"Conv2D: dilation_rate must be an int or a pair of ints"),
    (dict(dilation_rate="2"), r"Conv2D: dilation_rate must be an int or a pair of ints"),
    (dict(dilation_rate=True), r"Conv2D: dilation_rate must be an int or a pair of ints"),
])
def test_bad_dilation_is_refused_by_name(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        Conv2D(2, 3, **kwargs)


def test_a_dilated_kernel_that_does_not_fit_is_refused():
    layer = Conv2D(2, 3, dilation_rate=3)  # spans 7x7
    with pytest.raises(ValueError, match=r"kernel \(3, 3\) and dilation_rate \(3, 3\) "
                                         r"\(a window of 7x7\).*does not fit an input of 6x8"):
        layer.compute_output_shape((1, 6, 8, 1))
    with pytest.raises(ValueError, match="does not fit"):
        Sequential([Conv2D(2, 3, dilation_rate=(1, 4), input_shape=(9, 8, 1))])
    assert layer.compute_output_shape((1, 7, 8, 1)) == (1, 1, 2, 2)
    assert Conv2D(2, 3, dilation_rate=3, padding="same").compute_output_shape(
        (1, 6, 8, 1)) == (1, 6, 8, 2)


# ---------------------------------------------------------------- in a model
def test_config_records_the_dilation_and_weights_files_check_it(tmp_path):
    assert Conv2D(2, 3, dilation_rate=(2, 1)).config()["dilation_rate"] == (2, 1)
    assert Conv2D(2, 3).config()["dilation_rate"] == (1, 1)

    def model(dilation):
        minicnn.set_seed(0)
        return Sequential([Conv2D(3, 3, dilation_rate=dilation, activation="relu",
                                  input_shape=(9, 9, 2)), Flatten(), Dense(2)])
    path = tmp_path / "w.npz"
    saved = model(2)
    saved.save_weights(path)
    loaded = model(2)
    loaded.load_weights(path)
    x = distinct((3, 9, 9, 2)).astype(np.float32)
    np.testing.assert_array_equal(loaded.predict(x), saved.predict(x))  # same weights, same path
    with pytest.raises(WeightsFileError, match="dilation_rate"):
        model(1).load_weights(path)


def test_a_dilated_model_learns():
    minicnn.set_seed(0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 8, 8, 1)).astype(np.float32)
    y = np.eye(2, dtype=np.float32)[(x[:, ::2, ::2, 0].sum(axis=(1, 2)) > 0).astype(int)]
    model = Sequential([Conv2D(4, 3, dilation_rate=2, padding="same", activation="relu",
                               input_shape=(8, 8, 1)), Flatten(),
                        Dense(2, activation="softmax")])
    model.compile(loss="categorical_crossentropy", optimizer="adam")
    history = model.fit(x, y, batch_size=16, epochs=40, verbose=0)
    assert history.history["loss"][-1] < 0.6 * history.history["loss"][0]
