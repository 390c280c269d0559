"""Convolutions on the host whose col is too big to keep (minicnn/ops/conv.py).

Above ``KEEP_COL_BYTES`` the host never makes col whole: the batch is split
over the host's threads, each going through its images a block at a time
(``BLOCK_ROWS``), with BLAS single-threaded; the cache keeps the padded input
and backward makes each block's col again. Here the limit is 0, the blocks
hold one, two or all images, and two threads split even tiny batches:

* forward against a naive loop written here (strides, dilation, both paddings);
* float64 central-difference checks of the kernel, bias and input gradients,
  and a backward that forgets an image is caught by the same check;
* the kept-col and the blocked path agree on every backend (a device, which
  the strict backend stands for, always keeps col), for every block size and
  for one thread or two;
* the cache holds no col, and backward does not see a batch buffer that its
  source overwrites after forward;
* layers sharing the threads' buffers (forward A, forward B, backward B,
  backward A) get their own gradients, and each thread has its own buffers;
* BLAS's thread count is what it was once a convolution is done;
* ``im2col_operands`` still gives the forward product's operands.
"""
from __future__ import annotations

import threading

import numpy as np
import pytest

import minicnn
from minicnn.gradcheck import check_layer
from minicnn.layers import Conv2D
from minicnn.ops import blas
from minicnn.ops import conv as conv_ops
from minicnn.ops import threads

from conftest import assert_close, distinct

# (input (N, H, W, C), kernel, strides, dilation, padding, use_bias)
CONFIGS = [
    ((5, 7, 6, 3), (3, 3), (1, 1), (1, 1), "same", False),
    ((3, 7, 6, 2), (3, 2), (1, 1), (1, 1), "valid", True),
    ((5, 9, 8, 2), (3, 3), (2, 3), (1, 1), "same", True),
    ((3, 8, 8, 2), (3, 3), (1, 1), (2, 2), "same", True),
    ((4, 6, 5, 3), (2, 2), (1, 1), (1, 1), "valid", False),
]
IDS = [f"{s[0]}x{s[1]}x{s[2]}-k{k}-s{st}-d{d}-{p}-{'bias' if b else 'nobias'}"
       for s, k, st, d, p, b in CONFIGS]


@pytest.fixture
def two_threads():
    """Two host threads that split any batch, however small."""
    threads.set_host_threads(2, min_bytes=0)
    yield
    threads.set_host_threads(None, min_bytes=threads.DEFAULT_MIN_BYTES)


@pytest.fixture(params=[(1, 1 << 62), (20, 1 << 62), (1 << 30, 1 << 62), (1 << 30, 1 << 13)],
                ids=["1-image-blocks", "2-3-image-blocks", "one-block", "blocks-by-bytes"])
def recompute(request, monkeypatch, two_threads):
    """Every conv on the host takes the blocked path, in blocks of at most BLOCK_ROWS
    pixels and COL_BLOCK_BYTES of col (the last: the bytes decide, 8 KB)."""
    monkeypatch.setattr(conv_ops, "KEEP_COL_BYTES", 0)
    monkeypatch.setattr(conv_ops, "BLOCK_ROWS", request.param[0])
    monkeypatch.setattr(conv_ops, "COL_BLOCK_BYTES", request.param[1])


@pytest.fixture
def f64():
    minicnn.set_floatx("float64")
    yield
    minicnn.set_floatx("float32")


