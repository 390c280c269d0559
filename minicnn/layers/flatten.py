"""Flatten every sample to a vector: (N, d1, d2, ...) -> (N, d1*d2*...).

Backward only undoes the reshape: dx = dy.reshape(x.shape).
"""
from __future__ import annotations

import math
from typing import Any

from minicnn.layers.base import Layer, check_data_format, plain


class Flatten(Layer):
    def __init__(self, data_format: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_data_format(data_format, "Flatten")

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (input_shape[0], math.prod(input_shape[1:]))

    def _forward(self, x, training):
        self._shape = x.shape
        return x.reshape(x.shape[0], -1)

    def _backward(self, grad):
        return grad.reshape(self._shape)

    def get_config(self) -> dict:
        return plain({**super().get_config(), "data_format": "channels_last"})
