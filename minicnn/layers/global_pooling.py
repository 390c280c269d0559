"""Pooling over the whole image, channels-last: (N, H, W, C) -> (N, C).

GlobalAveragePooling2D
    y[n, c] = 1/(H W) sum over (h, w) of x[n, h, w, c]
    dx[n, h, w, c] = dy[n, c] / (H W)
GlobalMaxPooling2D
    y[n, c] = max over (h, w) of x[n, h, w, c]
    dx[n, h, w, c] = dy[n, c] at the one position that won the max (the first in
    row-major order on ties, as MaxPooling2D), zero everywhere else
"""
from __future__ import annotations

from typing import Any

from minicnn import backend
from minicnn.layers.base import Layer, check_data_format, plain


class _GlobalPooling2D(Layer):
    input_ndim = 4

    def __init__(self, data_format: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_data_format(data_format, type(self).__name__)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (input_shape[0], input_shape[3])

    def _require_cache(self) -> None:
        if self._cache is None:
            raise RuntimeError(f"{self.describe()}: backward needs a forward with training=True")

    def config(self) -> dict:
        return {}

    def get_config(self) -> dict:
        return plain({**super().get_config(), "data_format": "channels_last"})


class GlobalAveragePooling2D(_GlobalPooling2D):
    def _forward(self, x, training):
        self._cache = x.shape if self.keep_cache else None
        return x.mean(axis=(1, 2))

    def _backward(self, grad):
        self._require_cache()
        n, h, w, c = self._cache
        xp = backend.get_array_module(grad)
        return xp.broadcast_to((grad / (h * w))[:, None, None, :], (n, h, w, c)).copy()


class GlobalMaxPooling2D(_GlobalPooling2D):
    kink = "a max-pool tie"
    def _forward(self, x, training):
        n, h, w, c = x.shape
        flat = x.reshape(n, h * w, c)
        # argmax picks the first maximum: the row-major tie rule of MaxPooling2D.
        self._cache = (x.shape, flat.argmax(axis=1)) if self.keep_cache else None
        return flat.max(axis=1)

    def _backward(self, grad):
        self._require_cache()
        (n, h, w, c), winners = self._cache
        xp = backend.get_array_module(grad)
        won = xp.arange(h * w)[None, :, None] == winners[:, None, :]  # (N, H*W, C)
        return (won * grad[:, None, :]).reshape(n, h, w, c)
