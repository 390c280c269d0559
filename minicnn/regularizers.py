"""Weight and activity penalties with Keras 2.2.4's names and defaults.

    L1L2(l1=0, l2=0)     R(x) = l1 * sum |x| + l2 * sum x^2
                         dR/dx = l1 * sign(x) + 2 * l2 * x     (sign(0) = 0, as TensorFlow's)
    l1(l=0.01)           L1L2(l1=l)
    l2(l=0.01)           L1L2(l2=l)
    l1_l2(l1=0.01, l2=0.01)

A layer's ``kernel_regularizer`` (and bias, gamma, beta, alpha) adds R(weight)
to the loss and dR/dweight to that weight's gradient. An ``activity_regularizer``
adds R(output) of the layer's output for the whole batch (Keras 2.2.4 does not
divide it by the batch size) and dR/doutput to the gradient flowing into the
layer. ``get`` takes what Keras's does: None, a name ('l1', 'l2', 'l1_l2',
'L1L2'), a Keras config dict {"class_name": "L1L2", "config": {"l1": .., "l2": ..}}
or an instance. A custom penalty subclasses ``Regularizer`` and defines both
``__call__`` and ``gradient``: minicnn has no automatic differentiation. It
saves with the model (``serialize``: its class name and ``get_config()``,
which a penalty with arguments overrides) and loads back with
``load_model(path, custom_objects={"MyPenalty": MyPenalty})``.
"""
from __future__ import annotations

import math
import numbers
from typing import Any

from minicnn import backend


class Regularizer:
    """A penalty R(x) -> 0-d array added to the loss, with its gradient dR/dx."""

    def __call__(self, x: Any) -> Any:
        raise NotImplementedError

    def gradient(self, x: Any) -> Any:
        raise NotImplementedError

    def get_config(self) -> dict:
        return {}

    @classmethod
    def from_config(cls, config: dict) -> "Regularizer":
        return cls(**config)


def _factor(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) \
            or not math.isfinite(value) or value < 0:
        raise ValueError(f"L1L2: {name} must be a finite number >= 0, got {value!r}")
    return float(value)


class L1L2(Regularizer):
    def __init__(self, l1: float = 0.0, l2: float = 0.0) -> None:
        self.l1 = _factor(l1, "l1")
        self.l2 = _factor(l2, "l2")

    def __call__(self, x: Any) -> Any:
        xp = backend.get_array_module(x)
        penalty = xp.zeros((), dtype=x.dtype)  # a 0-d array on x's device, never a host read
        if self.l1:
            penalty = penalty + self.l1 * xp.abs(x).sum()
        if self.l2:
            penalty = penalty + self.l2 * (x * x).sum()
        return penalty

    def gradient(self, x: Any) -> Any:
        xp = backend.get_array_module(x)
        grad = xp.zeros_like(x)
        if self.l1:
            grad = grad + self.l1 * xp.sign(x)
        if self.l2:
            grad = grad + (2 * self.l2) * x
        return grad

    def get_config(self) -> dict:
        return {"l1": self.l1, "l2": self.l2}

    def __repr__(self) -> str:
        return f"L1L2(l1={self.l1!r}, l2={self.l2!r})"


def l1(l: float = 0.01) -> L1L2:  # noqa: E741 (Keras's argument name)
    return L1L2(l1=l)


def l2(l: float = 0.01) -> L1L2:  # noqa: E741
    return L1L2(l2=l)


def l1_l2(l1: float = 0.01, l2: float = 0.01) -> L1L2:
    return L1L2(l1=l1, l2=l2)


NAMES = {"l1": l1, "l2": l2, "l1_l2": l1_l2, "L1L2": L1L2}


def serialize(regularizer: Regularizer | None) -> dict | None:
    """Keras's config form: {"class_name": "L1L2", "config": {"l1": .., "l2": ..}}."""
    if regularizer is None:
        return None
    return {"class_name": type(regularizer).__name__, "config": regularizer.get_config()}


def get(identifier: Any, where: str = "regularizer",
        custom_objects: dict | None = None) -> Regularizer | None:
    """A regularizer from None, a name, a Keras config dict or an instance. A name or
    config's ``class_name`` is looked up in ``custom_objects`` first (your own
    Regularizer subclass, made with its ``from_config``, or a function returning
    one), then among the built-in names, as Keras's ``regularizers.get`` does."""
    if identifier is None or isinstance(identifier, Regularizer):
        return identifier
    if isinstance(identifier, str):
        identifier = {"class_name": identifier, "config": {}}
    if isinstance(identifier, dict):
        if set(identifier) != {"class_name", "config"} or not isinstance(identifier["config"],
                                                                         dict):
            raise ValueError(f"{where}: a regularizer config must be "
                             "{'class_name': ..., 'config': {...}}, got " f"{identifier!r}")
        name = identifier["class_name"]
        custom = (custom_objects or {}).get(name)
        make = custom or NAMES.get(name)
        if make is None:
            raise ValueError(f"{where}: unknown regularizer {name!r}: expected one of "
                             f"{', '.join(NAMES)}; if it is your own Regularizer subclass, "
                             f"pass it as custom_objects={{{name!r}: {name}}}")
        config = dict(identifier["config"])
        try:
            made = make.from_config(config) if isinstance(make, type) and \
                issubclass(make, Regularizer) else make(**config)
        except TypeError as exc:
            raise ValueError(f"{where}: bad config for {name}: {exc}") from None
        if not isinstance(made, Regularizer):
            raise ValueError(f"{where}: custom_objects[{name!r}] made a "
                             f"{type(made).__name__}, not a minicnn.regularizers.Regularizer")
        return made
    if callable(identifier):
        raise ValueError(f"{where}: {identifier!r} has no gradient; a custom penalty must "
                         "subclass minicnn.regularizers.Regularizer and define __call__(x) "
                         "and gradient(x)")
    raise ValueError(f"{where}: could not interpret regularizer {identifier!r}: expected None, "
                     f"a name ({', '.join(NAMES)}), a config dict or a Regularizer")
