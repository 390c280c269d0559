"""The ops tier: the computations the layers, the loss and the optimizer call.

Each op exists twice, with one signature: fast (``windows``, ``conv``,
``pooling``, ``elementwise``, ``normalization``, ``gelu``: buffers kept from step to step,
host threads, GPU kernels) and plain (``reference``: the textbook's array code).
``special`` holds the erf both use (NumPy has none); ``winograd`` computes
wide 3x3 convolutions for ``conv`` where it pays; ``memory`` keeps the
host memory a step frees for the next one. The functions
below are the one dispatch point: ``set_ops("reference")`` or
``with use_ops("reference"):`` switches the whole library, so a learner can step
through the plain code while a real model trains. Switch between steps, not
between a forward and its backward (each keeps its own cache).

Imports only ``backend`` (and ``strict``) below it; ``kernels`` compiles the
GPU kernels, ``threads`` splits host passes over the batch.
"""
from __future__ import annotations

import contextlib
import types
from typing import Callable, Iterator

from minicnn.backend import Array
from minicnn.ops import conv, elementwise, gelu, normalization, pooling, reference
from minicnn.ops.conv import ConvCache, Workspace
from minicnn.ops.kernels import use_kernels
from minicnn.ops.normalization import NormCache
from minicnn.ops.pooling import PoolCache
from minicnn.ops.threads import host_threads, set_host_threads

FAST = types.SimpleNamespace(
    conv2d_forward=conv.conv2d_forward, conv2d_backward=conv.conv2d_backward,
    max_pool_forward=pooling.max_pool_forward, max_pool_backward=pooling.max_pool_backward,
    dropout_forward=elementwise.dropout_forward, dropout_backward=elementwise.dropout_backward,
    sgd_update=elementwise.sgd_update, softmax_cross_entropy=elementwise.softmax_cross_entropy,
    batch_norm_act_forward=normalization.batch_norm_act_forward,
    batch_norm_act_backward=normalization.batch_norm_act_backward,
    gelu_forward=gelu.gelu_forward, gelu_backward=gelu.gelu_backward)
IMPLEMENTATIONS = {"fast": FAST, "reference": reference}

_state = {"name": "fast", "impl": FAST}


def set_ops(name: str) -> None:
    """Run every op ``"fast"`` (the default) or as the plain ``"reference"`` code."""
    if name not in IMPLEMENTATIONS:
        raise ValueError(f"unknown ops {name!r}: expected one of {', '.join(IMPLEMENTATIONS)}")
    _state["name"], _state["impl"] = name, IMPLEMENTATIONS[name]


def get_ops() -> str:
    return _state["name"]


@contextlib.contextmanager
def use_ops(name: str) -> Iterator[None]:
    """``with use_ops("reference"): ...`` switches the ops for a block."""
    previous = get_ops()
    set_ops(name)
    try:
        yield
    finally:
        set_ops(previous)


def conv2d_forward(x: Array, kernel: Array, bias: Array | None, strides: tuple[int, int],
                   padding: str, keep_cache: bool, workspace: Workspace,
                   dilation: tuple[int, int] = (1, 1)) -> tuple[Array, ConvCache | None]:
    """y = im2col(pad(x)) @ W + b, and the cache backward needs (if ``keep_cache``);
    ``dilation`` spaces the kernel's taps (the cache keeps it for backward)."""
    return _state["impl"].conv2d_forward(x, kernel, bias, strides, padding, keep_cache,
                                         workspace, dilation)


def conv2d_backward(dy: Array, kernel: Array, has_bias: bool, cache: ConvCache,
                    input_grad: bool, workspace: Workspace
                    ) -> tuple[Array | None, Array, Array | None]:
    """(dx, dW, db): dW = col^T @ dy, db = sum of dy, dx = col2im(dy @ W^T) if asked."""
    return _state["impl"].conv2d_backward(dy, kernel, has_bias, cache, input_grad, workspace)


