"""Winograd's F(m x m, 3x3) for wide 3x3 convolutions on the host (minicnn/ops/winograd.py).

* the transform matrices of m = 2 and 4 against the 1-D minimal filtering they stand
  for (a 3-tap correlation of m outputs), written here from its definition;
* conv3x3_same and input_gradient against naive loops written here, float64, for
  m = 2 and 4, on sides that are and are not multiples of m, images smaller than a
  tile, with and without a bias, one image per block, blocks of several images
  with a shorter last one, or the whole batch;
* float32 stays within F(m x m)'s rounding of the float64 answer: a direct sum's
  for m = 2, about 20x it for m = 4 (the transforms' constants reach 8 and 1/24);
* Conv2D takes the path exactly where ``applies`` says (forced here on small
  layers); its kernel, bias and input gradients pass float64 central
  differences, and an input gradient whose kernel is not turned is caught.
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest

import minicnn
from minicnn.gradcheck import check_layer
from minicnn.layers import Conv2D
from minicnn.ops import conv as conv_ops
from minicnn.ops import threads, winograd

from conftest import assert_close, distinct

SHAPES = [(2, 6, 6, 3), (3, 7, 5, 2), (2, 1, 1, 3), (3, 2, 3, 2), (1, 9, 4, 4)]


def taps_inside(n, h, w):
    """(b, p, q, i, j) for every output pixel (p, q) of image b and kernel tap (i, j)
    whose input pixel (p + i - 1, q + j - 1) lies inside the image ('same' padding:
    the taps outside meet zeros)."""
    for b, p, q, i, j in itertools.product(range(n), range(h), range(w), range(3), range(3)):
        if 0 <= p + i - 1 < h and 0 <= q + j - 1 < w:
            yield b, p, q, i, j


def naive_conv3x3(x, kernel, bias):
    """y[n, p, q, f] = b[f] + sum over (i, j, c) of x[n, p + i - 1, q + j - 1, c] W[i, j, c, f],
    zero outside the image."""
    n, h, w, c = x.shape
    y = np.zeros((n, h, w, kernel.shape[-1]))
    for b, p, q, i, j in taps_inside(n, h, w):
        y[b, p, q] += x[b, p + i - 1, q + j - 1] @ kernel[i, j]
    return y if bias is None else y + bias


def naive_input_gradient(dy, kernel):
    """dx[n, r, s, c] = sum over the outputs (p, q) whose window holds (r, s) of
    dy[n, p, q] . W[r - p + 1, s - q + 1, c]: the chain rule, pixel by pixel."""
    n, h, w, _ = dy.shape
    dx = np.zeros((n, h, w, kernel.shape[2]))
    for b in range(n):
        for p in range(h):
            for q in range(w):
                for i in range(3):
                    for j in range(3):
                        r, s = p + i - 1, q + j - 1
                        if 0 <= r < h and 0 <= s < w:
                            dx[b, r, s] += kernel[i, j] @ dy[b, p, q]
    return dx


# float32 against float64: rtol for F(4x4, 3x3), whose transforms scale float32's
# rounding up about 20x (3e-6 to 7e-6 of the output's largest value at 130 to 256
# channels, the docs/performance.md command; a wrong transform or a misplaced tile
# is off by O(1)).
F4_FLOAT32_RTOL = 5e-5


@pytest.fixture(params=[(2, 1, 1), (2, 4, 2), (4, 1, 2), (4, 4, 1), (4, 1 << 20, 2)],
                ids=["m2-1-image-blocks", "m2-4-tile-blocks-2-threads",
                     "m4-1-image-blocks-2-threads", "m4-4-tile-blocks", "m4-whole-2-threads"])
def blocks(request, monkeypatch):
    """(OUTPUT_TILE, BLOCK_TILES, host threads): with m = 2, 4 tiles make blocks of 2
    images of 3x2 (2 tiles each) and a last block of 1 from 3 images; one image of
    more tiles is a block. With 2 threads the gathers and scatters of a block of
    two images or more are split over them (a block of one image is not)."""
    m, tiles, count = request.param
    monkeypatch.setattr(winograd, "OUTPUT_TILE", m)
    monkeypatch.setattr(winograd, "BLOCK_TILES", tiles)
    threads.set_host_threads(count, min_bytes=0)
    yield
    threads.set_host_threads(None, min_bytes=threads.DEFAULT_MIN_BYTES)


@pytest.mark.parametrize("m", [2, 4])
def test_transform_matrices_are_minimal_filtering(m):
    """A^T [(G g) (.) (B^T d)] is the correlation y[i] = sum over k of d[i + k] g[k],
    i < m, for any d of m + 2 values and g of 3; the 2-D matrices are Kronecker
    products of those (vec row-major)."""
    b_t, g_matrix, a_t = (np.array(a, dtype=float) for a in winograd._TRANSFORMS[m])
    assert b_t.shape == (m + 2, m + 2) and g_matrix.shape == (m + 2, 3) and a_t.shape == (m, m + 2)
    rng = np.random.default_rng(m)
    for _ in range(5):
        d, g = rng.standard_normal(m + 2), rng.standard_normal(3)
        want = [sum(d[i + k] * g[k] for k in range(3)) for i in range(m)]
        assert_close(a_t @ ((g_matrix @ g) * (b_t @ d)), np.array(want))
    b2, g2, a2 = winograd.transform_matrices(m)
    d, g, mm = rng.standard_normal((m + 2, m + 2)), rng.standard_normal((3, 3)), \
        rng.standard_normal((m + 2, m + 2))
    assert_close(b2 @ d.ravel(), (b_t @ d @ b_t.T).ravel())
    assert_close(g2 @ g.ravel(), (g_matrix @ g @ g_matrix.T).ravel())
    assert_close(a2 @ mm.ravel(), (a_t @ mm @ a_t.T).ravel())


@pytest.mark.parametrize("call,pattern", [
    (lambda: winograd.conv3x3_same(np.ones((2, 6, 6, 3), int), np.ones((3, 3, 3, 2))),
     r"winograd.conv3x3_same: expected x as floating images \(N, H, W, C\), got int64"),
    (lambda: winograd.conv3x3_same(np.ones((6, 6, 3)), np.ones((3, 3, 3, 2))),
     r"winograd.conv3x3_same: expected x as floating images .* of shape \(6, 6, 3\)"),
    (lambda: winograd.conv3x3_same(np.ones((2, 6, 6, 3)), np.ones((1, 9, 3, 2))),
     r"winograd.conv3x3_same: expected a kernel of shape \(3, 3, 3, filters\) .* got \(1, 9"),
    (lambda: winograd.conv3x3_same(np.ones((2, 6, 6, 3)), np.ones((3, 3, 4, 2))),
     r"expected a kernel of shape \(3, 3, 3, filters\) for x's 3 channels, got \(3, 3, 4, 2\)"),
    (lambda: winograd.conv3x3_same(np.ones((2, 6, 6, 3)), np.ones((3, 3, 3, 2)), np.ones(3)),
     r"winograd.conv3x3_same: expected a bias of shape \(2,\), got \(3,\)"),
    (lambda: winograd.kernel_gradient(np.ones((2, 8, 8, 3)), np.ones((2, 7, 7, 2))),
     r"winograd.kernel_gradient: expected dy of shape \(2, 8, 8\) \+ \(filters,\)"),
    (lambda: winograd.kernel_gradient(np.ones((2, 8, 8, 3)), np.ones((1, 8, 8, 2))),
     r"winograd.kernel_gradient: expected dy of shape \(2, 8, 8\)"),
    (lambda: winograd.input_gradient(np.ones((2, 6, 6, 5)), np.ones((3, 3, 3, 2))),
     r"winograd.input_gradient: expected a kernel of shape \(3, 3, 5, filters\)"),
    (lambda: winograd.conv3x3_same(np.ones((2, 6, 6, 3)), np.ones((3, 3, 3, 2)), m=0),
     r"winograd: output tile m must be one of \[2, 4\], got 0"),
], ids=["integer-x", "3-d-x", "kernel-1x9", "kernel-channels", "bias", "dy-size", "dy-batch",
        "input-gradient-channels", "m-0"])
def test_bad_input_is_named_before_any_work(call, pattern):
    with pytest.raises(ValueError, match=pattern):
        call()


@pytest.mark.parametrize("m", [3, 0, "4"])
def test_an_unknown_tile_is_named(m):
    with pytest.raises(ValueError, match=r"winograd: output tile m must be one of \[2, 4\]"):
        winograd.transform_matrices(m)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("use_bias", [False, True])
def test_forward_matches_naive_loop(blocks, shape, use_bias):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape)
    kernel = rng.standard_normal((3, 3, shape[-1], 5))
    bias = rng.standard_normal(5) if use_bias else None
    assert_close(winograd.conv3x3_same(x, kernel, bias), naive_conv3x3(x, kernel, bias))


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_input_gradient_matches_naive_loop(blocks, shape):
    rng = np.random.default_rng(1)
    kernel = rng.standard_normal((3, 3, shape[-1], 5))
    dy = rng.standard_normal((*shape[:3], 5))
    assert_close(winograd.input_gradient(dy, kernel), naive_input_gradient(dy, kernel))


def naive_kernel_gradient(x, dy):
    """dW[i, j, c, f] = sum over (n, p, q) of x[n, p + i - 1, q + j - 1, c] dy[n, p, q, f],
    zero outside the image: each weight's share of every output it touched."""
    n, h, w, c = x.shape
    d_w = np.zeros((3, 3, c, dy.shape[-1]))
    for b, p, q, i, j in taps_inside(n, h, w):
        d_w[i, j] += np.outer(x[b, p + i - 1, q + j - 1], dy[b, p, q])
    return d_w


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_kernel_gradient_matches_naive_loop(blocks, shape):
    rng = np.random.default_rng(5)
    x = rng.standard_normal(shape)
    dy = rng.standard_normal((*shape[:3], 5))
    assert_close(winograd.kernel_gradient(x, dy), naive_kernel_gradient(x, dy))


