"""The GPU kernels against their NumPy twins, on the CPU.

Each ``ops.kernels.Kernel`` (im2col, col2im, max-pool forward and backward, fused
softmax-cross-entropy, dropout) is compiled for the CPU from its own CUDA
source by tests/kernel_emulator.py and run through the layer code on the strict
backend; the same call on the numpy backend runs the twin. The whole suite's
"kernels" backend (conftest) also runs every naive-loop reference and gradient
check through them; this file adds the direct twin comparisons, proves the
kernel path is the one taken, and shows a wrong kernel is caught.

Where a kernel and its twin do the same arithmetic in the same order (copies,
maxima, dropout's one product, max-pool backward's sums) the results must agree
bit for bit, on the CPU build and on a GPU alike; where the order of a sum
differs (col2im, the convolution's device path, the loss's exp and log) they
agree up to rounding.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import minicnn
from minicnn import backend as B
from minicnn.layers import Conv2D, Dense, Dropout, MaxPooling2D
from minicnn.losses import SoftmaxCrossEntropy
from minicnn.ops import elementwise
from minicnn.ops import kernels as K
from minicnn.ops import pooling as pooling_ops
from minicnn.ops import windows as win
from minicnn.ops.elementwise import SOFTMAX_CROSS_ENTROPY
from minicnn.optimizers import SGD

from conftest import assert_close, distinct

WINDOWS = [  # (H, W, C, kernel, strides)
    ((7, 6, 3), (3, 2), (1, 1)),
    ((9, 8, 2), (3, 3), (2, 3)),
    ((6, 6, 4), (2, 2), (2, 2)),
    ((5, 7, 1), (1, 1), (1, 1)),
    ((8, 8, 5), (3, 3), (1, 2)),
]


class KernelRunner:
    """Runs a function where the kernels run: the strict backend with the emulated
    kernels ("kernels"), or CuPy on a GPU ("cupy"); returns host arrays."""

    def __init__(self, name: str, emulator) -> None:
        self.name, self.emulator = name, emulator
        self._before: dict[str, int] = {}

    def __call__(self, fn, *host_arrays):
        self._before = dict(self.emulator.calls) if self.emulator else {}
        if self.emulator:
            K.set_kernel_emulator(self.emulator)
        try:
            with minicnn.use_backend("strict" if self.emulator else "cupy"):
                out = fn(*(B.to_device(a) for a in host_arrays))
                out = tuple(B.to_host(o) for o in out) if isinstance(out, tuple) else B.to_host(out)
        finally:
            K.set_kernel_emulator(None)
        return out

    def ran(self, *names: str) -> bool:
        """Each named kernel ran exactly once in the last call (not countable on CuPy)."""
        if not self.emulator:
            return True
        return all(self.emulator.calls.get(k, 0) == self._before.get(k, 0) + 1 for k in names)


@pytest.fixture(params=["kernels", "cupy"])
def on_kernels(request):
    if request.param == "cupy":
        if not B.cupy_available():
            reason = "CuPy or a GPU is not available: the kernels ran only in the CPU build"
            print(reason)
            pytest.skip(reason)
        return KernelRunner("cupy", None)
    return KernelRunner("kernels", request.getfixturevalue("kernel_emulator"))


def _out_hw(shape, kernel, strides):
    return tuple((s - k) // st + 1 for s, k, st in zip(shape[:2], kernel, strides))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,kernel,strides", WINDOWS)
def test_im2col_kernel_matches_twin(on_kernels, shape, kernel, strides, dtype):
    x = distinct((3, *shape)).astype(dtype)
    out_hw = _out_hw(shape, kernel, strides)
    got = on_kernels(lambda a: win.im2col(a, kernel, strides, out_hw), x)
    assert on_kernels.ran("minicnn_im2col")
    np.testing.assert_array_equal(got, win.im2col(x, kernel, strides, out_hw))  # a copy: exact


def test_im2col_kernel_writes_into_a_column_slice_of_a_wider_buffer(on_kernels):
    """Conv2D hands im2col the first columns of a buffer whose last column holds ones."""
    x = distinct((2, 6, 5, 3))
    kernel, strides = (3, 3), (1, 1)
    out_hw = _out_hw(x.shape[1:], kernel, strides)
    k = 27

    def into_buffer(a):
        xp = B.get_array_module(a)
        buf = xp.full((2 * out_hw[0] * out_hw[1], k + 1), 7.0)
        win.im2col(a, kernel, strides, out_hw, out=buf[:, :k])
        return buf
    got = on_kernels(into_buffer, x)
    np.testing.assert_array_equal(got[:, :k], win.im2col(x, kernel, strides, out_hw))
    assert (got[:, k] == 7.0).all()  # the kernel touched only its own columns


@pytest.mark.parametrize("shape,kernel,strides", WINDOWS)
def test_col2im_kernel_matches_twin(on_kernels, shape, kernel, strides):
    x_shape = (2, *shape)
    out_hw = _out_hw(shape, kernel, strides)
    col = distinct((2 * out_hw[0] * out_hw[1], kernel[0] * kernel[1] * shape[2]))
    got = on_kernels(lambda c: win.col2im(c, x_shape, kernel, strides, out_hw), col)
    assert on_kernels.ran("minicnn_col2im")
    # the kernel sums each pixel's windows in another order than the twin's adds
    assert_close(got, win.col2im(col, x_shape, kernel, strides, out_hw))


POOLS = [  # (input H, W, C), pool, strides, padding
    ((6, 6, 3), (2, 2), None, "valid"),
    ((7, 5, 2), (2, 2), None, "valid"),      # odd sizes: the last row/column gets no gradient
    ((7, 7, 2), (3, 3), (2, 2), "valid"),    # overlapping windows
    ((5, 6, 2), (3, 2), (2, 1), "same"),     # padding never wins
]


@pytest.mark.parametrize("shape,pool,strides,padding", POOLS)
def test_max_pool_kernels_match_twin_forward_and_backward(on_kernels, shape,
                                                          pool, strides, padding):
    x = distinct((2, *shape))
    dy_shape = MaxPooling2D(pool, strides, padding).compute_output_shape((2, *shape))
    dy = distinct(dy_shape, np.random.default_rng(1))

    def both(a, g):
        layer = MaxPooling2D(pool, strides, padding)
        y = layer.forward(a, training=True)
        return y, layer.backward(g)
    y, dx = on_kernels(both, x, dy)
    assert on_kernels.ran("minicnn_max_pool", "minicnn_max_pool_backward")
    y_ref, dx_ref = both(x, dy)
    # Exact on any machine: y is one of the inputs; dx sums the gradients of the
    # windows a pixel won, kernel and twin both from 0 in window-offset order (the
    # twin's other terms are exact zeros), so the same additions in the same order.
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(dx, dx_ref)


def test_max_pool_kernel_gives_a_tie_to_the_first_offset(on_kernels):
    x = np.zeros((1, 2, 2, 1))
    dy = np.ones((1, 1, 1, 1))

    def both(a, g):
        layer = MaxPooling2D((2, 2))
        layer.forward(a, training=True)
        return layer.backward(g)
    np.testing.assert_array_equal(on_kernels(both, x, dy)[0, :, :, 0], [[1, 0], [0, 0]])


@pytest.mark.parametrize("pool,strides", [((2, 2), None), ((2, 2), (1, 1))])
def test_max_pool_kernel_passes_a_nan_on_like_the_twin(on_kernels, pool, strides):
    """A NaN must reach the loss (where training stops), not vanish in a max."""
    x = distinct((1, 4, 4, 1))
    x[0, 1, 1, 0] = np.nan

    def forward(a):
        return MaxPooling2D(pool, strides).forward(a, training=False)
    got, ref = on_kernels(forward, x), forward(x)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    assert np.isnan(got).any()
    np.testing.assert_array_equal(got[~np.isnan(got)], ref[~np.isnan(ref)])


@pytest.mark.parametrize("sparse", [False, True])
def test_softmax_cross_entropy_kernel_matches_twin(on_kernels, sparse):
    rng = np.random.default_rng(3)
    z = rng.standard_normal((7, 10)) * 30  # large logits: the row max must be taken out
    z[0, 3] = 1e4
    labels = rng.integers(0, 10, size=(7, 1))
    t = labels if sparse else np.eye(10)[labels[:, 0]]

    def loss_and_grad(logits, target):
        loss = SoftmaxCrossEntropy(sparse=sparse)
        value = loss.forward(logits, target)
        return value, loss.backward()
    value, grad = on_kernels(loss_and_grad, z, t)
    assert on_kernels.ran("minicnn_softmax_cross_entropy")
    value_ref, grad_ref = loss_and_grad(z, t)
    assert np.isfinite(value)
    np.testing.assert_allclose(value, value_ref, rtol=1e-12)
    np.testing.assert_allclose(grad, grad_ref, rtol=1e-10, atol=1e-15)


def test_dropout_kernel_matches_twin_for_the_same_draws(on_kernels):
    x = distinct((4, 5, 6, 3)).astype(np.float32)
    dy = distinct(x.shape, np.random.default_rng(2)).astype(np.float32)

    def both(a, g):
        layer = Dropout(0.3, seed=11)
        layer.build(a.shape)
        return layer.forward(a, training=True), layer.backward(g)
    y, dx = on_kernels(both, x, dy)
    assert on_kernels.ran("minicnn_dropout")
    assert y.dtype == dx.dtype == np.float32
    kept = y != 0
    scale = np.float32(1 / 0.7)
    np.testing.assert_array_equal(y[kept], x[kept] * scale)
    np.testing.assert_array_equal(dx, np.where(kept, dy * scale, 0))
    assert 0.2 < 1 - kept.mean() < 0.4
    # exact (here and above): kernel and twin both make y = x * scale, one product
    if on_kernels.name == "kernels":  # the strict generator draws what numpy's draws
        y_ref, dx_ref = both(x, dy)
        np.testing.assert_array_equal(y, y_ref)
        np.testing.assert_array_equal(dx, dx_ref)


def test_sgd_update_kernel_matches_twin(on_kernels):
    def two_updates(x):
        minicnn.set_seed(0)
        layer = Dense(5, input_shape=(4,))
        layer.build((None, 4))
        xp = B.get_array_module(x)
        sgd = SGD(lr=0.05, decay=0.5)
        for _ in range(2):
            layer.grads = {k: xp.ones_like(v) * x[0, 0] for k, v in layer.params.items()}
            sgd.apply([layer])
        return layer.params["kernel"], layer.params["bias"]
    x = np.full((1, 1), 0.3, dtype=np.float32)
    got = on_kernels(two_updates, x)
    ref = two_updates(x)
    for g, r in zip(got, ref):
        np.testing.assert_allclose(g, r, rtol=1e-6, atol=1e-7)
        assert g.dtype == np.float32
    if on_kernels.emulator:  # two updates of two parameters
        assert on_kernels.emulator.calls["minicnn_sgd_update"] - on_kernels._before.get(
            "minicnn_sgd_update", 0) == 4


def test_conv2d_backward_on_a_device_uses_one_product_and_col2im(on_kernels):
    x = distinct((2, 7, 6, 3))
    dy = distinct((2, 5, 4, 4), np.random.default_rng(5))

    def step(a, g):
        minicnn.set_seed(0)
        layer = Conv2D(4, (3, 3))
        y = layer.forward(a, training=True)
        dx = layer.backward(g)
        return y, dx, layer.grads["kernel"], layer.grads["bias"]
    with minicnn.use_floatx("float64"):
        got = on_kernels(step, x, dy)
        assert on_kernels.ran("minicnn_col2im")
        ref = step(x, dy)
    for g, r in zip(got, ref):  # dx: one product and col2im against offset by offset
        assert_close(g, r)


def test_tutorial_like_model_trains_the_same_on_kernels(kernel_emulator):
    """One training step of a small conv net: the kernels path and NumPy agree."""
    from minicnn.layers import Flatten
    from minicnn.models import Sequential

    def run():
        minicnn.set_seed(0)
        model = Sequential([Conv2D(8, (3, 3), activation="relu", input_shape=(10, 10, 3)),
                            MaxPooling2D((2, 2)), Dropout(0.3),
                            Conv2D(6, (3, 3), activation="relu"), MaxPooling2D((2, 2)),
                            Flatten(), Dense(10, activation="softmax")])
        model.compile(loss="categorical_crossentropy", optimizer=SGD(lr=0.05, decay=1e-4),
                      metrics=["accuracy"])
        rng = np.random.default_rng(0)
        x = rng.random((16, 10, 10, 3), dtype=np.float32)
        y = np.eye(10, dtype=np.float32)[rng.integers(0, 10, 16)]
        history = model.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=True)
        return history.history["loss"], B.to_host(model.layers[0].params["kernel"])
    loss_ref, w_ref = run()
    K.set_kernel_emulator(kernel_emulator)
    calls = dict(kernel_emulator.calls)
    try:
        with minicnn.use_backend("strict"):
            loss, w = run()
    finally:
        K.set_kernel_emulator(None)
    used = {k for k, v in kernel_emulator.calls.items() if v > calls.get(k, 0)}
    assert used == {"minicnn_im2col", "minicnn_col2im", "minicnn_max_pool",
                    "minicnn_max_pool_backward", "minicnn_dropout",
                    "minicnn_softmax_cross_entropy", "minicnn_sgd_update"}
    np.testing.assert_allclose(loss, loss_ref, rtol=1e-5)
    np.testing.assert_allclose(w, w_ref, rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------- a wrong kernel is caught
@pytest.mark.parametrize("module,name,old,new", [
    (win, "COL2IM", "window_holding(py, ky * DH, SH, OH)",
     "window_holding(py, ky * DH, 1, OH)"),                       # forgets the stride
    (win, "IM2COL", "oy * SH + ky", "oy + ky"),                  # wrong row
    (pooling_ops, "MAX_POOL", "v > best", "v >= best"),       # last winner on ties
    (elementwise, "DROPOUT", "u >= rate", "u < rate"),         # keeps the dropped
    (elementwise, "SGD_UPDATE", "w -= lr", "w += lr"),      # climbs the loss
])
def test_a_wrong_kernel_is_caught(monkeypatch, on_kernels, module, name, old, new):
    spec = getattr(module, name)
    assert old in spec.operation
    x = distinct((2, 6, 6, 2))
    x[0, 0, 0, 0] = x[0, 0, 1, 0] = 5.0  # a tie, for the pooling case

    def forward_backward(a):
        if name == "SGD_UPDATE":
            minicnn.set_seed(0)  # the same weights in both runs
            layer = Dense(3, input_shape=(2,))
            layer.build((None, 2))
            layer.grads = {k: B.get_array_module(a).ones_like(v) for k, v in layer.params.items()}
            SGD(lr=0.1).apply([layer])
            return layer.params["kernel"]
        if name in ("COL2IM", "IM2COL"):
            col = win.im2col(a, (3, 3), (2, 2), (2, 2))
            return win.col2im(col, a.shape, (3, 3), (2, 2), (2, 2))
        layer = MaxPooling2D((2, 2)) if name == "MAX_POOL" else Dropout(0.5, seed=1)
        layer.build(a.shape)
        y = layer.forward(a, training=True)
        return layer.backward(y)
    right = on_kernels(forward_backward, x)  # the kernel as written agrees with its twin...
    np.testing.assert_allclose(right, forward_backward(x), rtol=1e-6)
    monkeypatch.setattr(module, name, dataclasses.replace(spec, operation=spec.operation.replace(old, new)))
    got = on_kernels(forward_backward, x)     # ...and the broken one does not
    assert not np.allclose(got, forward_backward(x))


def test_a_wrong_softmax_kernel_is_caught(monkeypatch, on_kernels):
    spec = SOFTMAX_CROSS_ENTROPY
    monkeypatch.setattr(elementwise, "SOFTMAX_CROSS_ENTROPY", dataclasses.replace(
        spec, operation=spec.operation.replace("for (int k = 1; k < K", "for (int k = K; k < K")))
    z = np.array([[1.0, 800.0, 2.0]])  # the wrong kernel takes z[0] as the max: exp() overflows
    t = np.array([[0.0, 1.0, 0.0]])

    def value(a, b):
        return SoftmaxCrossEntropy().forward(a, b)
    assert not np.isclose(on_kernels(value, z, t), value(z, t))


# ---------------------------------------------------------------- the emulator itself
def test_emulator_refuses_arguments_cupy_would_refuse(kernel_emulator):
    run = kernel_emulator(win.IM2COL)
    x = np.zeros((1, 3, 3, 1), dtype=np.float32)
    out = np.zeros((1, 9), dtype=np.float64)
    with pytest.raises(TypeError, match="T is already"):
        run(x, 3, 3, 1, 1, 1, 3, 3, 1, 1, 1, 1, out)
    with pytest.raises(TypeError, match="expected 13 arguments"):
        run(x, out)
    with pytest.raises(ValueError, match="C-contiguous"):
        run(np.zeros((1, 3, 6, 1), np.float32)[:, :, ::2], 3, 3, 1, 1, 1, 3, 3, 1, 1, 1, 1,
            out.astype(np.float32))


def test_use_kernels_false_runs_the_twins_on_the_device(kernel_emulator):
    x = distinct((2, 6, 6, 3))
    K.set_kernel_emulator(kernel_emulator)
    try:
        with minicnn.use_backend("strict"):
            xd = B.to_device(x)
            before = dict(kernel_emulator.calls)
            with K.use_kernels(False):
                off = B.to_host(win.im2col(xd, (3, 3), (1, 1), (4, 4)))
            assert kernel_emulator.calls == before  # nothing ran on the "device" kernels
            on = B.to_host(win.im2col(xd, (3, 3), (1, 1), (4, 4)))
            assert kernel_emulator.calls["minicnn_im2col"] == before.get("minicnn_im2col", 0) + 1
    finally:
        K.set_kernel_emulator(None)
    np.testing.assert_array_equal(on, off)
