"""A layer that only applies an activation: y = f(x), dx = f'(x) * dy.

The function itself (see ``minicnn.activations``) lives in ``self.activation``,
the same slot ``Dense(activation=...)`` uses, so the layer's own part is the
identity. That is what lets the model fuse a final ``Activation("softmax")``
with the cross-entropy loss.
"""
from __future__ import annotations

from typing import Any

from minicnn import activations
from minicnn.layers.base import Layer, plain


class Activation(Layer):
    def __init__(self, activation: str | activations.ActivationFunction, **kwargs: Any) -> None:
        if activation is None:
            raise ValueError("Activation: give an activation name such as 'relu' or 'softmax', "
                             "got None")
        super().__init__(**kwargs)
        self.activation = activations.get(activation, "Activation")

    def _forward(self, x, training):
        return x

    def _backward(self, grad):
        return grad

    def config(self) -> dict:
        return {"activation": self.activation.name}

    def get_config(self) -> dict:
        return plain({**super().get_config(),
                      "activation": activations.serialize(self.activation)})
