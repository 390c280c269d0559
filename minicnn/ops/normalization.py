"""Batch normalization and the activation after it, fused: fast.

Over the channels-last view x (M, C) (M = N*H*W values per channel), with
g = gamma (1 without scale), b = beta (0 without center) and f the activation:

Forward:   mu, var = the channel's mean and biased variance (training), or the
           moving statistics (inference);   s = g / sqrt(var + eps),  t = b - mu s
           z = x s + t      y = f(z)
Backward:  dz = dy * f'(z)     x_hat = (x - mu) / sqrt(var + eps)
           sum_dz = sum(dz)    sum_dzx = sum(dz * x_hat)   (per channel: dbeta, dgamma)
           training:   dx = s / M * (M dz - sum_dz - x_hat sum_dzx)
           inference:  dx = s dz

    f = relu:  y = max(z, 0)               f'(z) = [z > 0]
        gelu:  y = z Phi(z)                f'(z) = Phi(z) + z phi(z)
        gelu_tanh: the tanh form (activations.Gelu(approximate=True))

Unfused, BatchNormalization and Activation make four passes over the
activations forward (the statistics, the normalized x_hat, y, f(y)) and
write x_hat and z to keep them; this makes two (the statistics, then y) and
keeps only a reference to x, which backward normalizes again (and, for gelu
on the host, Phi(z), whose erf costs more than the memory traffic it saves). Backward makes
two passes instead of four. On the host each pass walks the batch in blocks
(BLOCK values, with work arrays allocated once per thread), the parts split
over the host's threads (threads.over_batch); on a GPU each pass is one kernel (or a CuPy reduction).
Statistics: each block's mean and sum of squared deviations, merged in
float64 (Chan et al.'s pairwise update), so a large mean costs no precision.
The sums over rows (the statistics', backward's) are BLAS products with a
vector of ones, in float32 groups of SUM_BLOCK values added in float64
(``column_sums``): NumPy's own sum over the first axis is several times slower.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Iterator, NamedTuple

import numpy

from minicnn import backend
from minicnn.backend import Array
from minicnn.ops.blas import single_threaded as single_threaded_blas
from minicnn.ops.kernels import Kernel, kernel
from minicnn.ops.special import normal_cdf
from minicnn.ops.threads import over_batch

ACTIVATIONS = ("linear", "relu", "gelu", "gelu_tanh")
# Values per host block. Each block is some 25 NumPy calls (GELU's erf), and with two
# threads every call hands the GIL over, which costs more than a small block's
# arithmetic; at this size (1 MB of float32) a block and its work arrays still sit in
# the L3 cache (benchmarks/bench_host_passes.py).
BLOCK = 1 << 18
# Values per float32 partial sum of the statistics and of backward's sums (column_sums):
# the partial sums are then added in float64.
SUM_BLOCK = 1 << 15

INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
GELU_C = math.sqrt(2.0 / math.pi)
GELU_K = 0.044715

# The activation and its slope in CUDA, by code (ACTIVATIONS.index); shared by the kernels.
_PREAMBLE = """
template <typename T> __device__ T minicnn_act(T z, int act) {
  if (act == 1) return z > (T)0 ? z : (T)0;
  if (act == 2) return z * (T)0.5 * ((T)1 + erf(z * (T)0.70710678118654752));
  if (act == 3) {
    const T t = tanh((T)0.79788456080286536 * (z + (T)0.044715 * z * z * z));
    return (T)0.5 * z * ((T)1 + t);
  }
  return z;
}
template <typename T> __device__ T minicnn_act_slope(T z, int act) {
  if (act == 1) return z > (T)0 ? (T)1 : (T)0;
  if (act == 2) return (T)0.5 * ((T)1 + erf(z * (T)0.70710678118654752))
                       + z * (T)0.39894228040143268 * exp((T)-0.5 * z * z);
  if (act == 3) {
    const T t = tanh((T)0.79788456080286536 * (z + (T)0.044715 * z * z * z));
    return (T)0.5 * ((T)1 + t) + (T)0.5 * z * ((T)1 - t * t)
           * (T)0.79788456080286536 * ((T)1 + (T)3 * (T)0.044715 * z * z);
  }
  return (T)1;
}
"""

# y = f(x s + t), one thread per value; s, t per channel (the twin: _forward_block).
BN_ACT_FORWARD = Kernel(
    name="minicnn_bn_act_forward",
    in_params="T x, raw T s, raw T t, int32 C, int32 act",
    out_params="T y",
    operation="const int c = i % C; y = minicnn_act(x * s[c] + t[c], act);",
    preamble=_PREAMBLE)

# dz = dy f'(x s + t) and x_hat = (x - mu) r (r = 1 / sqrt(var + eps)).
BN_ACT_BACKWARD_DZ = Kernel(
    name="minicnn_bn_act_backward_dz",
    in_params="T x, T dy, raw T s, raw T t, raw T mu, raw T r, int32 C, int32 act",
    out_params="T dz, T x_hat",
    operation="""
