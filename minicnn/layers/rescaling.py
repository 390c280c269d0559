"""A constant affine map, tf.keras's ``Rescaling`` (Keras 2.2.4 has none):

    y = x * scale + offset        dx = dy * scale

``scale`` and ``offset`` are constants, not weights: to scale logits by 1/9 at
the end of a network, or inputs from [0, 255] to [0, 1] at its start.
"""
from __future__ import annotations

import math
import numbers
from typing import Any

from minicnn.layers.base import Layer, plain


def _constant(value: float, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) \
            or not math.isfinite(value):
        raise ValueError(f"Rescaling: {what} must be a finite number, got {value!r}")
    return float(value)


class Rescaling(Layer):
    def __init__(self, scale: float, offset: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.scale = _constant(scale, "scale")
        self.offset = _constant(offset, "offset")

    def _forward(self, x, training):
        # Python floats keep x's dtype (float32 stays float32).
        y = x * self.scale
        return y + self.offset if self.offset else y

    def _backward(self, grad):
        return grad * self.scale if self.input_grad else None

    def config(self) -> dict:
        return {"scale": self.scale, "offset": self.offset}

    def get_config(self) -> dict:
        return plain({**super().get_config(), **self.config()})
