"""Element-wise activation functions, each a forward/backward pair with a cache.

    relu     y = max(z, 0)              dz = dy * [y > 0]
    sigmoid  y = 1 / (1 + e^-z)         dz = dy * y * (1 - y)
    tanh     y = tanh(z)                dz = dy * (1 - y^2)
    softmax  y_k = e^z_k / sum_j e^z_j  dz = y * (dy - sum_k dy_k y_k)
    linear   y = z                      dz = dy

Each keeps only its output y, which is all its gradient needs. A layer whose
output z is a new array that nobody else holds (Conv2D, Dense) sets
``overwrite_input``; ReLU then writes y over z instead of allocating a copy.
"""
from __future__ import annotations

from minicnn import backend
from minicnn.backend import Array


class ActivationFunction:
    name = "linear"
    overwrite_input = False  # may forward() reuse z's memory for y?

    def forward(self, z: Array) -> Array:
        return z

    def backward(self, grad: Array) -> Array:
        return grad

    def __repr__(self) -> str:
        return self.name


class Linear(ActivationFunction):
    name = "linear"


class ReLU(ActivationFunction):
    name = "relu"

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


def softmax(z: Array) -> Array:
    """Numerically stable softmax over the last axis."""
    xp = backend.get_array_module(z)
    e = xp.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


ACTIVATIONS = {cls.name: cls for cls in (Linear, ReLU, Sigmoid, Tanh, Softmax)}


def get(identifier: str | ActivationFunction | None, where: str = "activations.get"
        ) -> ActivationFunction:
    """A fresh activation object from a name (``None`` means linear); ``where`` names
    the caller (a layer) in the error for an unknown name."""
    if identifier is None:
        return Linear()
    if isinstance(identifier, ActivationFunction):
        return type(identifier)()
    if not isinstance(identifier, str) or identifier not in ACTIVATIONS:
        raise ValueError(f"{where}: unknown activation {identifier!r}: expected one of "
                         f"{', '.join(sorted(ACTIVATIONS))}")
    return ACTIVATIONS[identifier]()


def name_of(activation: ActivationFunction | None) -> str:
    """The name a configuration records: Keras writes 'linear' for no activation."""
    return "linear" if activation is None else activation.name