const int c = i % C;
dz = dy * minicnn_act_slope(x * s[c] + t[c], act);
x_hat = (x - mu[c]) * r[c];
""",
    preamble=_PREAMBLE)

# dx = k (dz - a - x_hat q) per channel: k = s, a = mean(dz), q = mean(dz x_hat).
BN_ACT_BACKWARD_DX = Kernel(
    name="minicnn_bn_act_backward_dx",
    in_params="T dz, T x_hat, raw T k, raw T a, raw T q, int32 C",
    out_params="T dx",
    operation="const int c = i % C; dx = k[c] * (dz - a[c] - x_hat * q[c]);")


class NormCache(NamedTuple):
    """What the fused backward needs: x itself (no copy), the statistics used, s and t;
    for gelu on the host also Phi(z), whose erf is the costliest part of the slope."""
    x: Array
    mean: Array
    inv_std: Array
    scale: Array
    shift: Array
    activation: str
    cdf: Array | None = None


def check_activation(activation: str) -> int:
    if activation not in ACTIVATIONS:
        raise ValueError(f"batch_norm_act: unknown activation {activation!r}: expected one "
                         f"of {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS.index(activation)


def activate(z: Array, activation: str, work: list[Array] | None = None) -> Array:
    """f(z), written over z (a host block or a whole array); gelu's temporaries in
    ``work`` (three arrays of z's shape) if given."""
    xp = backend.get_array_module(z)
    if activation == "relu":
        return xp.maximum(z, 0, out=z)
    if activation == "gelu":
        if work is None:
            z *= gelu_cdf(z)
        else:
            z *= gelu_cdf(z, out=work[0], work=(work[1], work[2]))
    elif activation == "gelu_tanh":
        t = xp.tanh(GELU_C * (z + GELU_K * z * z * z))
        t += 1
        z *= t
        z *= 0.5
    return z


def gelu_cdf(z: Array, out: Array | None = None,
             work: tuple[Array, Array] | None = None) -> Array:
    """Phi(z) = (1 + erf(z / sqrt 2)) / 2, into ``out`` if given (else a new array);
    its temporaries in ``work`` if given (special.normal_cdf)."""
    return normal_cdf(z, out, work)


def slope(z: Array, activation: str, cdf: Array | None = None,
          out: Array | None = None) -> Array:
    """f'(z) (z is left alone); ``cdf``: Phi(z) if known (gelu); gelu's into ``out``
    if given, else a new array."""
    xp = backend.get_array_module(z)
    if activation == "relu":
        return (z > 0).astype(z.dtype)
    if activation == "gelu":
        density = xp.multiply(z, z, out=out)
        density *= -0.5
        xp.exp(density, out=density)
        density *= INV_SQRT_2PI
        density *= z
        density += gelu_cdf(z) if cdf is None else cdf
        return density
    if activation == "gelu_tanh":
        t = xp.tanh(GELU_C * (z + GELU_K * z * z * z))
        du = GELU_C * (1 + 3 * GELU_K * z * z)
        return 0.5 * (1 + t) + 0.5 * z * (1 - t * t) * du
    return xp.ones_like(z)


def times_slope(dy: Array, z: Array, activation: str, cdf: Array | None, out: Array
                ) -> Array:
    """out = dy f'(z) (``cdf``: Phi(z) if known). The exact gelu writes f'(z) straight
    into out and multiplies by dy there, with no temporary of the block's size."""
    if activation == "gelu" and out.dtype == z.dtype:
        slope(z, activation, cdf, out=out)
        out *= dy
        return out
    return backend.get_array_module(z).multiply(dy, slope(z, activation, cdf), out=out)


def _blocks(part: slice, columns: int, size: int | None = None) -> list[slice]:
    """``part``'s rows in blocks of about ``size`` values (default BLOCK)."""
    rows = max(1, (size or BLOCK) // max(1, columns))
    return [slice(a, min(a + rows, part.stop)) for a in range(part.start, part.stop, rows)]


def _blocks_with_work(part: slice, like: Array, count: int, size: int | None = None
                      ) -> Iterator[tuple[slice, list[Array]]]:
    """(rows, work) for ``part``'s blocks of the 2-d ``like`` (``size`` values, default
    BLOCK): ``count`` work arrays of the block's shape, allocated once for the part and
    reused by every block, so that the float32 GELU's two dozen passes per block
    allocate nothing."""
    columns = like.shape[1]
    blocks = _blocks(part, columns, size)
    if not blocks:
        return
    rows = blocks[0].stop - blocks[0].start
    xp = backend.get_array_module(like)
    work = [xp.empty((rows, columns), like.dtype) for _ in range(count)]
    for block in blocks:
        n = block.stop - block.start
        yield block, [w[:n] for w in work]


def column_sums(a: Array, ones: Array | None) -> Array:
    """a's sums over its rows, per column, in float64: float32 partial sums of groups
    of rows (at most SUM_BLOCK values a column), added in float64. With ``ones`` (a
    vector of ones, one per row of a group: ``_ones_for_sums``) BLAS makes them as
    ``ones @ rows``, one stacked product for the whole groups and one for the rest:
    it reads the rows once at memory speed, where NumPy's ``sum(axis=0)`` of a
    C-ordered array runs its inner loop once per row, several times slower. With
    ``ones`` None (BLAS's threads out of minicnn's hands) NumPy's sums, group by group."""
    xp = backend.get_array_module(a)
    columns = a.shape[1]
    total = xp.zeros(columns, dtype=numpy.float64)
    if ones is None:
        for rows in _blocks(slice(0, len(a)), columns, SUM_BLOCK):
            total += a[rows].sum(axis=0)
        return total
    group = len(ones)
    whole = len(a) // group * group
    if whole:
        partial = xp.matmul(ones, a[:whole].reshape(whole // group, group, columns))
        total += partial.sum(axis=0, dtype=numpy.float64)
    if whole < len(a):
        total += xp.matmul(ones[:len(a) - whole], a[whole:])
    return total


def _ones_for_sums(like: Array) -> Array:
    """The ones vector ``column_sums`` wants for the 2-d ``like``'s sums: SUM_BLOCK
    values a group, at least one row."""
    rows = max(1, SUM_BLOCK // max(1, like.shape[1]))
    return backend.get_array_module(like).ones(rows, dtype=like.dtype)


def _over_batch_summing(fn: Callable[[slice, Array | None], Any], x2: Array) -> list:
    """over_batch of ``fn(part, ones)``, whose column_sums run on BLAS single-threaded
    (``ones`` given) while the parts run at once, or on NumPy's sums (``ones`` None)
    where BLAS's threads cannot be set (MKL, an OpenMP OpenBLAS): two threads that each
    start BLAS's threads would fight over the cores, and the parts keep their threads."""
    with single_threaded_blas() as single:
        ones = _ones_for_sums(x2) if single else None
        return over_batch(lambda part: fn(part, ones), x2)


def batch_statistics(x2: Array) -> tuple[Array, Array]:
    """(mean, biased variance) per column of x2 (M, C), in x2's dtype."""
    xp = backend.get_array_module(x2)
    if backend.is_device_array(x2):
        mean = x2.mean(axis=0)
        centred = x2 - mean
        return mean, (centred * centred).mean(axis=0)
    def part_statistics(part: slice, ones: Array | None
                        ) -> tuple[int, numpy.ndarray, numpy.ndarray]:
        count, mean, m2 = 0, numpy.zeros(x2.shape[1]), numpy.zeros(x2.shape[1])
        for rows, (deviation,) in _blocks_with_work(part, x2, 1):
            block = x2[rows]
            n = block.shape[0]
            block_mean = column_sums(block, ones) / n
            xp.subtract(block, block_mean.astype(x2.dtype), out=deviation)
            deviation *= deviation
            count, mean, m2 = _merge(count, mean, m2, n, block_mean,
                                     column_sums(deviation, ones))
        return count, mean, m2

    # Merged in the batch's order, whichever thread finished first: the same bits every run.
    parts = _over_batch_summing(part_statistics, x2)
    count, mean, m2 = parts[0]
    for other in parts[1:]:
        count, mean, m2 = _merge(count, mean, m2, *other)
    return xp.asarray(mean, dtype=x2.dtype), xp.asarray(m2 / count, dtype=x2.dtype)


def _merge(n_a: int, mean_a, m2_a, n_b: int, mean_b, m2_b):
    """Chan, Golub and LeVeque's merge of two groups' (count, mean, sum of squared
    deviations), in float64."""
    n = n_a + n_b
    mean_b, m2_b = numpy.asarray(mean_b, numpy.float64), numpy.asarray(m2_b, numpy.float64)
    delta = mean_b - mean_a
    return n, mean_a + delta * (n_b / n), m2_a + m2_b + delta * delta * (n_a * n_b / n)


def batch_norm_act_forward(x: Array, gamma: Array | None, beta: Array | None,
                           mean: Array | None, variance: Array | None, epsilon: float,
                           activation: str, keep_cache: bool
                           ) -> tuple[Array, Array, Array, NormCache | None]:
    """(y, mean, variance, cache): y = f(g (x - mu) / sqrt(var + eps) + b) over the last
    axis; mean and variance None take the batch's (and return them, the variance
    biased), else they are the moving statistics."""
    code = check_activation(activation)
    xp = backend.get_array_module(x)
    channels = x.shape[-1]
    x2 = x.reshape(-1, channels)
    if mean is None:
        mean, variance = batch_statistics(x2)
    inv_std = 1.0 / xp.sqrt(variance + epsilon)
    scale = inv_std * gamma if gamma is not None else inv_std
    shift = -mean * scale
    if beta is not None:
        shift = shift + beta
    scale, shift = scale.astype(x.dtype, copy=False), shift.astype(x.dtype, copy=False)
    y = xp.empty_like(x2)
    cdf = None
    gpu = kernel(BN_ACT_FORWARD, x)
    if gpu is not None:
        gpu(x2, scale, shift, channels, code, y)
    else:
        # gelu keeps Phi(z) for backward: the erf is most of gelu's cost, on the host
        cdf = xp.empty_like(x2) if keep_cache and activation == "gelu" else None

        def forward_part(part: slice) -> None:
            # gelu's temporaries: Phi(z)'s two, and Phi(z) itself where it is not kept
            work_arrays = 0 if activation != "gelu" else 2 if cdf is not None else 3
            for rows, work in _blocks_with_work(part, x2, work_arrays):
                z = y[rows]
                xp.multiply(x2[rows], scale, out=z)
                z += shift
                if cdf is None:
                    activate(z, activation, work or None)
                else:
                    z *= gelu_cdf(z, out=cdf[rows], work=(work[0], work[1]))
        over_batch(forward_part, x2)
    cache = NormCache(x2, mean, inv_std.astype(x.dtype, copy=False), scale, shift,
                      activation, cdf) if keep_cache else None
    return y.reshape(x.shape), mean, variance, cache


def batch_norm_act_backward(dy: Array, cache: NormCache, batch_statistics: bool,
                            input_grad: bool) -> tuple[Array | None, Array, Array]:
    """(dx, sum_dz, sum_dzx): dbeta = sum_dz, dgamma = sum_dzx (see the module docstring);
    dx through the batch statistics when ``batch_statistics``, else s dz."""
    xp = backend.get_array_module(dy)
    x2, mean, inv_std, scale, shift, activation, cdf = cache
    code = check_activation(activation)
    m, channels = x2.shape
    dy2 = dy.reshape(m, channels)
    gpu = kernel(BN_ACT_BACKWARD_DZ, dy)
    if gpu is not None:
        dz, x_hat = xp.empty_like(dy2), xp.empty_like(dy2)
        gpu(x2, dy2, scale, shift, mean, inv_std, channels, code, dz, x_hat)
        sum_dz, sum_dzx = dz.sum(axis=0), (dz * x_hat).sum(axis=0)
        if not input_grad:
            return None, sum_dz, sum_dzx
        if not batch_statistics:
            return (dz * scale).reshape(dy.shape), sum_dz, sum_dzx
        dx = xp.empty_like(dy2)
        kernel(BN_ACT_BACKWARD_DX, dy)(dz, x_hat, scale, sum_dz / m, sum_dzx / m, channels, dx)
        return dx.reshape(dy.shape), sum_dz, sum_dzx
    # The host: pass 1 writes dz into dx's memory and sums per channel; pass 2 finishes dx.
    dx = xp.empty_like(dy2)
    def first_pass(part: slice, ones: Array | None
                   ) -> tuple[Array, Array]:  # sums in float64 (strict's arrays too)
        sums = xp.zeros(channels, dtype=numpy.float64), xp.zeros(channels, dtype=numpy.float64)
        for rows, (z,) in _blocks_with_work(part, x2, 1):
            xp.multiply(x2[rows], scale, out=z)
            z += shift
            dz = times_slope(dy2[rows], z, activation, None if cdf is None else cdf[rows],
                             dx[rows])
            centred_dz = xp.subtract(x2[rows], mean, out=z)  # x_hat dz = (x - mu) dz r:
            centred_dz *= dz                                  # r multiplies the sum once
            sums[0][...] += column_sums(dz, ones)
            sums[1][...] += column_sums(centred_dz, ones)
        return sums

    parts = _over_batch_summing(first_pass, x2)  # in the batch's order: reproducible
    sum_dz = sum(p[0] for p in parts[1:]) + parts[0][0]
    sum_dzx = (sum(p[1] for p in parts[1:]) + parts[0][1]) * inv_std
    sum_dz, sum_dzx = sum_dz.astype(dy.dtype), sum_dzx.astype(dy.dtype)
    if not input_grad:
        return None, sum_dz, sum_dzx
    if not batch_statistics:
        dx *= scale
        return dx.reshape(dy.shape), sum_dz, sum_dzx
    # dx = s (dz - (mean(dz) + (x - mu) r mean(dz x_hat))): r and the mean folded into one
    mean_dz, slope_dzx = sum_dz / m, inv_std * (sum_dzx / m)

    def second_pass(part: slice) -> None:
        for rows, (term,) in _blocks_with_work(part, x2, 1):
            xp.subtract(x2[rows], mean, out=term)
            term *= slope_dzx
            term += mean_dz
            dz = dx[rows]
            dz -= term
            dz *= scale
    over_batch(second_pass, x2)
    return dx.reshape(dy.shape), sum_dz, sum_dzx
