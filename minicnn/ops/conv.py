"""The convolution's products, fast: one matrix product over im2col each way.

    y  = [col 1] @ [W; b]                  [dW; db] = [col 1]^T @ dy
    dx = col2im(dy @ W^T)

A dilation (dh, dw) changes only where im2col reads and col2im adds: the tap
(i, j) sits at pixel offset (i*dh, j*dw) of its window (see ``windows``).

The bias rides along in the products: col gets a last column of ones and W a
last row holding b, so each line is one BLAS call and no extra pass over the
output adds b or sums dy (for the first layer's 29 MB output such a pass costs
about as much as the product itself).

col2im adds each kernel offset's columns back onto its window, so on the host
dx is made one offset at a time, dy @ W[i, j]^T, added as soon as it is made;
on a GPU all of dcol is one product and ``windows.col2im`` one kernel.

col lives in a ``Workspace`` the layer keeps from step to step: a fresh 50 MB
col every step would cost page faults each time.

Training keeps what backward needs. A small col is kept whole. On the host, a
col over ``KEEP_COL_BYTES`` is not: col is kh*kw times the input (2.9 GB in all
for the fast recipe's six 3x3 convolutions at batch 1024), so the cache keeps
the padded input, and backward makes col again (one more copy of the input)
into the same memory forward used: one scratch col per thread, as large as the
largest, shared by all the layers (``scratch_col``). Only one layer works at a
time in a thread, and each refills it before its product, so sharing it is safe.
benchmarks/bench_conv_blocking.py measures both ways (docs/performance.md).
"""
from __future__ import annotations

import threading
from typing import NamedTuple

from minicnn import backend
from minicnn.backend import Array
from minicnn.ops import windows as win

IMAGES_PER_BLOCK = 16  # images per im2col block at inference (see conv2d_forward)
KEEP_COL_BYTES = 64 << 20  # training keeps col up to this size; above it, the input
_scratch = threading.local()  # each thread's shared col memory (scratch_col)


class ConvCache(NamedTuple):
    """What backward needs from forward: col, or (for a big col on the host) the
    padded input to make col again."""
    col: Array | None               # im2col(x_padded), with a ones column when there is a bias
    matrix: Array                   # [W; b], the forward product's right operand
    padded_shape: tuple[int, ...]   # x's shape after padding
    strides: tuple[int, int]
    pads: tuple[tuple[int, int], tuple[int, int]]
    out_hw: tuple[int, int]
    dilation: tuple[int, int] = (1, 1)
    x_padded: Array | None = None   # set instead of col when col was too big to keep
    kernel_hw: tuple[int, int] = (0, 0)


class Workspace:
    """Work arrays kept from step to step, one per name and shape (training and
    inference batches differ); the oldest are dropped beyond a few."""

    SIZE = 6

    def __init__(self) -> None:
        self._arrays: dict[tuple, Array] = {}

    def get(self, name: str, shape: tuple[int, ...], like: Array,
            ones_column: bool = False) -> Array:
        """An uninitialised array of ``shape`` and like's dtype and device (with its
        last column set to 1 once, when it is made, if ``ones_column``)."""
        key = (name, shape, like.dtype, type(like), ones_column)
        buf = self._arrays.pop(key, None)
        if buf is None:
            buf = backend.get_array_module(like).empty(shape, dtype=like.dtype)
            if ones_column:
                buf[:, -1] = 1  # im2col never writes that column
        self._arrays[key] = buf  # now the most recently used
        while len(self._arrays) > self.SIZE:
            del self._arrays[next(iter(self._arrays))]
        return buf


def weight_matrix(kernel: Array, bias: Array | None) -> Array:
    """[W; b]: the kernel as a (kh*kw*c_in, filters) matrix, the bias as an extra last row."""
    w = kernel.reshape(-1, kernel.shape[-1])
    if bias is None:
        return w
    return backend.get_array_module(w).concatenate([w, bias.reshape(1, -1)])


def conv2d_forward(x: Array, kernel: Array, bias: Array | None, strides: tuple[int, int],
                   padding: str, keep_cache: bool, workspace: Workspace,
                   dilation: tuple[int, int] = (1, 1)) -> tuple[Array, ConvCache | None]:
    """y = [col 1] @ [W; b], reshaped to (N, OH, OW, filters); the cache if asked."""
    xp = backend.get_array_module(x)
    n, h, w, c = x.shape
    kh, kw, _, f = kernel.shape
    span_h, span_w = win.dilated(kh, dilation[0]), win.dilated(kw, dilation[1])
    pads = (win.padding_amounts(h, span_h, strides[0], padding),
            win.padding_amounts(w, span_w, strides[1], padding))
    oh, ow = (win.output_length(h, span_h, strides[0], padding),
              win.output_length(w, span_w, strides[1], padding))
    x_padded = win.pad(x, pads)
    k, rows = kh * kw * c, oh * ow  # col's columns (before the ones), col's rows per image
    matrix = weight_matrix(kernel, bias)
    y = xp.empty((n * rows, f), dtype=x.dtype)
    # Backward needs all of col; a big one (host) is made in the thread's scratch
    # and made again there by backward. Inference on the host goes a few images at a
    # time through one small col that is still in cache when the product reads it
    # (a batch of 256 would otherwise need 400 MB). A GPU has the memory and wants
    # few, large launches: one block, kept.
    on_device = backend.is_device_array(x)
    keep_col = keep_cache and (on_device or n * rows * (k + 1) * x.dtype.itemsize
                               <= KEEP_COL_BYTES)
    if keep_cache and not keep_col:
        col = scratch_col(n * rows, k, bias is not None, x)
    else:
        block = n if keep_col or on_device else min(n, IMAGES_PER_BLOCK)
        col = workspace.get("col", (block * rows, k + int(bias is not None)), x,
                            ones_column=bias is not None)
    block = col.shape[0] // rows
    for start in range(0, n, block):
        stop = min(start + block, n)
        part = col[:(stop - start) * rows]
        win.im2col(x_padded[start:stop], (kh, kw), strides, (oh, ow), out=part[:, :k],
                   dilation=dilation)
        xp.matmul(part, matrix, out=y[start * rows:stop * rows])
    cache = None
    if keep_cache:
        # x_padded must outlive this step's input buffer (a batch source may reuse it)
        kept_input = None if keep_col else (x_padded if x_padded is not x else x.copy())
        cache = ConvCache(col if keep_col else None, matrix, x_padded.shape, strides, pads,
                          (oh, ow), dilation, kept_input, (kh, kw))
    return y.reshape(n, oh, ow, f), cache


