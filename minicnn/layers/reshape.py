"""Reshape every sample: (N, *input) -> (N, *target_shape), one entry may be -1.

Forward:  y = x.reshape(N, *target)     (row-major order, as NumPy and Keras)
Backward: dx = dy.reshape(x.shape)      (a reshape moves no value)
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Sequence

from minicnn.layers.base import Layer


class Reshape(Layer):
    def __init__(self, target_shape: Sequence[int], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        try:
            target = tuple(target_shape)
        except TypeError:
            raise ValueError(f"Reshape: target_shape must be a tuple of ints such as (4, 4, 2) "
                             f"(without the batch axis), got {target_shape!r}") from None
        ok = all(isinstance(d, numbers.Integral) and not isinstance(d, bool)
                 and (d >= 1 or d == -1) for d in target)
        if not target or not ok or target.count(-1) > 1:
            raise ValueError(f"Reshape: target_shape must be positive ints with at most one -1 "
                             f"(the size left over), without the batch axis, got "
                             f"{target_shape!r}")
        self.target_shape = tuple(int(d) for d in target)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        size = math.prod(input_shape[1:])
        known = math.prod(d for d in self.target_shape if d != -1)
        if -1 in self.target_shape:
            if size % known:
                raise ValueError(f"{self.describe()}: cannot reshape a sample of shape "
                                 f"{tuple(input_shape[1:])} ({size} values) to "
                                 f"{self.target_shape}: {size} is not a multiple of {known}")
            shape = tuple(size // known if d == -1 else d for d in self.target_shape)
        elif known != size:
            raise ValueError(f"{self.describe()}: cannot reshape a sample of shape "
                             f"{tuple(input_shape[1:])} ({size} values) to {self.target_shape} "
                             f"({known} values)")
        else:
            shape = self.target_shape
        return (input_shape[0], *shape)

    def _forward(self, x, training):
        self._shape = x.shape
        return x.reshape((x.shape[0], *self.output_shape[1:]))

    def _backward(self, grad):
        return grad.reshape(self._shape)

    def config(self) -> dict:
        return {"target_shape": self.target_shape}