@pytest.mark.parametrize("m,rtol", [(2, 1e-5), (4, F4_FLOAT32_RTOL)])
def test_float32_within_rounding_of_float64(m, rtol):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 7, 7, 130))
    kernel = rng.standard_normal((3, 3, 130, 9)) / 30
    want = naive_conv3x3(x, kernel, None)
    got = winograd.conv3x3_same(x.astype(np.float32), kernel.astype(np.float32), m=m)
    assert got.dtype == np.float32
    assert_close(got, want.astype(np.float32), rtol=rtol)


@pytest.mark.parametrize("m", [2, 4])
def test_kernel_transform_is_g_g_gt(m):
    rng = np.random.default_rng(3)
    kernel = rng.standard_normal((3, 3, 2, 3))
    g = np.array(winograd._TRANSFORMS[m][1])
    u = winograd.kernel_transform(kernel, m).reshape(m + 2, m + 2, 2, 3)
    for c in range(2):
        for f in range(3):
            assert_close(u[:, :, c, f], g @ kernel[:, :, c, f] @ g.T)


@pytest.mark.parametrize("image_hw,kernel_shape,strides,dilation,pads,expected", [
    ((7, 7), (3, 3, 256, 256), (1, 1), (1, 1), ((1, 1), (1, 1)), True),   # conv2_2, conv3_1
    ((15, 15), (3, 3, 64, 256), (1, 1), (1, 1), ((1, 1), (1, 1)), False),  # 64 in: im2col
    ((3, 3), (3, 3, 256, 256), (1, 1), (1, 1), ((1, 1), (1, 1)), False),   # too small
    ((7, 7), (3, 3, 256, 256), (2, 2), (1, 1), ((1, 1), (1, 1)), False),
    ((7, 7), (3, 3, 256, 256), (1, 1), (2, 2), ((2, 2), (2, 2)), False),
    ((7, 7), (3, 3, 256, 256), (1, 1), (1, 1), ((0, 0), (0, 0)), False),   # 'valid'
    ((7, 7), (5, 5, 256, 256), (1, 1), (1, 1), ((2, 2), (2, 2)), False),
    ((7, 7), (3, 3, 256, 64), (1, 1), (1, 1), ((1, 1), (1, 1)), False),
])
def test_applies_only_where_it_pays(image_hw, kernel_shape, strides, dilation, pads, expected):
    assert winograd.applies(image_hw, kernel_shape, strides, dilation, pads) is expected


