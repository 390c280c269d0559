"""Special functions the ops and activations need and NumPy lacks: erf, and Phi.

    erf(x) = 2/sqrt(pi) * integral from 0 to x of e^(-t^2) dt
    Phi(z) = (1 + erf(z / sqrt 2)) / 2      (the standard normal CDF, GELU's gate)

in x's dtype, accurate to its rounding: W. J. Cody's rational Chebyshev
approximation in float64, the Eigen/XLA rational fit in float32, CuPy's own
``cupyx.scipy.special.erf`` on the GPU. Imports only ``backend``.
"""
from __future__ import annotations

import math

from minicnn import backend
from minicnn.backend import Array

# W. J. Cody, "Rational Chebyshev approximations for the error function",
# Math. Comp. 23 (1969) 631-637 (the coefficients of his CALERF, netlib specfun):
# erf(x) = x A(x^2)/B(x^2) for |x| <= 0.46875, erfc(x) = e^-x^2 C(x)/D(x) up to 4,
# erfc(x) = e^-x^2/x (1/sqrt(pi) - P(1/x^2)/(x^2 Q(1/x^2))) beyond; float64 rounding.
_CODY_A = (1.85777706184603153e-1, 3.16112374387056560e00, 1.13864154151050156e02,
           3.77485237685302021e02, 3.20937758913846947e03)
_CODY_B = (1.0, 2.36012909523441209e01, 2.44024637934444173e02, 1.28261652607737228e03,
           2.84423683343917062e03)
_CODY_C = (2.15311535474403846e-8, 5.64188496988670089e-1, 8.88314979438837594e00,
           6.61191906371416295e01, 2.98635138197400131e02, 8.81952221241769090e02,
           1.71204761263407058e03, 2.05107837782607147e03, 1.23033935479799725e03)
_CODY_D = (1.0, 1.57449261107098347e01, 1.17693950891312499e02, 5.37181101862009858e02,
           1.62138957456669019e03, 3.29079923573345963e03, 4.36261909014324716e03,
           3.43936767414372164e03, 1.23033935480374942e03)
_CODY_P = (1.63153871373020978e-2, 3.05326634961232344e-1, 3.60344899949804439e-1,
           1.25781726111229246e-1, 1.60837851487422766e-2, 6.58749161529837803e-4)
_CODY_Q = (1.0, 2.56852019228982242e00, 1.87295284992346047e00, 5.27905102951428412e-1,
           6.05183413124413191e-2, 2.33520497626869185e-3)
# float32: erf(x) = x P(x^2)/Q(x^2) on x clamped to [-4, 4], the rational fit Eigen
# and XLA use for float32 erf (a few float32 ulps; erf(4) = 1 - 1.5e-8 rounds to 1).
_F32_P = (-2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06,
          -5.69250639462346e-05, -7.34990630326855e-04, -2.95459980854025e-03,
          -1.60960333262415e-02)
_F32_Q = (-1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03,
          -7.37332916720468e-03, -1.42647390514189e-02)
# The same fit as Phi(z) = 1/2 + z P'(z^2) / Q'(z^2) on z clamped to [-4 sqrt 2, 4 sqrt 2]:
# x = z / sqrt 2 and the 1/2 folded into the coefficients (the power of x^2 = z^2 / 2
# under each), which saves four passes over the array.
_PHI_P = tuple(c * 0.5 ** (len(_F32_P) - 1 - k) * 0.5 / math.sqrt(2.0)
               for k, c in enumerate(_F32_P))
_PHI_Q = tuple(c * 0.5 ** (len(_F32_Q) - 1 - k) for k, c in enumerate(_F32_Q))
_PHI_CLAMP = 4.0 * math.sqrt(2.0)


def _horner(coefficients: tuple[float, ...], t: Array, out: Array | None = None) -> Array:
    """c0 t^n + c1 t^(n-1) + ... + cn (highest power first), into ``out`` if given."""
    result = backend.get_array_module(t).multiply(t, coefficients[0], out=out)
    result += coefficients[1]
    for c in coefficients[2:]:
        result *= t
        result += c
    return result


def erf(x: Array) -> Array:
    """The error function, element by element, in x's dtype: Cody's rational
    approximation in float64 (relative error ~1e-16), the Eigen/XLA float32 fit
    in float32 (a few ulps), CuPy's ``cupyx.scipy.special.erf`` on the GPU."""
    if type(x).__module__.startswith("cupy"):
        from cupyx.scipy.special import erf as device_erf  # only where CuPy runs
        return device_erf(x)
    xp = backend.get_array_module(x)
    if x.dtype == xp.float32:
        c = xp.clip(x, -4.0, 4.0)
        s = c * c
        p = _horner(_F32_P, s)
        p *= c
        p /= _horner(_F32_Q, s)
        return p
    a = xp.abs(x)
    small = a * a  # each branch sees only inputs it is accurate (and finite) for
    inner = x * _horner(_CODY_A, small) / _horner(_CODY_B, small)
    m = xp.clip(a, 0.46875, 4.0)
    middle = xp.exp(-m * m) * _horner(_CODY_C, m) / _horner(_CODY_D, m)
    t = xp.clip(a, 4.0, 30.0)  # erfc(30) = 3e-393: 0 in float64
    r = 1.0 / (t * t)
    tail = xp.exp(-t * t) / t * (1 / math.sqrt(math.pi) - r * _horner(_CODY_P, r)
                                  / _horner(_CODY_Q, r))
    erfc = xp.where(a <= 4.0, middle, tail)
    return xp.where(a <= 0.46875, inner, xp.sign(x) * (1.0 - erfc))


def normal_cdf(z: Array, out: Array | None = None,
               work: tuple[Array, Array] | None = None) -> Array:
    """Phi(z) = (1 + erf(z / sqrt 2)) / 2, into ``out`` if given (else a new array). In
    float32 on the host, erf's float32 fit with its constants folded in (the same
    accuracy, fewer passes), its temporaries in ``work`` (two arrays of z's shape and
    dtype) if given, so that a loop over blocks allocates nothing; otherwise from ``erf``."""
    xp = backend.get_array_module(z)
    if z.dtype != xp.float32 or type(z).__module__.startswith("cupy"):
        cdf = erf(z * (1.0 / math.sqrt(2.0)))
        cdf += 1
        cdf *= 0.5
        if out is None:
            return cdf
        out[...] = cdf
        return out
    c, s = work if work is not None else (xp.empty_like(z), xp.empty_like(z))
    xp.clip(z, -_PHI_CLAMP, _PHI_CLAMP, out=c)
    xp.multiply(c, c, out=s)
    p = _horner(_PHI_P, s, out=out)
    p *= c
    q = _horner(_PHI_Q, s, out=c)  # c is spent: its memory takes the denominator
    p /= q
    p += 0.5
    return xp.clip(p, 0.0, 1.0, out=p)  # the fit overshoots by an ulp at the clamps
