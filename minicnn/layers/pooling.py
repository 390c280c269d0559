"""Max-pooling over kh x kw windows, channels-last.

Forward:  y[n, oy, ox, c] = max over (i, j) of x[n, oy*sh + i, ox*sw + j, c]
Backward: the whole of dy goes to the one input that won the max (the first
one in row-major window order on ties); every other input gets zero.

``ops.max_pool_forward`` returns y and the winners, ``ops.max_pool_backward``
sends dy to them; the plain version is in ``minicnn/ops/reference.py``, the
fast one (tiles, strided windows, GPU kernels) in ``minicnn/ops/pooling.py``.
"""
from __future__ import annotations

from typing import Any

from minicnn import ops
from minicnn.layers.base import Layer, check_data_format, check_padding, pair
from minicnn.ops import windows as win


class MaxPooling2D(Layer):
    kink = "a max-pool tie"  # two inputs sharing a window's maximum (gradcheck names it)
    input_ndim = 4
    commutes_with_relu = True  # max(relu(z)) == relu(max(z)): see minicnn.plan

    def __init__(self, pool_size: int | tuple[int, int] = (2, 2),
                 strides: int | tuple[int, int] | None = None, padding: str = "valid",
                 data_format: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_data_format(data_format, "MaxPooling2D")
        self.pool_size = pair(pool_size, "pool_size", "MaxPooling2D")
        self.strides = pair(strides if strides is not None else self.pool_size, "strides",
                            "MaxPooling2D")
        self.padding = check_padding(padding, "MaxPooling2D")
        self._cache: ops.PoolCache | None = None

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        n, h, w, c = input_shape
        (ph, pw), (sh, sw) = self.pool_size, self.strides
        oh = win.output_length(h, ph, sh, self.padding)
        ow = win.output_length(w, pw, sw, self.padding)
        if oh < 1 or ow < 1:
            raise ValueError(f"{self.describe()}: pool {self.pool_size} with padding 'valid' "
                             f"does not fit an input of {h}x{w}")
        return n, oh, ow, c

    def _forward(self, x, training):
        y, self._cache = ops.max_pool_forward(x, self.pool_size, self.strides, self.padding,
                                              self.keep_cache)
        return y

    def _backward(self, grad):
        if self._cache is None:
            raise RuntimeError(f"{self.describe()}: backward needs a forward with training=True")
        return ops.max_pool_backward(grad, self._cache)

    def config(self) -> dict:
        return {"pool_size": self.pool_size, "strides": self.strides, "padding": self.padding}
