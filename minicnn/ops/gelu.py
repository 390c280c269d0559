"""GELU on its own (not after a BatchNormalization), fast:

    exact:  y = z Phi(z)                        dz = dy (Phi(z) + z phi(z))
    tanh:   y = z/2 (1 + tanh(c (z + 0.044715 z^3)))   (activations.Gelu(approximate=True))

NumPy has no erf, so exact GELU is some 25 array operations per value: on the
host they run in cache-sized blocks (one read of z, one write of y and of
Phi(z), which backward reuses) split over the host's threads; on a GPU one
kernel each way (the slope recomputed there, which is cheaper than a read).
"""
from __future__ import annotations

from minicnn import backend
from minicnn.backend import Array
from minicnn.ops.kernels import Kernel, kernel
from minicnn.ops.normalization import (_PREAMBLE, _blocks, _blocks_with_work, activate,
                                      gelu_cdf, times_slope)
from minicnn.ops.threads import over_batch

# act: 2 exact, 3 tanh (normalization.ACTIVATIONS's codes).
GELU_FORWARD = Kernel(
    name="minicnn_gelu_forward",
    in_params="T z, int32 act",
    out_params="T y",
    operation="y = minicnn_act(z, act);",
    preamble=_PREAMBLE)

GELU_BACKWARD = Kernel(
    name="minicnn_gelu_backward",
    in_params="T z, T dy, int32 act",
    out_params="T dz",
    operation="dz = dy * minicnn_act_slope(z, act);",
    preamble=_PREAMBLE)


def _flat(a: Array) -> Array:
    """A 2-d view (rows, last axis) that over_batch can split by rows."""
    return a.reshape(-1, a.shape[-1]) if a.ndim > 1 else a.reshape(-1, 1)


def gelu_forward(z: Array, approximate: bool) -> tuple[Array, Array | None]:
    """(y, Phi(z)): Phi(z) on the host for the exact form (what backward reuses), else None."""
    xp = backend.get_array_module(z)
    name = "gelu_tanh" if approximate else "gelu"
    gpu = kernel(GELU_FORWARD, z)
    if gpu is not None:
        y = xp.empty_like(z)
        gpu(z, 3 if approximate else 2, y)
        return y, None
    z2 = _flat(z)
    y = xp.empty_like(z2)
    cdf = None if approximate else xp.empty_like(z2)

    def part(rows_of_part: slice) -> None:
        for rows, work in _blocks_with_work(rows_of_part, z2, 0 if cdf is None else 2):
            if cdf is None:
                out = y[rows]
                out[...] = z2[rows]
                activate(out, name)
            else:
                xp.multiply(z2[rows], gelu_cdf(z2[rows], out=cdf[rows], work=tuple(work)),
                            out=y[rows])
    over_batch(part, z2)
    return y.reshape(z.shape), None if cdf is None else cdf.reshape(z.shape)


def gelu_backward(dy: Array, z: Array, cdf: Array | None, approximate: bool) -> Array:
    """dz = dy f'(z), with Phi(z) from forward when given."""
    xp = backend.get_array_module(dy)
    name = "gelu_tanh" if approximate else "gelu"
    gpu = kernel(GELU_BACKWARD, dy)
    if gpu is not None:
        dz = xp.empty_like(dy)
        gpu(z, dy, 3 if approximate else 2, dz)
        return dz
    z2, dy2 = _flat(z), _flat(dy)
    cdf2 = None if cdf is None else _flat(cdf)
    dz = xp.empty_like(dy2)

    def part(rows_of_part: slice) -> None:
        for rows in _blocks(rows_of_part, z2.shape[1]):
            times_slope(dy2[rows], z2[rows], name, None if cdf2 is None else cdf2[rows],
                        dz[rows])
    over_batch(part, z2)
    return dz.reshape(dy.shape)