@pytest.fixture
def forced(monkeypatch):
    """Every stride-1 'same' 3x3 Conv2D on the host takes Winograd's path; the
    calls of conv3x3_same, input_gradient and kernel_gradient are listed."""
    monkeypatch.setattr(conv_ops, "KEEP_COL_BYTES", 0)
    monkeypatch.setattr(winograd, "MIN_CHANNELS", 1)
    monkeypatch.setattr(winograd, "MIN_SIZE", 1)
    threads.set_host_threads(2, min_bytes=0)
    calls = []
    real = winograd.conv3x3_same, winograd.input_gradient, winograd.kernel_gradient

    def counted(*args, **kwargs):
        calls.append(("forward", args[0].shape))
        return real[0](*args, **kwargs)

    def counted_gradient(*args, **kwargs):
        calls.append(("input_gradient", args[0].shape))
        return real[1](*args, **kwargs)

    def counted_kernel_gradient(*args, **kwargs):
        calls.append(("kernel_gradient", args[0].shape))
        return real[2](*args, **kwargs)
    monkeypatch.setattr(winograd, "conv3x3_same", counted)
    monkeypatch.setattr(winograd, "input_gradient", counted_gradient)
    monkeypatch.setattr(winograd, "kernel_gradient", counted_kernel_gradient)
    yield calls
    threads.set_host_threads(None, min_bytes=threads.DEFAULT_MIN_BYTES)


@pytest.fixture
def f64():
    minicnn.set_floatx("float64")
    yield
    minicnn.set_floatx("float32")


def make_layer(padding="same", strides=1, use_bias=True, filters=2):
    return Conv2D(filters, 3, strides=strides, padding=padding, use_bias=use_bias,
                  bias_initializer=lambda shape, rng: rng.uniform(-1, 1, shape))


