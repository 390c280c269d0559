"""Element-wise ops, fast: each a GPU kernel beside its NumPy twin.

    dropout:                y = x * m,  m = (u >= rate) / (1 - rate);  dx = dy * m
    SGD step:               w -= lr * g + s * w      (s: a weight decay's shrink, often 0)
    softmax cross-entropy:  p = softmax(z),  loss = -sum(t * log p) / N

On a GPU each is one launch instead of several; on the host the twins run,
dropout's split over the batch across the host's threads.
"""
from __future__ import annotations

from typing import Callable

from minicnn import backend
from minicnn.backend import Array
from minicnn.ops.kernels import Kernel, kernel
from minicnn.ops.threads import over_batch

# Mask and product in one pass from the uniform draws u (the twin is dropout_forward's).
DROPOUT = Kernel(
    name="minicnn_dropout",
    in_params="T u, T x, T rate, T scale",
    out_params="T y, T mask",
    operation="mask = u >= rate ? scale : (T)0; y = x * mask;")

# w -= lr * g + s * w in one pass (the twin is sgd_update's NumPy steps).
SGD_UPDATE = Kernel(
    name="minicnn_sgd_update",
    in_params="T g, T lr, T s",
    out_params="T w",
    operation="w -= lr * g + s * w;")

# One thread per row n of the logits (K classes): the row's loss and its softmax,
# in the same steps as the NumPy twin (softmax_cross_entropy's).
SOFTMAX_CROSS_ENTROPY = Kernel(
    name="minicnn_softmax_cross_entropy",
    in_params="raw T z, raw T t, int32 K",
    out_params="T loss, raw T p",
    operation="""
const ptrdiff_t row = i * K;
T m = z[row];
for (int k = 1; k < K; ++k) m = z[row + k] > m ? z[row + k] : m;
T sum = 0;
for (int k = 0; k < K; ++k) sum += exp(z[row + k] - m);
const T log_sum = log(sum);
T l = 0;
for (int k = 0; k < K; ++k) {
  const T log_p = z[row + k] - m - log_sum;
  p[row + k] = exp(log_p);
  l -= t[row + k] * log_p;
}
loss = l;
""")


def dropout_forward(x: Array, u: Array, rate: float) -> tuple[Array, Array]:
    """(y, m): m = (u >= rate) / (1 - rate) and y = x * m, from uniform draws u."""
    scale = x.dtype.type(1.0 / (1.0 - rate))
    xp = backend.get_array_module(x)
    y, mask = xp.empty_like(x), xp.empty_like(x)
    gpu = kernel(DROPOUT, x)
    if gpu is not None:
        gpu(u, x, x.dtype.type(rate), scale, y, mask)
        return y, mask

    def drop(images: slice) -> None:  # over_batch runs the images in parallel parts
        xp.multiply(u[images] >= rate, scale, out=mask[images])
        xp.multiply(x[images], mask[images], out=y[images])
    over_batch(drop, x)
    return y, mask


def dropout_backward(dy: Array, mask: Array) -> Array:
    """dx = dy * m."""
    xp = backend.get_array_module(dy)
    dx = xp.empty_like(dy)
    over_batch(lambda images: xp.multiply(dy[images], mask[images], out=dx[images]), dy)
    return dx


def sgd_update(param: Array, grad: Array, lr: float, scratch: Callable[[], Array],
               shrink: float = 0.0) -> None:
    """w -= lr * g + shrink * w, in place (shrink: a weight decay's, 0 without one).
    ``scratch()`` returns a work array of w's shape; it is
    called only on the host, where NumPy has no fused axpy (w -= lr*g would allocate
    lr*g every step): g is scaled into it, then subtracted in place."""
    gpu = kernel(SGD_UPDATE, param)
    if gpu is not None:  # one launch per parameter instead of two
        gpu(grad, param.dtype.type(lr), param.dtype.type(shrink), param)
        return
    step = scratch()
    backend.get_array_module(param).multiply(grad, lr, out=step)  # a Python float keeps float32
    if shrink:
        step += param * shrink
    param -= step


def softmax_cross_entropy(logits: Array, targets: Array) -> tuple[Array, Array]:
    """(loss, p): p = softmax(z) row by row and loss = -sum(t * log p) / N, with
    log p = z - m - log sum exp(z - m) and m the row maximum (nothing overflows)."""
    xp = backend.get_array_module(logits)
    gpu = kernel(SOFTMAX_CROSS_ENTROPY, logits)
    if gpu is not None:  # one launch instead of about ten
        n, k = logits.shape
        rows, p = xp.empty(n, dtype=logits.dtype), xp.empty((n, k), dtype=logits.dtype)
        gpu(xp.ascontiguousarray(logits), xp.ascontiguousarray(targets, dtype=logits.dtype),
            k, rows, p)
        return rows.sum() / n, p
    shifted = logits - logits.max(axis=1, keepdims=True)
    e = xp.exp(shifted)
    sums = e.sum(axis=1, keepdims=True)
    log_p = shifted - xp.log(sums)
    return -(targets * log_p).sum() / logits.shape[0], e / sums
