"""Inverted dropout.

Training:  y = x * m,  m_i = Bernoulli(1 - rate) / (1 - rate)
Inference: y = x
Backward:  dx = dy * m   (the same mask as forward)

Scaling at training time keeps the expected activation unchanged, so
inference needs no correction. The mask comes from the layer's own
generator: seed it (or ``minicnn.set_seed``) and the masks repeat.
"""
from __future__ import annotations

from typing import Any

from minicnn import backend, ops
from minicnn.layers.base import Layer, plain, unsupported


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
        self._mask = None  # m of the last training forward; None: backward is the identity

    def build(self, input_shape: tuple) -> None:
        self.rng = backend.device_rng(self.seed)
        super().build(input_shape)

    def get_rng_state(self) -> dict | None:
        return None if self.rng is None else backend.rng_state(self.rng)

    def set_rng_state(self, state: dict | None) -> None:
        if self.rng is not None and state is not None:
            backend.set_rng_state(self.rng, state)

    def _forward(self, x, training):
        if not training or self.rate == 0.0:
            self._mask = None
            return x
        u = self.rng.random(x.shape, dtype=x.dtype)  # m_i = (u_i >= rate) / (1 - rate)
        y, self._mask = ops.dropout_forward(x, u, self.rate)
        return y

    def _backward(self, grad):
        if self._mask is None:
            return grad
        return ops.dropout_backward(grad, self._mask)

    def config(self) -> dict:
        return {"rate": self.rate}

    def get_config(self) -> dict:
        return plain({**super().get_config(), "noise_shape": None, "seed": self.seed})