def scratch_col(rows: int, k: int, ones: bool, like: Array) -> Array:
    """A (rows, k [+ 1]) col in this thread's scratch memory, which grows to the largest
    asked for and is shared by every layer; with ``ones`` its last column is set to 1."""
    width = k + int(ones)
    flat = getattr(_scratch, "flat", None)
    if flat is None or flat.size < rows * width or flat.dtype != like.dtype:
        _scratch.flat = flat = None  # let the old one go before the new one is made
        _scratch.flat = flat = backend.get_array_module(like).empty(rows * width,
                                                                    dtype=like.dtype)
    col = flat[:rows * width].reshape(rows, width)
    if ones:
        col[:, -1] = 1  # another layer may have written there
    return col


def release_scratch() -> None:
    """Free this thread's scratch col (the next big training convolution makes it again)."""
    _scratch.flat = None


def _make_col(cache: ConvCache, has_bias: bool, out: Array | None = None) -> Array:
    """[col 1] of the whole batch again, from the padded input the cache keeps."""
    (kh, kw), c = cache.kernel_hw, cache.x_padded.shape[-1]
    k = kh * kw * c
    rows = cache.x_padded.shape[0] * cache.out_hw[0] * cache.out_hw[1]
    if out is None:
        out = backend.get_array_module(cache.x_padded).empty(
            (rows, k + int(has_bias)), dtype=cache.x_padded.dtype)
        if has_bias:
            out[:, -1] = 1
    win.im2col(cache.x_padded, (kh, kw), cache.strides, cache.out_hw, out=out[:, :k],
               dilation=cache.dilation)
    return out


def full_col(cache: ConvCache, has_bias: bool) -> Array:
    """The forward product's left operand [col 1] (a new array when the cache does not
    hold it, made again from the padded input)."""
    return cache.col if cache.col is not None else _make_col(cache, has_bias)


def _matrix_grad(dy: Array, cache: ConvCache, k: int, has_bias: bool) -> Array:
    """[dW; db] = [col 1]^T @ dy, as (dy^T [col 1])^T: the same numbers, but BLAS is far
    faster when the long axis (N*OH*OW) is the inner one of both operands. A col the
    cache does not hold is made again in the thread's scratch."""
    col = cache.col
    if col is None:
        col = _make_col(cache, has_bias, scratch_col(dy.shape[0], k, has_bias, dy))
    return (dy.T @ col).T  # a transposed view: copied into the params' layout


def conv2d_backward(dy: Array, kernel: Array, has_bias: bool, cache: ConvCache,
                    input_grad: bool, workspace: Workspace
                    ) -> tuple[Array | None, Array, Array | None]:
    """(dx, dW, db): [dW; db] = [col 1]^T @ dy and dx = col2im(dy @ W^T) (None unless
    ``input_grad``); db is None without a bias."""
    xp = backend.get_array_module(dy)
    kh, kw, c_in, f = kernel.shape
    n, oh, ow, _ = dy.shape
    dy = dy.reshape(-1, f)
    k = kh * kw * c_in
    d_matrix = _matrix_grad(dy, cache, k, has_bias)
    d_kernel = xp.ascontiguousarray(d_matrix[:k]).reshape(kernel.shape)
    d_bias = xp.ascontiguousarray(d_matrix[k]) if has_bias else None
    if not input_grad:
        return None, d_kernel, d_bias
    if backend.is_device_array(dy):
        # On a GPU the whole dcol is cheap to hold, and one product plus one
        # col2im kernel beat 2*kh*kw small launches.
        dx = win.col2im(dy @ kernel.reshape(k, f).T, cache.padded_shape, (kh, kw),
                        cache.strides, cache.out_hw, cache.dilation)
    else:
        # On the host, one kernel offset (i, j) at a time: dcol's columns for (i, j)
        # are dy @ W[i, j]^T, added onto the window at (i, j) right away. The same
        # sums as col2im, but the whole dcol (N*OH*OW, kh*kw*c_in), 50 MB for the
        # tutorial's second layer, is never written and read back.
        dx = xp.zeros(cache.padded_shape, dtype=dy.dtype)
        part = workspace.get("dcol part", (dy.shape[0], c_in), dy)
        dh, dw = cache.dilation
        for i in range(kh):
            for j in range(kw):
                xp.matmul(dy, kernel[i, j].T, out=part)
                win.add_into(win.window(dx, i * dh, j * dw, cache.strides, cache.out_hw),
                             part.reshape(n, oh, ow, c_in))
    return win.crop(dx, cache.pads), d_kernel, d_bias
