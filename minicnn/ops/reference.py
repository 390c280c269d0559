"""The ops as the textbook writes them: plain array code, no speed tricks.

``minicnn.set_ops("reference")`` makes every layer, loss and optimizer call
these instead of the fast ops, so a learner can step through them in a debugger
while a real model trains; the tests check that both give the same numbers.
They take and return what the fast ops do (the caches are the same NamedTuples),
and run on every backend: they ask ``backend.get_array_module`` for the array
module and launch no kernels.

    im2col:   col[(n, oy, ox), (i, j, c)] = x[n, oy*sh + i*dh, ox*sw + j*dw, c]
              (dilation (dh, dw): the taps of a window are dh rows, dw columns apart)
    col2im:   its adjoint, adding each window offset's columns back onto x
    conv2d:   y = col @ W + b;   dW = col^T @ dy,  db = sum of dy,  dx = col2im(dy @ W^T)
    max pool: y = the max over the window offsets, the winner their argmax;
              dx = dy at each winner
    batch norm + activation: y = f(g (x - mu) / sqrt(var + eps) + b), backward
              through f, then through the statistics (ops/normalization.py's formulas)
"""
from __future__ import annotations

from typing import Callable

from minicnn import backend
from minicnn.backend import Array
from minicnn.ops import windows as win
from minicnn.ops.conv import ConvCache, Workspace
from minicnn.ops.normalization import NormCache, activate, check_activation, slope
from minicnn.ops.pooling import PoolCache


def im2col(x: Array, kernel_size: tuple[int, int], strides: tuple[int, int],
           out_hw: tuple[int, int], dilation: tuple[int, int] = (1, 1)) -> Array:
    """(N, H, W, C) -> (N*OH*OW, KH*KW*C): one row per output pixel, one block of C
    columns per kernel tap (i, j), filled from the strided slice at (i*dh, j*dw)."""
    xp = backend.get_array_module(x)
    n, _, _, c = x.shape
    (kh, kw), (oh, ow), (dh, dw) = kernel_size, out_hw, dilation
    col = xp.empty((n, oh, ow, kh, kw, c), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            col[:, :, :, i, j, :] = win.window(x, i * dh, j * dw, strides, out_hw)
    return col.reshape(n * oh * ow, kh * kw * c)


def col2im(col: Array, x_shape: tuple[int, ...], kernel_size: tuple[int, int],
           strides: tuple[int, int], out_hw: tuple[int, int],
           dilation: tuple[int, int] = (1, 1)) -> Array:
    """Adjoint of im2col: each tap's columns added back onto its window of x."""
    xp = backend.get_array_module(col)
    n, _, _, c = x_shape
    (kh, kw), (oh, ow), (dh, dw) = kernel_size, out_hw, dilation
    cols = col.reshape(n, oh, ow, kh, kw, c)
    x = xp.zeros(x_shape, dtype=col.dtype)
    for i in range(kh):
        for j in range(kw):
            win.window(x, i * dh, j * dw, strides, out_hw)[...] += cols[:, :, :, i, j, :]
    return x


def conv2d_forward(x: Array, kernel: Array, bias: Array | None, strides: tuple[int, int],
                   padding: str, keep_cache: bool, workspace: Workspace,
                   dilation: tuple[int, int] = (1, 1)) -> tuple[Array, ConvCache | None]:
    """y = im2col(pad(x)) @ W + b, reshaped to (N, OH, OW, filters). (No workspace.)
    A window spans d*(k-1)+1 pixels per axis: the padding and OH, OW follow from that."""
    n, h, w, _ = x.shape
    kh, kw, _, f = kernel.shape
    span_h, span_w = win.dilated(kh, dilation[0]), win.dilated(kw, dilation[1])
    pads = (win.padding_amounts(h, span_h, strides[0], padding),
            win.padding_amounts(w, span_w, strides[1], padding))
    out_hw = (win.output_length(h, span_h, strides[0], padding),
              win.output_length(w, span_w, strides[1], padding))
    x_padded = win.pad(x, pads)
    col = im2col(x_padded, (kh, kw), strides, out_hw, dilation)
    matrix = kernel.reshape(-1, f)
    y = col @ matrix
    if bias is not None:
        y = y + bias
    cache = (ConvCache(col, matrix, x_padded.shape, strides, pads, out_hw, dilation)
             if keep_cache else None)
    return y.reshape(n, *out_hw, f), cache


def conv2d_backward(dy: Array, kernel: Array, has_bias: bool, cache: ConvCache,
                    input_grad: bool, workspace: Workspace
                    ) -> tuple[Array | None, Array, Array | None]:
    """(dx, dW, db): dW = col^T @ dy, db = sum of dy, dx = col2im(dy @ W^T)."""
    kh, kw, _, f = kernel.shape
    dy = dy.reshape(-1, f)
    d_kernel = (cache.col.T @ dy).reshape(kernel.shape)
    d_bias = dy.sum(axis=0) if has_bias else None
    if not input_grad:
        return None, d_kernel, d_bias
    dcol = dy @ cache.matrix.T
    dx = col2im(dcol, cache.padded_shape, (kh, kw), cache.strides, cache.out_hw,
                cache.dilation)
    return win.crop(dx, cache.pads), d_kernel, d_bias


def max_pool_forward(x: Array, pool_size: tuple[int, int], strides: tuple[int, int],
                     padding: str, keep_cache: bool) -> tuple[Array, PoolCache | None]:
    """Stack the kh*kw window slices on a last axis: y is their max, the winner their
    argmax (the first offset on ties)."""
    xp = backend.get_array_module(x)
    n, h, w, _ = x.shape
    pads = (win.padding_amounts(h, pool_size[0], strides[0], padding),
            win.padding_amounts(w, pool_size[1], strides[1], padding))
    out_hw = (win.output_length(h, pool_size[0], strides[0], padding),
              win.output_length(w, pool_size[1], strides[1], padding))
    x = win.pad(x, pads, value=-xp.inf)  # padding never wins
    ph, pw = pool_size
    stacked = xp.stack([win.window(x, i, j, strides, out_hw)
                        for i in range(ph) for j in range(pw)], axis=-1)
    y = stacked.max(axis=-1)
    if not keep_cache:
        return y, None
    winner = stacked.argmax(axis=-1)  # offset k = i*pw + j
    return y, PoolCache(False, winner, x.shape, pool_size, strides, pads, out_hw)


def max_pool_backward(dy: Array, cache: PoolCache) -> Array:
    """dx: for each offset k, dy added onto the window slice at k where k won."""
    xp = backend.get_array_module(dy)
    dx = xp.zeros(cache.padded_shape, dtype=dy.dtype)
    ph, pw = cache.pool_size
    for i in range(ph):
        for j in range(pw):
            won = cache.winners == i * pw + j
            win.window(dx, i, j, cache.strides, cache.out_hw)[...] += dy * won
    return win.crop(dx, cache.pads)


def dropout_forward(x: Array, u: Array, rate: float) -> tuple[Array, Array]:
    """(y, m): m = (u >= rate) / (1 - rate), y = x * m."""
    mask = (u >= rate).astype(x.dtype) * x.dtype.type(1.0 / (1.0 - rate))
    return x * mask, mask


def dropout_backward(dy: Array, mask: Array) -> Array:
    """dx = dy * m."""
    return dy * mask


def sgd_update(param: Array, grad: Array, lr: float, scratch: Callable[[], Array],
               shrink: float = 0.0) -> None:
    """w -= lr * g + shrink * w, in place. (No scratch array.)"""
    param -= lr * grad + shrink * param


def softmax_cross_entropy(logits: Array, targets: Array) -> tuple[Array, Array]:
    """(loss, p): p = exp(z - m) / sum exp(z - m) with m the row maximum,
    loss = -sum(t * log p) / N."""
    xp = backend.get_array_module(logits)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_p = shifted - xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))
    return -(targets * log_p).sum() / logits.shape[0], xp.exp(log_p)


