"""Fully connected layer.

Forward:   y = x @ W + b                 x (N, in), W (in, units), b (units,)
Backward:  dW = x^T @ dy    db = sum_n dy    dx = dy @ W^T
"""
from __future__ import annotations

from typing import Any, Callable

from minicnn import activations, initializers, regularizers
from minicnn.layers.base import Layer, plain, positive_int, regularizer_config, unsupported


class Dense(Layer):
    input_ndim = 2

    def __init__(self, units: int, activation: str | activations.ActivationFunction | None = None,
                 use_bias: bool = True, kernel_initializer: str | Callable = "glorot_uniform",
                 bias_initializer: str | Callable = "zeros", kernel_regularizer: Any = None,
                 bias_regularizer: Any = None, activity_regularizer: Any = None,
                 kernel_constraint: Any = None, bias_constraint: Any = None,
                 **kwargs: Any) -> None:
        if "input_shape" not in kwargs and "input_dim" in kwargs:  # Keras 2's Dense(input_dim=)
            kwargs["input_shape"] = (kwargs.pop("input_dim"),)
        super().__init__(**kwargs)
        unsupported("Dense", kernel_constraint=kernel_constraint, bias_constraint=bias_constraint)
        self.kernel_regularizer = regularizers.get(kernel_regularizer, "Dense kernel_regularizer")
        self.bias_regularizer = regularizers.get(bias_regularizer, "Dense bias_regularizer")
        self.activity_regularizer = regularizers.get(activity_regularizer,
                                                     "Dense activity_regularizer")
        self.units = positive_int(units, "units", "Dense")
        self.use_bias = bool(use_bias)
        self.kernel_initializer = initializers.get(kernel_initializer, "Dense kernel_initializer")
        self.bias_initializer = initializers.get(bias_initializer, "Dense bias_initializer")
        self.activation = activations.get(activation, "Dense") if activation is not None else None
        if self.activation is not None:
            # Our output is a new array nobody else holds: the activation may work in place.
            self.activation.overwrite_input = True

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (input_shape[0], self.units)

    def build(self, input_shape: tuple) -> None:
        self.add_weight("kernel", (input_shape[-1], self.units),
                        initializer=self.kernel_initializer, regularizer=self.kernel_regularizer)
        if self.use_bias:
            self.add_weight("bias", (self.units,), initializer=self.bias_initializer,
                            regularizer=self.bias_regularizer)
        super().build(input_shape)

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
        return {"units": self.units, "use_bias": self.use_bias,
                "activation": activations.name_of(self.activation)}

    def get_config(self) -> dict:
        return plain({
            **super().get_config(), "units": self.units,
            "activation": activations.serialize(self.activation), "use_bias": self.use_bias,
            "kernel_initializer": initializers.serialize(self.kernel_initializer),
            "bias_initializer": initializers.serialize(self.bias_initializer),
            **regularizer_config(self, "kernel", "bias", "activity"),
            "kernel_constraint": None, "bias_constraint": None})
