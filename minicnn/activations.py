"""Element-wise activation functions, each a forward/backward pair with a cache.

    relu     y = max(z, 0)              dz = dy * [y > 0]
    sigmoid  y = 1 / (1 + e^-z)         dz = dy * y * (1 - y)
    tanh     y = tanh(z)                dz = dy * (1 - y^2)
    softmax  y_k = e^z_k / sum_j e^z_j  dz = y * (dy - sum_k dy_k y_k)
    linear   y = z                      dz = dy
    elu      y = z (z > 0), a (e^z - 1)    dz = dy * [1 if y > 0 else y + a]   (a = alpha = 1)
    selu     y = s * elu_a(z)              dz = dy * [s if y > 0 else y + s a]
             (a = 1.6732632423543772, s = 1.0507009873554805: Keras's constants)
    softplus y = log(1 + e^z)              dz = dy * (1 - e^-y)          (= sigmoid(z))
    softsign y = z / (1 + |z|)             dz = dy * (1 - |y|)^2         (= 1 / (1 + |z|)^2)
    hard_sigmoid y = clip(0.2 z + 0.5, 0, 1)   dz = dy * 0.2 [0 < y < 1]
    exponential  y = e^z                   dz = dy * y
    gelu     y = z Phi(z) = z/2 (1 + erf(z / sqrt 2))   dz = dy * (Phi(z) + z phi(z))
             (Phi, phi: the standard normal's distribution and density)
    gelu approximate=True:  y = z/2 (1 + tanh(u)), u = c (z + 0.044715 z^3), c = sqrt(2/pi)
             dz = dy * (1/2 (1 + t) + z/2 (1 - t^2) c (1 + 3 * 0.044715 z^2)),  t = tanh(u)
    leaky_relu  y = z (z > 0), a z         dz = dy * [1 if y > 0 else a]     (a = alpha = 0.3)

gelu follows tf.keras (Keras 2.2.4 has none): the exact erf form by default,
as torch's ``nn.GELU()``, and ``Gelu(approximate=True)`` for the tanh form
(Hendrycks and Gimpel; BERT's and GPT-2's). The two differ by less than 5e-4.
NumPy has no erf, so ``erf`` below is a published rational approximation
accurate to the dtype's rounding (CuPy's own erf on the GPU). The others
follow keras/activations.py.

Each keeps only its output y, which is all its gradient needs (gelu keeps z,
since y does not give z back). A layer whose
output z is a new array that nobody else holds (Conv2D, Dense) sets
``overwrite_input``; ReLU then writes y over z instead of allocating a copy.
"""
from __future__ import annotations

import math
import numbers

from minicnn import backend
from minicnn.backend import Array


class ActivationFunction:
    name = "linear"
    kink: str | None = None  # where it has no derivative, in words (gradcheck names it)
    overwrite_input = False  # may forward() reuse z's memory for y?

    def forward(self, z: Array) -> Array:
        return z

    def backward(self, grad: Array) -> Array:
        return grad

    def __repr__(self) -> str:
        return self.name

    def clone(self) -> "ActivationFunction":
        """A fresh instance with the same parameters and no cache."""
        return type(self)()


class Linear(ActivationFunction):
    name = "linear"


class ReLU(ActivationFunction):
    name = "relu"
    kink = "a ReLU at 0"

    def forward(self, z: Array) -> Array:
        xp = backend.get_array_module(z)
        self.y = xp.maximum(z, 0, out=z if self.overwrite_input else None)
        return self.y

    def backward(self, grad: Array) -> Array:
        # Multiply by the mask in place of a where(): one pass, same dtype.
        return grad * (self.y > 0)


class Sigmoid(ActivationFunction):
    name = "sigmoid"

    def forward(self, z: Array) -> Array:
        xp = backend.get_array_module(z)
        # e^-|z| never overflows; pick the branch that matches the sign of z.
        e = xp.exp(-xp.abs(z))
        self.y = xp.where(z >= 0, 1 / (1 + e), e / (1 + e))
        return self.y

    def backward(self, grad: Array) -> Array:
        return grad * self.y * (1 - self.y)


class Tanh(ActivationFunction):
    name = "tanh"

    def forward(self, z: Array) -> Array:
        self.y = backend.get_array_module(z).tanh(z)
        return self.y

    def backward(self, grad: Array) -> Array:
        return grad * (1 - self.y * self.y)


class Softmax(ActivationFunction):
    """Softmax over the last axis, shifted by the row maximum so exp never overflows."""
    name = "softmax"

    def forward(self, z: Array) -> Array:
        self.y = softmax(z)
        return self.y

    def backward(self, grad: Array) -> Array:
        # Jacobian-vector product of softmax: y * (g - <g, y>) row by row.
        y = self.y
        return y * (grad - (grad * y).sum(axis=-1, keepdims=True))


