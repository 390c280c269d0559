"""Flatten every sample to a vector: (N, d1, d2, ...) -> (N, d1*d2*...).

Backward only undoes the reshape: dx = dy.reshape(x.shape).
"""
from __future__ import annotations

import math

from minicnn.layers.base import Layer


class Flatten(Layer):
    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int]:
        return (math.prod(input_shape),)

    def _forward(self, x, training):
        self._shape = x.shape
        return x.reshape(x.shape[0], -1)

    def _backward(self, grad):
        return grad.reshape(self._shape)
