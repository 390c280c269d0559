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
NumPy has no erf, so ``erf`` (minicnn.ops.special) is a published rational approximation
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

from minicnn import backend, ops
from minicnn.backend import Array
from minicnn.ops.special import erf  # noqa: F401  (activations.erf, beside gelu)


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
        # ops.gelu_forward: the host's threads, in cache-sized blocks, or one GPU kernel
        self.z = z
        y, self.cache = ops.gelu_forward(z, self.approximate)
        return y

    def backward(self, grad: Array) -> Array:
        return ops.gelu_backward(grad, self.z, self.cache, self.approximate)


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