class Elu(ActivationFunction):
    """Keras's elu; ``alpha`` (> 0) scales the negative side."""
    name = "elu"
    kink = "an ELU at 0"  # unless alpha = 1

    def __init__(self, alpha: float = 1.0, where: str = "elu") -> None:
        self.alpha = positive_number(alpha, "alpha", where)  # where: the caller, for errors

    def clone(self) -> "Elu":
        return Elu(self.alpha)

    def forward(self, z: Array) -> Array:
        xp = backend.get_array_module(z)
        # expm1 of min(z, 0): exact near 0, and no overflow from the positive side.
        self.y = xp.where(z > 0, z, self.alpha * xp.expm1(xp.minimum(z, 0)))
        return self.y

    def backward(self, grad: Array) -> Array:
        xp = backend.get_array_module(grad)
        # y > 0 exactly where z > 0 (alpha > 0), and d(a(e^z - 1))/dz = a e^z = y + a.
        return grad * xp.where(self.y > 0, 1.0, self.y + self.alpha)


SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


class Selu(ActivationFunction):
    name = "selu"
    kink = "selu at 0"

    def forward(self, z: Array) -> Array:
        xp = backend.get_array_module(z)
        self.y = SELU_SCALE * xp.where(z > 0, z, SELU_ALPHA * xp.expm1(xp.minimum(z, 0)))
        return self.y

    def backward(self, grad: Array) -> Array:
        xp = backend.get_array_module(grad)
        return grad * xp.where(self.y > 0, SELU_SCALE, self.y + SELU_SCALE * SELU_ALPHA)


class Softplus(ActivationFunction):
    name = "softplus"

    def forward(self, z: Array) -> Array:
        xp = backend.get_array_module(z)
        # max(z, 0) + log(1 + e^-|z|): e^-|z| <= 1 never overflows.
        self.y = xp.maximum(z, 0) + xp.log1p(xp.exp(-xp.abs(z)))
        return self.y

    def backward(self, grad: Array) -> Array:
        # sigmoid(z) = 1 - e^-y; expm1 keeps it exact where y is tiny (z very negative).
        return grad * -backend.get_array_module(grad).expm1(-self.y)


class Softsign(ActivationFunction):
    name = "softsign"

    def forward(self, z: Array) -> Array:
        self.y = z / (1 + backend.get_array_module(z).abs(z))
        return self.y

    def backward(self, grad: Array) -> Array:
        s = 1 - backend.get_array_module(grad).abs(self.y)  # = 1 / (1 + |z|)
        return grad * s * s


class HardSigmoid(ActivationFunction):
    name = "hard_sigmoid"
    kink = "hard_sigmoid at ±2.5"

    def forward(self, z: Array) -> Array:
        self.y = backend.get_array_module(z).clip(0.2 * z + 0.5, 0.0, 1.0)
        return self.y

    def backward(self, grad: Array) -> Array:
        return grad * ((self.y > 0) & (self.y < 1)) * 0.2  # the mask keeps grad's dtype


class Exponential(ActivationFunction):
    name = "exponential"

    def forward(self, z: Array) -> Array:
        self.y = backend.get_array_module(z).exp(z)
        return self.y

    def backward(self, grad: Array) -> Array:
        return grad * self.y


GELU_C = math.sqrt(2.0 / math.pi)
GELU_K = 0.044715
INV_SQRT2 = 1.0 / math.sqrt(2.0)
INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)

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


def _horner(coefficients: tuple[float, ...], t: Array) -> Array:
    """c0 t^n + c1 t^(n-1) + ... + cn (highest power first)."""
    result = coefficients[0] + 0 * t
    for c in coefficients[1:]:
        result = result * t + c
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
        return c * _horner(_F32_P, s) / _horner(_F32_Q, s)
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


class Gelu(ActivationFunction):
    """GELU, tf.keras's ``gelu``: exact (erf) by default, the tanh form when
    ``approximate`` (see the module docstring)."""
    name = "gelu"

    def __init__(self, approximate: bool = False) -> None:
        if not isinstance(approximate, bool):
            raise ValueError(f"gelu: approximate must be True or False, got {approximate!r}")
        self.approximate = approximate

    def clone(self) -> "Gelu":
        return Gelu(self.approximate)

    def __repr__(self) -> str:
        return "gelu(approximate=True)" if self.approximate else "gelu"

    def forward(self, z: Array) -> Array:
        self.z = z
        if self.approximate:
            self.t = backend.get_array_module(z).tanh(GELU_C * (z + GELU_K * z * z * z))
            return 0.5 * z * (1 + self.t)
        self.cdf = 0.5 * (1 + erf(z * INV_SQRT2))  # Phi(z), which backward reuses
        return z * self.cdf

    def backward(self, grad: Array) -> Array:
        z = self.z
        if self.approximate:
            t = self.t
            du = GELU_C * (1 + 3 * GELU_K * z * z)
            return grad * (0.5 * (1 + t) + 0.5 * z * (1 - t * t) * du)
        xp = backend.get_array_module(z)
        return grad * (self.cdf + z * (INV_SQRT_2PI * xp.exp(-0.5 * z * z)))