def naive_conv(x, kernel, bias, strides, dilation, padding):
    """y[n, oy, ox, f] = b[f] + sum x_padded[n, oy*sh + i*dh, ox*sw + j*dw, c] W[i, j, c, f],
    with TF's 'same' padding (the smaller half of the total before)."""
    n, h, w, c = x.shape
    kh, kw, _, f = kernel.shape
    (sh, sw), (dh, dw) = strides, dilation
    span_h, span_w = (kh - 1) * dh + 1, (kw - 1) * dw + 1
    if padding == "same":
        oh, ow = -(-h // sh), -(-w // sw)
        total_h = max((oh - 1) * sh + span_h - h, 0)
        total_w = max((ow - 1) * sw + span_w - w, 0)
        xp = np.zeros((n, h + total_h, w + total_w, c))
        xp[:, total_h // 2:total_h // 2 + h, total_w // 2:total_w // 2 + w] = x
    else:
        xp = x
        oh, ow = (h - span_h) // sh + 1, (w - span_w) // sw + 1
    y = np.zeros((n, oh, ow, f))
    for b in range(n):
        for oy in range(oh):
            for ox in range(ow):
                for o in range(f):
                    total = 0.0 if bias is None else bias[o]
                    for i in range(kh):
                        for j in range(kw):
                            for ch in range(c):
                                total += (xp[b, oy * sh + i * dh, ox * sw + j * dw, ch]
                                          * kernel[i, j, ch, o])
                    y[b, oy, ox, o] = total
    return y


def make_layer(kernel, strides, dilation, padding, use_bias, filters=3):
    return Conv2D(filters, kernel, strides=strides, dilation_rate=dilation, padding=padding,
                  use_bias=use_bias,
                  bias_initializer=lambda shape, rng: rng.uniform(-1, 1, shape))


@pytest.mark.parametrize("shape,kernel,strides,dilation,padding,use_bias", CONFIGS, ids=IDS)
def test_forward_matches_naive_loop(recompute, backend, shape, kernel, strides, dilation,
                                    padding, use_bias):
    x = distinct(shape).astype(np.float32)
    minicnn.set_seed(1)
    layer = make_layer(kernel, strides, dilation, padding, use_bias)
    y = minicnn.to_host(layer.run_forward(minicnn.to_device(x), training=True))
    params = {k: minicnn.to_host(v) for k, v in layer.params.items()}
    want = naive_conv(x.astype(np.float64), params["kernel"], params.get("bias"), strides,
                      dilation, padding)
    assert_close(y, want.astype(np.float32))
    if backend == "numpy":  # device arrays (strict emulates one) always keep col
        assert layer._cache.col is None and layer._cache.x_padded is not None


@pytest.mark.parametrize("shape,kernel,strides,dilation,padding,use_bias", CONFIGS, ids=IDS)
def test_gradients_central_differences(recompute, f64, shape, kernel, strides, dilation,
                                       padding, use_bias):
    minicnn.set_seed(2)
    layer = make_layer(kernel, strides, dilation, padding, use_bias, filters=2)
    layer.input_grad = True
    result = check_layer(layer, distinct(shape), max_entries=40)
    assert result.passed, str(result)


def test_a_backward_that_forgets_an_image_is_caught(recompute, f64, monkeypatch):
    """The check above can fail: a kernel gradient whose col leaves out the last
    image (made as zeros) is reported."""
    real = conv_ops._blocked_backward

    def without_last_image(dy, kernel, cache, *args):
        x_padded = cache.x_padded.copy()
        x_padded[-1] = 0
        return real(dy, kernel, cache._replace(x_padded=x_padded), *args)

    minicnn.set_seed(2)
    layer = make_layer((3, 3), (1, 1), (1, 1), "same", True, filters=2)
    layer.input_grad = True
    x = distinct((5, 5, 4, 2))
    assert check_layer(layer, x, max_entries=40).passed
    monkeypatch.setattr(conv_ops, "_blocked_backward", without_last_image)
    result = check_layer(layer, x, max_entries=40)
    assert result.verdict == "FAILED" and "kernel" in result.where, str(result)


@pytest.mark.parametrize("host_threads", [1, 2])
@pytest.mark.parametrize("block_rows", [1, 20, 1 << 30])
@pytest.mark.parametrize("shape,kernel,strides,dilation,padding,use_bias", CONFIGS, ids=IDS)
def test_recomputed_and_kept_col_agree(backend, monkeypatch, shape, kernel, strides, dilation,
                                       padding, use_bias, block_rows, host_threads):
    x = distinct(shape).astype(np.float32)
    dy = None
    results = []
    threads.set_host_threads(host_threads, min_bytes=0)
    monkeypatch.setattr(conv_ops, "BLOCK_ROWS", block_rows)
    monkeypatch.setattr(conv_ops, "COL_BLOCK_BYTES", 1 << 62)
    for keep in (1 << 40, 0):
        monkeypatch.setattr(conv_ops, "KEEP_COL_BYTES", keep)
        minicnn.set_seed(3)
        layer = make_layer(kernel, strides, dilation, padding, use_bias)
        layer.input_grad = True
        y = layer.run_forward(minicnn.to_device(x), training=True)
        if dy is None:
            dy = np.random.default_rng(5).standard_normal(y.shape).astype(np.float32)
        dx = layer.run_backward(minicnn.to_device(dy))
        results.append([minicnn.to_host(a) for a in (y, dx, *layer.grads.values())])
    threads.set_host_threads(None, min_bytes=threads.DEFAULT_MIN_BYTES)
    for kept, recomputed in zip(*results):
        assert_close(recomputed, kept)


def test_backward_keeps_its_own_copy_of_an_unpadded_input(recompute):
    """A batch source may refill its buffer for the next batch before backward runs."""
    x = distinct((3, 5, 5, 2)).astype(np.float32)
    minicnn.set_seed(4)
    layer = make_layer((2, 2), (1, 1), (1, 1), "valid", True)
    buffer = x.copy()
    y = layer.run_forward(buffer, training=True)
    dy = np.ones_like(y)
    buffer[...] = 7.0  # the next batch arrives in the same buffer
    layer.run_backward(dy)
    d_kernel = layer.grads["kernel"]
    want = np.zeros_like(d_kernel)  # dW[i, j, c, f] = sum over windows of x (dy = 1)
    for i in range(2):
        for j in range(2):
            want[i, j] = x[:, i:i + 4, j:j + 4].sum(axis=(0, 1, 2))[:, None]
    assert_close(d_kernel, want)


def test_blocked_dx_is_the_inside_of_the_padded_blocks(recompute):
    """On the blocked path dx of a padded layer comes out whole and C-ordered (the next
    layer's reshape is a view), equal to a naive col2im that pads the batch and crops it."""
    x = distinct((3, 5, 4, 2)).astype(np.float32)
    minicnn.set_seed(6)
    layer = make_layer((3, 3), (1, 1), (1, 1), "same", False, filters=3)
    layer.input_grad = True
    y = layer.run_forward(x, training=True)
    dy = np.random.default_rng(6).standard_normal(y.shape).astype(np.float32)
    dx = layer.run_backward(dy)
    assert dx.shape == x.shape and dx.flags.c_contiguous
    kernel = layer.params["kernel"].astype(np.float64)
    want = np.zeros((3, 7, 6, 2))
    for i in range(3):
        for j in range(3):
            want[:, i:i + 5, j:j + 4] += dy.astype(np.float64) @ kernel[i, j].T
    assert_close(dx, want[:, 1:-1, 1:-1].astype(np.float32))


def test_im2col_operands_are_made_again(recompute):
    x = distinct((3, 5, 5, 2)).astype(np.float32)
    layer = Conv2D(3, 2, padding="same",
                   bias_initializer=lambda shape, rng: rng.uniform(-1, 1, shape))
    y = layer.run_forward(x, training=True)
    col, matrix = layer.im2col_operands()
    assert_close((col @ matrix).reshape(y.shape), y)


def test_layers_sharing_the_buffers_keep_their_own_gradients(recompute, monkeypatch):
    """Two convolutions of other shapes fill the threads' col buffers in turn; each
    backward makes its own col again, so both match the kept-col results."""
    x_a = distinct((3, 6, 6, 2)).astype(np.float32)
    x_b = distinct((3, 6, 6, 3), np.random.default_rng(1)).astype(np.float32)
    results = {}
    for keep in (1 << 40, 0):
        monkeypatch.setattr(conv_ops, "KEEP_COL_BYTES", keep)
        minicnn.set_seed(5)
        a = make_layer((3, 3), (1, 1), (1, 1), "same", True, filters=3)
        b = make_layer((2, 2), (1, 1), (1, 1), "valid", False, filters=4)
        a.input_grad = b.input_grad = True
        y_a, y_b = a.run_forward(x_a, training=True), b.run_forward(x_b, training=True)
        dx_b = b.run_backward(np.ones_like(y_b))
        dx_a = a.run_backward(np.full_like(y_a, 0.5))
        results[keep] = [dx_a, dx_b, *a.grads.values(), *b.grads.values()]
    for kept, shared in zip(results[1 << 40], results[0]):
        assert_close(shared, kept)


def test_each_thread_has_its_own_buffers():
    like = np.zeros(1, np.float32)
    here = threads.thread_buffer("col", (4, 3), like)
    there = []
    thread = threading.Thread(
        target=lambda: there.append(threads.thread_buffer("col", (4, 3), like)))
    thread.start()
    thread.join()
    assert not np.shares_memory(here, there[0])
    assert np.shares_memory(here, threads.thread_buffer("col", (2, 3), like))  # one thread
    assert not np.shares_memory(here, threads.thread_buffer("dcol", (4, 3), like))


def test_blas_threads_are_given_back(recompute):
    lib = blas.library()
    before = lib.get_num_threads() if lib is not None else None
    seen = []
    real = conv_ops._block_col

    def watching(*args):  # the BLAS threads while the blocks run
        seen.append(lib.get_num_threads() if lib is not None else None)
        return real(*args)

    x = distinct((4, 5, 5, 2)).astype(np.float32)
    layer = make_layer((3, 3), (1, 1), (1, 1), "same", True)
    layer.input_grad = True
    conv_ops._block_col = watching
    try:
        layer.run_backward(np.ones_like(layer.run_forward(x, training=True)))
    finally:
        conv_ops._block_col = real
    if lib is not None:
        assert lib.get_num_threads() == before
        if lib.parallel == blas.PTHREADS:
            assert set(seen) == {1}  # single-threaded inside, two host threads splitting


def test_over_batch_inside_a_part_runs_whole(two_threads):
    calls = []

    def outer(part):
        threads.over_batch(lambda inner: calls.append((part.start, inner)), np.zeros((4, 2)))
    threads.over_batch(outer, np.zeros((4, 2)))
    assert sorted((start, s.start, s.stop) for start, s in calls) == [(0, 0, 4), (2, 0, 4)]


def test_blocks_hold_a_col_of_about_col_block_bytes():
    """A block holds the whole images whose col (kh*kw*c_in columns, one more with a
    bias) makes up to COL_BLOCK_BYTES (4 MB), never more than BLOCK_ROWS (4096) output
    pixels, and at least one image."""
    assert (conv_ops.COL_BLOCK_BYTES, conv_ops.BLOCK_ROWS) == (4 << 20, 4096)

    def images(c_in: int, out_hw=(15, 15), bias=False, itemsize=4, filters=64) -> int:
        return conv_ops._Geometry((3, 3), (1, 1), out_hw, (1, 1), bias, filters, c_in,
                                  itemsize).images_per_block()
    # the fast recipe's im2col layers: conv1_1, conv1_2 and conv2_1, conv3_2 (and the
    # kernel gradients of conv2_2 and conv3_1 at 7x7)
    assert images(24, (31, 31)) == 4
    assert images(64) == images(64, filters=256) == 8  # the filters do not count
    assert images(256, (7, 7)) == 9 and images(256, (3, 3)) == 50
    assert images(64, itemsize=8) == 4  # float64: half the rows
    # one pixel an image: the block is the rows themselves, the bias column counted
    assert images(63, (1, 1)) == (4 << 20) // (567 * 4) == 1849
    assert images(63, (1, 1), bias=True) == (4 << 20) // (568 * 4) == 1846
    assert images(1, (8, 8)) == 4096 // 64  # a narrow col: BLOCK_ROWS caps
    assert images(256, (64, 64)) == 1  # at least one image, however large


@pytest.mark.parametrize("host_threads", [1, 2])
def test_blocks_limited_by_bytes_agree_with_a_kept_col(monkeypatch, host_threads):
    """With COL_BLOCK_BYTES the limit (a col of 2 images of this layer, BLOCK_ROWS
    unbounded), the blocks hold 2 images (a last one may hold fewer), and forward and
    backward in float64 give what one kept col gives."""
    minicnn.set_floatx("float64")
    threads.set_host_threads(host_threads, min_bytes=0)
    sizes = []
    block_col = conv_ops._block_col

    def recording(x_padded, start, stop, g):
        sizes.append(stop - start)
        return block_col(x_padded, start, stop, g)
    monkeypatch.setattr(conv_ops, "_block_col", recording)
    monkeypatch.setattr(conv_ops, "BLOCK_ROWS", 1 << 30)
    monkeypatch.setattr(conv_ops, "COL_BLOCK_BYTES", 2 * 5 * 6 * (9 * 3 + 1) * 8)
    try:
        x = distinct((7, 5, 6, 3))
        dy = np.random.default_rng(5).standard_normal((7, 5, 6, 3))
        results = []
        for keep in (1 << 40, 0):
            monkeypatch.setattr(conv_ops, "KEEP_COL_BYTES", keep)
            minicnn.set_seed(3)
            layer = make_layer(3, (1, 1), (1, 1), "same", True)
            layer.input_grad = True
            y = layer.run_forward(minicnn.to_device(x), training=True)
            dx = layer.run_backward(minicnn.to_device(dy))
            results.append([minicnn.to_host(a) for a in (y, dx, *layer.grads.values())])
    finally:
        threads.set_host_threads(None, min_bytes=threads.DEFAULT_MIN_BYTES)
    assert sizes and max(sizes) == 2 and sum(sizes) == 2 * 7  # forward's and backward's
    for kept, blocked in zip(*results):
        np.testing.assert_allclose(blocked, kept, rtol=1e-10, atol=1e-10)
