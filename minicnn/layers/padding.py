"""Zeros around the image, or rows and columns cut off it, channels-last.

ZeroPadding2D(padding):  y = x with top/bottom rows and left/right columns of zeros
    y[n, top + h, left + w, c] = x[n, h, w, c]      dx = dy[:, top:-bottom, left:-right, :]
Cropping2D(cropping):    y = x[:, top:H - bottom, left:W - right, :]
    dx = dy with the cut rows and columns put back as zeros

Both take Keras's three forms: an int p (p on every side), a pair (ph, pw)
(ph above and below, pw left and right), or ((top, bottom), (left, right)).
"""
from __future__ import annotations

import numbers
from typing import Any

from minicnn.layers.base import Layer, check_data_format, plain
from minicnn.ops import windows as win

Amounts = tuple[tuple[int, int], tuple[int, int]]


def _amount(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 0


def amounts(value: Any, what: str, layer: str) -> Amounts:
    """((top, bottom), (left, right)) from an int, a pair, or a pair of pairs."""
    expected = (f"{layer}: {what} must be an int >= 0, a pair (rows, columns) or "
                f"((top, bottom), (left, right)) of ints >= 0, got {value!r}")
    if _amount(value):
        return (int(value), int(value)), (int(value), int(value))
    try:
        first, second = value
    except (TypeError, ValueError):
        raise ValueError(expected) from None
    if _amount(first) and _amount(second):
        return (int(first), int(first)), (int(second), int(second))
    pairs = []
    for side in (first, second):
        try:
            a, b = side
        except (TypeError, ValueError):
            raise ValueError(expected) from None
        if not (_amount(a) and _amount(b)):
            raise ValueError(expected)
        pairs.append((int(a), int(b)))
    return pairs[0], pairs[1]


class ZeroPadding2D(Layer):
    input_ndim = 4

    def __init__(self, padding: Any = (1, 1), data_format: str | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_data_format(data_format, "ZeroPadding2D")
        self.padding = amounts(padding, "padding", "ZeroPadding2D")

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        n, h, w, c = input_shape
        (top, bottom), (left, right) = self.padding
        return n, h + top + bottom, w + left + right, c

    def _forward(self, x, training):
        y = win.pad(x, self.padding)
        return y.copy() if y is x else y  # a new array, whatever the padding

    def _backward(self, grad):
        return win.crop(grad, self.padding).copy()

    def config(self) -> dict:
        return {"padding": self.padding}

    def get_config(self) -> dict:
        return plain({**super().get_config(), "data_format": "channels_last"})


class Cropping2D(Layer):
    input_ndim = 4

    def __init__(self, cropping: Any = ((0, 0), (0, 0)), data_format: str | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_data_format(data_format, "Cropping2D")
        self.cropping = amounts(cropping, "cropping", "Cropping2D")

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        n, h, w, c = input_shape
        (top, bottom), (left, right) = self.cropping
        if top + bottom >= h or left + right >= w:
            raise ValueError(f"{self.describe()}: cropping {self.cropping} leaves nothing of an "
                             f"input of {h}x{w}; crop fewer than {h} rows and {w} columns")
        return n, h - top - bottom, w - left - right, c

    def _forward(self, x, training):
        return win.crop(x, self.cropping).copy()

    def _backward(self, grad):
        return win.pad(grad, self.cropping)

    def config(self) -> dict:
        return {"cropping": self.cropping}

    def get_config(self) -> dict:
        return plain({**super().get_config(), "data_format": "channels_last"})