class LeakyRelu(ActivationFunction):
    """max(z, 0) + alpha min(z, 0), Keras's LeakyReLU layer (alpha >= 0)."""
    name = "leaky_relu"
    kink = "a leaky ReLU at 0"

    def __init__(self, alpha: float = 0.3) -> None:
        self.alpha = positive_number(alpha, "alpha", "LeakyReLU", zero=True)

    def clone(self) -> "LeakyRelu":
        return LeakyRelu(self.alpha)

    def forward(self, z: Array) -> Array:
        xp = backend.get_array_module(z)
        self.positive = z > 0
        self.y = xp.where(self.positive, z, self.alpha * z)
        return self.y

    def backward(self, grad: Array) -> Array:
        # where(mask, 1.0, alpha) would be float64 whatever grad's dtype.
        return backend.get_array_module(grad).where(self.positive, grad, self.alpha * grad)


def positive_number(value: float, what: str, where: str, zero: bool = False) -> float:
    """A finite real > 0 (>= 0 when ``zero``), else a ValueError naming ``where``."""
    ok = (isinstance(value, numbers.Real) and not isinstance(value, bool)
          and math.isfinite(value) and (value >= 0 if zero else value > 0))
    if not ok:
        bound = ">= 0" if zero else "> 0"
        raise ValueError(f"{where}: {what} must be a finite number {bound}, got {value!r}")
    return float(value)


def softmax(z: Array) -> Array:
    """Numerically stable softmax over the last axis."""
    xp = backend.get_array_module(z)
    e = xp.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


ACTIVATIONS = {cls.name: cls for cls in (Linear, ReLU, Sigmoid, Tanh, Softmax, Elu, Selu,
                                          Softplus, Softsign, HardSigmoid, Exponential, Gelu)}


def get(identifier: str | ActivationFunction | None, where: str = "activations.get"
        ) -> ActivationFunction:
    """A fresh activation object from a name (``None`` means linear); ``where`` names
    the caller (a layer) in the error for an unknown name."""
    if identifier is None:
        return Linear()
    if isinstance(identifier, ActivationFunction):
        return identifier.clone()
    if not isinstance(identifier, str) or identifier not in ACTIVATIONS:
        raise ValueError(f"{where}: unknown activation {identifier!r}: expected one of "
                         f"{', '.join(sorted(ACTIVATIONS))}")
    return ACTIVATIONS[identifier]()


def serialize(activation: ActivationFunction | None) -> str:
    """The name a layer's config records (Keras saves activations by name). A
    function whose parameters its name cannot carry (an elu with another alpha)
    raises: use the ELU or LeakyReLU layer, which save their alpha."""
    if activation is None:
        return "linear"
    default = ACTIVATIONS.get(activation.name)
    alpha = getattr(activation, "alpha", None)
    if type(activation).__module__ == __name__ and (
            default is not type(activation) or alpha != getattr(default(), "alpha", None)):
        raise ValueError(f"activations.serialize: {activation.name} with alpha={alpha} cannot "
                         "be saved by name; use the layer LeakyReLU or ELU, whose config "
                         "keeps alpha")
    if getattr(activation, "approximate", False):
        raise ValueError("activations.serialize: gelu(approximate=True) cannot be saved by "
                         "name (the name 'gelu' is the exact form)")
    return activation.name


def deserialize(name: str, custom_objects: dict | None = None,
                where: str = "activations.deserialize") -> ActivationFunction:
    """A fresh activation from ``serialize``'s name; ``custom_objects`` maps the names of
    your own ``ActivationFunction`` subclasses (or instances) to them."""
    custom = (custom_objects or {}).get(name)
    if custom is not None:
        return get(custom() if isinstance(custom, type) else custom, where)
    if name not in ACTIVATIONS:
        raise ValueError(f"{where}: unknown activation {name!r}; if it is your own, pass "
                         f"its class as custom_objects={{{name!r}: YourActivation}}")
    return get(name, where)


def name_of(activation: ActivationFunction | None) -> str:
    """The name a configuration records: Keras writes 'linear' for no activation."""
    return "linear" if activation is None else activation.name
