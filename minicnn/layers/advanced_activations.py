"""Activations as layers with their own parameters (keras/layers/advanced_activations.py).

LeakyReLU(alpha=0.3)
    y = x (x > 0), alpha x (x <= 0)          dx = dy * [1 if x > 0 else alpha]
ELU(alpha=1.0)
    y = x (x > 0), alpha (e^x - 1)           dx = dy * [1 if x > 0 else y + alpha]
PReLU(alpha_initializer='zeros', shared_axes=None)
    y = max(x, 0) + alpha * min(x, 0)        alpha has the sample's shape, with a 1 on
                                             every shared axis (broadcast over it)
    dx = dy * [1 if x > 0 else alpha]
    dalpha = sum of dy * min(x, 0) over the batch axis and the shared axes

LeakyReLU and ELU use the functions of ``minicnn.activations``; PReLU is the
one with a trained weight, ``alpha``.
"""
from __future__ import annotations

import numbers
from typing import Any, Callable, Sequence

from minicnn import activations, backend, initializers, regularizers
from minicnn.layers.base import Layer, plain, regularizer_config, unsupported


class _AlphaActivation(Layer):
    """A layer that applies one activation function of ``minicnn.activations``
    whose shape is set by ``alpha``; the function holds the maths and its cache."""

    def __init__(self, function: activations.ActivationFunction, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._function = function
        self.alpha = function.alpha

    def _forward(self, x, training):
        return self._function.forward(x)

    def _backward(self, grad):
        return self._function.backward(grad)

    def config(self) -> dict:
        return {"alpha": self.alpha}


class LeakyReLU(_AlphaActivation):
    kink = "a leaky ReLU at 0"

    def __init__(self, alpha: float = 0.3, **kwargs: Any) -> None:
        super().__init__(activations.LeakyRelu(alpha), **kwargs)


class ELU(_AlphaActivation):
    kink = "an ELU at 0"  # unless alpha = 1

    def __init__(self, alpha: float = 1.0, **kwargs: Any) -> None:
        super().__init__(activations.Elu(alpha, "ELU"), **kwargs)


class PReLU(Layer):
    kink = "a PReLU at 0"

    def __init__(self, alpha_initializer: str | Callable = "zeros", alpha_regularizer: Any = None,
                 alpha_constraint: Any = None, shared_axes: int | Sequence[int] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        unsupported("PReLU", alpha_constraint=alpha_constraint)
        self.alpha_regularizer = regularizers.get(alpha_regularizer, "PReLU alpha_regularizer")
        self.alpha_initializer = initializers.get(alpha_initializer, "PReLU alpha_initializer")
        if shared_axes is None:
            shared_axes = ()
        elif isinstance(shared_axes, numbers.Integral):
            shared_axes = (shared_axes,)
        try:
            axes = tuple(shared_axes)
        except TypeError:
            axes = (shared_axes,)
        if not all(isinstance(a, numbers.Integral) and not isinstance(a, bool) and a >= 1
                   for a in axes):
            raise ValueError(f"PReLU: shared_axes must be None, an int or a list of ints >= 1 "
                             f"(axis 0 is the batch), got {shared_axes!r}")
        self.shared_axes = tuple(sorted({int(a) for a in axes}))
        self._x = self._negative = None

    def build(self, input_shape: tuple) -> None:
        rank = len(input_shape)
        bad = [a for a in self.shared_axes if a >= rank]
        if bad:
            raise ValueError(f"{self.describe()}: shared_axes {list(self.shared_axes)} name axis "
                             f"{bad[0]}, but the input {tuple(input_shape)} has axes 1 to "
                             f"{rank - 1} besides the batch")
        shape = [1 if axis in self.shared_axes else size
                 for axis, size in enumerate(input_shape) if axis > 0]
        self.add_weight("alpha", shape, initializer=self.alpha_initializer,
                        regularizer=self.alpha_regularizer)
        super().build(input_shape)

    def _forward(self, x, training):
        xp = backend.get_array_module(x)
        negative = xp.minimum(x, 0)
        self._x, self._negative = (x, negative) if self.keep_cache else (None, None)
        return xp.maximum(x, 0) + self.params["alpha"] * negative

    def _backward(self, grad):
        if self._x is None:
            raise RuntimeError(f"{self.describe()}: backward needs a forward with training=True")
        xp = backend.get_array_module(grad)
        axes = (0, *self.shared_axes)
        self.grads["alpha"] = (grad * self._negative).sum(axis=axes, keepdims=True)[0]
        if not self.input_grad:
            return None
        return grad * xp.where(self._x > 0, 1.0, self.params["alpha"])

    def config(self) -> dict:
        return {"shared_axes": list(self.shared_axes)}

    def get_config(self) -> dict:
        return plain({
            **super().get_config(),
            "alpha_initializer": initializers.serialize(self.alpha_initializer),
            **regularizer_config(self, "alpha"), "alpha_constraint": None,
            "shared_axes": list(self.shared_axes) or None})  # Keras: None when none