def conv_col(cache: ConvCache, has_bias: bool) -> Array:
    """The last training forward's left operand col (the fast ops end it in a ones
    column when there is a bias), made again when the cache holds only the input."""
    return conv.full_col(cache, has_bias)


def max_pool_forward(x: Array, pool_size: tuple[int, int], strides: tuple[int, int],
                     padding: str, keep_cache: bool) -> tuple[Array, PoolCache | None]:
    """y = the max of each window, and its winners (if ``keep_cache``)."""
    return _state["impl"].max_pool_forward(x, pool_size, strides, padding, keep_cache)


def max_pool_backward(dy: Array, cache: PoolCache) -> Array:
    """dx = dy at each window's winner, zero elsewhere."""
    return _state["impl"].max_pool_backward(dy, cache)


def dropout_forward(x: Array, u: Array, rate: float) -> tuple[Array, Array]:
    """(y, m): m = (u >= rate) / (1 - rate), y = x * m."""
    return _state["impl"].dropout_forward(x, u, rate)


def dropout_backward(dy: Array, mask: Array) -> Array:
    """dx = dy * m."""
    return _state["impl"].dropout_backward(dy, mask)


def sgd_update(param: Array, grad: Array, lr: float, scratch: Callable[[], Array],
               shrink: float = 0.0) -> None:
    """w -= lr * g + shrink * w, in place (``scratch()``: a work array of w's shape, if
    one is needed)."""
    _state["impl"].sgd_update(param, grad, lr, scratch, shrink)


def softmax_cross_entropy(logits: Array, targets: Array) -> tuple[Array, Array]:
    """(loss, p): p = softmax(z) per row, loss = -sum(t * log p) / N."""
    return _state["impl"].softmax_cross_entropy(logits, targets)


def batch_norm_act_forward(x: Array, gamma: Array | None, beta: Array | None,
                           mean: Array | None, variance: Array | None, epsilon: float,
                           activation: str, keep_cache: bool
                           ) -> tuple[Array, Array, Array, NormCache | None]:
    """(y, mean, variance, cache): y = f(gamma (x - mu) / sqrt(var + eps) + beta) per
    channel (the last axis); mean None: the batch's statistics (returned, the variance
    biased). f: "linear", "relu", "gelu" or "gelu_tanh"."""
    return _state["impl"].batch_norm_act_forward(x, gamma, beta, mean, variance, epsilon,
                                                 activation, keep_cache)


def batch_norm_act_backward(dy: Array, cache: NormCache, batch_statistics: bool,
                            input_grad: bool) -> tuple[Array | None, Array, Array]:
    """(dx, sum(dz), sum(dz * x_hat)) with dz = dy f'(z): dbeta and dgamma, and dx
    (None unless ``input_grad``) through the batch statistics if ``batch_statistics``."""
    return _state["impl"].batch_norm_act_backward(dy, cache, batch_statistics, input_grad)


def gelu_forward(z: Array, approximate: bool) -> tuple[Array, Array | None]:
    """(y, cache): y = z Phi(z) (or the tanh form); the cache (Phi(z) or None) for backward."""
    return _state["impl"].gelu_forward(z, approximate)


def gelu_backward(dy: Array, z: Array, cache: Array | None, approximate: bool) -> Array:
    """dz = dy (Phi(z) + z phi(z)) (or the tanh form's slope)."""
    return _state["impl"].gelu_backward(dy, z, cache, approximate)


__all__ = ["ConvCache", "NormCache", "PoolCache", "Workspace", "batch_norm_act_backward",
           "batch_norm_act_forward", "conv2d_backward", "conv2d_forward", "conv_col",
           "dropout_backward", "dropout_forward", "gelu_backward", "gelu_forward", "get_ops",
           "host_threads", "max_pool_backward",
           "max_pool_forward", "set_host_threads", "set_ops", "sgd_update",
           "softmax_cross_entropy", "use_kernels", "use_ops"]