def batch_norm_act_forward(x: Array, gamma: Array | None, beta: Array | None,
                           mean: Array | None, variance: Array | None, epsilon: float,
                           activation: str, keep_cache: bool
                           ) -> tuple[Array, Array, Array, NormCache | None]:
    """(y, mean, variance, cache): normalize with the batch's statistics (mean None) or
    the given ones, scale, shift, then the activation, one step after another."""
    check_activation(activation)
    xp = backend.get_array_module(x)
    x2 = x.reshape(-1, x.shape[-1])
    if mean is None:
        mean = x2.mean(axis=0)
        variance = ((x2 - mean) ** 2).mean(axis=0)
    inv_std = 1.0 / xp.sqrt(variance + epsilon)
    x_hat = (x2 - mean) * inv_std
    z = x_hat * gamma if gamma is not None else x_hat
    if beta is not None:
        z = z + beta
    y = activate(z.copy(), activation)
    scale = inv_std * gamma if gamma is not None else inv_std
    shift = (beta - mean * scale) if beta is not None else -mean * scale
    cache = NormCache(x2, mean, inv_std, scale, shift, activation) if keep_cache else None
    return y.reshape(x.shape), mean, variance, cache


def batch_norm_act_backward(dy: Array, cache: NormCache, batch_statistics: bool,
                            input_grad: bool) -> tuple[Array | None, Array, Array]:
    """(dx, sum_dz, sum_dzx): through the activation (dz = dy f'(z)), then through the
    normalization."""
    x2, mean, inv_std, scale, shift, activation, _ = cache
    m = x2.shape[0]
    dy2 = dy.reshape(x2.shape)
    x_hat = (x2 - mean) * inv_std
    dz = dy2 * slope(x2 * scale + shift, activation)
    sum_dz, sum_dzx = dz.sum(axis=0), (dz * x_hat).sum(axis=0)
    if not input_grad:
        return None, sum_dz, sum_dzx
    if not batch_statistics:
        return (dz * scale).reshape(dy.shape), sum_dz, sum_dzx
    dx = scale / m * (m * dz - sum_dz - x_hat * sum_dzx)
    return dx.reshape(dy.shape), sum_dz, sum_dzx


def gelu_forward(z: Array, approximate: bool) -> tuple[Array, Array | None]:
    """(y, None): y = z Phi(z), or the tanh form."""
    return activate(z.copy(), "gelu_tanh" if approximate else "gelu"), None


def gelu_backward(dy: Array, z: Array, cdf: Array | None, approximate: bool) -> Array:
    """dz = dy f'(z)."""
    return dy * slope(z, "gelu_tanh" if approximate else "gelu")
