"""Inverted dropout.

Training:  y = x * m / (1 - rate),  m_i ~ Bernoulli(1 - rate)
Inference: y = x
Backward:  dx = dy * m / (1 - rate)   (the same mask as forward)

Scaling at training time keeps the expected activation unchanged, so
inference needs no correction. The mask comes from the layer's own
generator: seed it (or ``minicnn.set_seed``) and the masks repeat.
"""
from __future__ import annotations

from typing import Any

from minicnn import backend
from minicnn.layers.base import Layer, unsupported


# Mask and product in one pass from the uniform draws u (the twin is _forward).
DROPOUT = backend.Kernel(
    name="minicnn_dropout",
    in_params="T u, T x, T rate, T scale",
    out_params="T y, T mask",
    operation="mask = u >= rate ? scale : (T)0; y = x * mask;")


class Dropout(Layer):
    def __init__(self, rate: float, noise_shape: Any = None, seed: int | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        unsupported("Dropout", noise_shape=noise_shape)
        try:  # a float, an int, a NumPy scalar or 0-d array; not a string or a bool
            value = float(rate) if not isinstance(rate, (str, bytes, bool)) else None
        except (TypeError, ValueError):
            value = None
        if value is None or not 0.0 <= value < 1.0:
            raise ValueError(f"Dropout: rate must be a number in [0, 1), got {rate!r}")
        self.rate = value
        self.seed = seed
        self.rng = None

    def build(self, input_shape: tuple) -> None:
        self.rng = backend.device_rng(self.seed)
        super().build(input_shape)

    def _forward(self, x, training):
        if not training or self.rate == 0.0:
            self._mask = None
            return x
        u = self.rng.random(x.shape, dtype=x.dtype)
        scale = x.dtype.type(1.0 / (1.0 - self.rate))
        xp = backend.get_array_module(x)
        y, self._mask = xp.empty_like(x), xp.empty_like(x)
        gpu = backend.kernel(DROPOUT, x)
        if gpu is not None:
            gpu(u, x, x.dtype.type(self.rate), scale, y, self._mask)
            return y

        def drop(images: slice) -> None:  # over_batch runs the images in parallel parts
            xp.multiply(u[images] >= self.rate, scale, out=self._mask[images])
            xp.multiply(x[images], self._mask[images], out=y[images])
        backend.over_batch(drop, x)
        return y

    def _backward(self, grad):
        if self._mask is None:
            return grad
        xp = backend.get_array_module(grad)
        dx = xp.empty_like(grad)
        backend.over_batch(lambda images: xp.multiply(grad[images], self._mask[images],
                                                      out=dx[images]), grad)
        return dx

    def config(self) -> dict:
        return {"rate": self.rate}
