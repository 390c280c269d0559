"""Fully connected layer.

Forward:   y = x @ W + b                 x (N, in), W (in, units), b (units,)
Backward:  dW = x^T @ dy    db = sum_n dy    dx = dy @ W^T
"""
from __future__ import annotations

from typing import Callable

from minicnn import activations, backend, initializers
from minicnn.layers.base import Layer, positive_int


class Dense(Layer):
    def __init__(self, units: int, activation: str | activations.ActivationFunction | None = None,
                 use_bias: bool = True, kernel_initializer: str | Callable = "glorot_uniform",
                 bias_initializer: str | Callable = "zeros",
                 input_shape: tuple[int, ...] | None = None, input_dim: int | None = None,
                 name: str | None = None) -> None:
        if input_dim is not None and input_shape is None:
            input_shape = (input_dim,)
        super().__init__(input_shape=input_shape, name=name, activation=activation)
        self.units = positive_int(units, "units", "Dense")
        self.use_bias = use_bias
        self.kernel_initializer = initializers.get(kernel_initializer, "Dense kernel_initializer")
        self.bias_initializer = initializers.get(bias_initializer, "Dense bias_initializer")
        if self.activation is not None:
            # Our output is a new array nobody else holds: the activation may work in place.
            self.activation.overwrite_input = True

    def expected_rank(self) -> int:
        return 1

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int]:
        return (self.units,)

    def _build(self, input_shape) -> None:
        rng = backend.host_rng()
        self.add_param("kernel", self.kernel_initializer((input_shape[0], self.units), rng))
        if self.use_bias:
            self.add_param("bias", self.bias_initializer((self.units,), rng))

    def _forward(self, x, training):
        self._x = x
        y = x @ self.params["kernel"]
        if self.use_bias:
            y += self.params["bias"]
        return y

    def _backward(self, grad):
        self.grads["kernel"] = self._x.T @ grad
        if self.use_bias:
            self.grads["bias"] = grad.sum(axis=0)
        if not self.input_grad:
            return None
        return grad @ self.params["kernel"].T

    def config(self) -> dict:
        return {"units": self.units, "use_bias": self.use_bias}