def test_conv2d_forward_takes_the_path_and_matches_naive_loop(forced):
    minicnn.set_seed(1)
    layer = make_layer()
    x = distinct((3, 5, 6, 2)).astype(np.float32)
    y = layer.run_forward(x, training=True)
    assert forced == [("forward", x.shape)]
    want = naive_conv3x3(x.astype(np.float64), layer.params["kernel"], layer.params["bias"])
    assert_close(y, want.astype(np.float32))


@pytest.mark.parametrize("padding,strides", [("valid", 1), ("same", 2)])
def test_conv2d_other_geometries_keep_im2col(forced, padding, strides):
    layer = make_layer(padding, strides)
    layer.run_forward(distinct((2, 6, 6, 2)).astype(np.float32), training=True)
    assert forced == []


@pytest.mark.parametrize("use_bias", [False, True])
@pytest.mark.parametrize("shape", [(3, 5, 6, 2), (2, 4, 4, 3)], ids=str)
def test_conv2d_gradients_central_differences(forced, f64, shape, use_bias):
    minicnn.set_seed(2)
    layer = make_layer(use_bias=use_bias)
    layer.input_grad = True
    result = check_layer(layer, distinct(shape), max_entries=40)
    assert result.passed, str(result)
    gradients = [call for call in forced if call[0] == "input_gradient"]
    assert gradients and set(gradients) == {("input_gradient", (*shape[:3], 2))}
    assert ("forward", shape) in forced and ("kernel_gradient", shape) in forced


def test_an_input_gradient_with_the_kernel_not_turned_is_caught(forced, f64, monkeypatch):
    """The check above can fail: dx made with the kernel as it is (not turned by
    180 degrees) is reported, and only for the input."""
    minicnn.set_seed(2)
    layer = make_layer()
    layer.input_grad = True
    x = distinct((2, 5, 4, 2))
    assert check_layer(layer, x, max_entries=40).passed
    monkeypatch.setattr(winograd, "input_gradient",
                        lambda dy, kernel: winograd.conv3x3_same(dy, kernel.swapaxes(2, 3)))
    result = check_layer(layer, x, max_entries=40)
    assert result.verdict == "FAILED" and result.where.startswith("x["), str(result)
    assert result.errors["kernel"] < 1e-6 and result.errors["bias"] < 1e-6


def test_a_kernel_gradient_with_the_taps_turned_is_caught(forced, f64, monkeypatch):
    """The check can fail on the kernel too: dW with its taps turned by 180 degrees
    is reported for the kernel, and the bias and input stay right."""
    minicnn.set_seed(2)
    layer = make_layer()
    layer.input_grad = True
    x = distinct((2, 5, 4, 2))
    real = winograd.kernel_gradient
    monkeypatch.setattr(winograd, "kernel_gradient",
                        lambda x, dy, m=None: real(x, dy, m)[::-1, ::-1])
    result = check_layer(layer, x, max_entries=40)
    assert result.verdict == "FAILED" and result.where.startswith("kernel["), str(result)
    assert result.errors["bias"] < 1e-6 and result.errors["x"] < 1e-6


def test_winograd_and_im2col_agree_on_the_recipes_layer_shape(monkeypatch):
    """A 256-channel layer in float32: Winograd's y, dx and dW against the im2col
    path's, within F(4x4, 3x3)'s float32 rounding."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 7, 7, 256)).astype(np.float32)
    kernel = (rng.standard_normal((3, 3, 256, 256)) / 48).astype(np.float32)
    dy = rng.standard_normal((3, 7, 7, 256)).astype(np.float32)
    monkeypatch.setattr(conv_ops, "KEEP_COL_BYTES", 0)
    calls = []
    for name in ("conv3x3_same", "input_gradient", "kernel_gradient"):
        real = getattr(winograd, name)
        monkeypatch.setattr(winograd, name, lambda *args, _real=real, _name=name, **kwargs: (
            calls.append(_name), _real(*args, **kwargs))[1])
    results, paths = {}, {}
    for channels in (256, 257):  # 257: applies() is False, im2col's blocked path
        monkeypatch.setattr(winograd, "MIN_CHANNELS", channels)
        calls.clear()
        y, cache = conv_ops.conv2d_forward(x, kernel, None, (1, 1), "same", True,
                                           conv_ops.Workspace())
        dx, dk, _ = conv_ops.conv2d_backward(dy, kernel, False, cache, True,
                                             conv_ops.Workspace())
        results[channels], paths[channels] = (y, dx, dk), list(calls)
    # input_gradient is conv3x3_same of dy with the kernel turned
    assert paths == {256: ["conv3x3_same", "kernel_gradient", "input_gradient", "conv3x3_same"],
                     257: []}
    for name, by_winograd, by_im2col in zip(("y", "dx", "dW"), results[256], results[257]):
        assert_close(by_winograd, by_im2col, rtol=F4_FLOAT32_RTOL, err_msg=name)
