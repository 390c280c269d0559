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
from minicnn.layers.base import Layer, check_data_format, check_padding, pair, plain
from minicnn.ops import windows as win


class Pooling2D(Layer):
    """What every 2-D pooling layer shares (Keras's _Pooling2D): its window, strides
    and padding, and the output shape they give."""
    input_ndim = 4

    def __init__(self, pool_size: int | tuple[int, int] = (2, 2),
                 strides: int | tuple[int, int] | None = None, padding: str = "valid",
                 data_format: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        kind = type(self).__name__
        check_data_format(data_format, kind)
        self.pool_size = pair(pool_size, "pool_size", kind)
        self.strides = pair(strides if strides is not None else self.pool_size, "strides", kind)
        self.padding = check_padding(padding, kind)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        n, h, w, c = input_shape
        (ph, pw), (sh, sw) = self.pool_size, self.strides
        oh = win.output_length(h, ph, sh, self.padding)
        ow = win.output_length(w, pw, sw, self.padding)
        if oh < 1 or ow < 1:
            raise ValueError(f"{self.describe()}: pool {self.pool_size} with padding 'valid' "
                             f"does not fit an input of {h}x{w}")
        return n, oh, ow, c

    def config(self) -> dict:
        return {"pool_size": self.pool_size, "strides": self.strides, "padding": self.padding}

    def get_config(self) -> dict:
        return plain({**super().get_config(), "data_format": "channels_last"})


class MaxPooling2D(Pooling2D):
    kink = "a max-pool tie"  # two inputs sharing a window's maximum (gradcheck names it)
    commutes_with_relu = True  # max(relu(z)) == relu(max(z)): see minicnn.plan
    _cache: ops.PoolCache | None = None  # the winners, kept by a forward for backward

    def _forward(self, x, training):
        y, self._cache = ops.max_pool_forward(x, self.pool_size, self.strides, self.padding,
                                              self.keep_cache)
        return y

    def _backward(self, grad):
        if self._cache is None:
            raise RuntimeError(f"{self.describe()}: backward needs a forward with training=True")
        return ops.max_pool_backward(grad, self._cache)
