"""Weight initializers with Keras's defaults, drawn on the host.

    glorot_uniform  W ~ U(-l, l),  l = sqrt(6 / (fan_in + fan_out))
    he_normal       W ~ N(0, s^2) truncated at 2s, with s chosen so that the truncated
                    values have variance 2 / fan_in (Keras's variance scaling)
    zeros, ones     W = 0, W = 1

For a conv kernel (kh, kw, c_in, filters): fan_in = kh*kw*c_in and
fan_out = kh*kw*filters; for a dense kernel (in, units): fan_in = in, fan_out = units.
Weights are drawn with NumPy whatever the backend, so a seed gives the same
network on the CPU and on the GPU.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np


def fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """(fan_in, fan_out) of a kernel shape, Keras's convention."""
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive_field = math.prod(shape[:-2])
    return shape[-2] * receptive_field, shape[-1] * receptive_field


def glorot_uniform(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    fan_in, fan_out = fans(shape)
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=shape)


def he_normal(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    fan_in, _ = fans(shape)
    # Keras draws from a truncated normal whose std is sqrt(2/fan_in) after truncation.
    std = math.sqrt(2.0 / fan_in) / 0.87962566103423978
    values = rng.standard_normal(size=shape)
    outside = np.abs(values) > 2
    while outside.any():  # redraw the tails: a normal truncated at +-2 std
        values[outside] = rng.standard_normal(size=int(outside.sum()))
        outside = np.abs(values) > 2
    return values * std


def zeros(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    return np.zeros(shape)


def ones(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    return np.ones(shape)


INITIALIZERS: dict[str, Callable] = {f.__name__: f for f in (glorot_uniform, he_normal, zeros,
                                                              ones)}


def get(identifier: str | Callable, where: str = "initializers.get") -> Callable:
    """An initializer ``f(shape, rng) -> np.ndarray`` from its name, or a callable as is;
    ``where`` names the caller (a layer) in the error for an unknown name."""
    if callable(identifier):
        return identifier
    if not isinstance(identifier, str) or identifier not in INITIALIZERS:
        raise ValueError(f"{where}: unknown initializer {identifier!r}: expected one of "
                         f"{', '.join(sorted(INITIALIZERS))} or a callable f(shape, rng)")
    return INITIALIZERS[identifier]
