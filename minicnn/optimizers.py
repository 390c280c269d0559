"""Stochastic gradient descent with Keras 2's time-based decay and momentum.

    lr_t = lr / (1 + decay * t)        t = updates (batches) done so far
    v    = momentum * v - lr_t * g
    w   += v                           (plain)
    w   += momentum * v - lr_t * g     (Nesterov)

Updates are in place, so arrays held elsewhere (``layer.params``) see them.
"""
from __future__ import annotations

import numbers
from typing import Any, Iterable

from minicnn import backend


# w -= lr * g in one pass (the plain update; its twin is the two NumPy steps in apply).
SGD_UPDATE = backend.Kernel(
    name="minicnn_sgd_update",
    in_params="T g, T lr",
    out_params="T w",
    operation="w -= lr * g;")


class SGD:
    def __init__(self, learning_rate: float = 0.01, momentum: float = 0.0, decay: float = 0.0,
                 nesterov: bool = False, lr: float | None = None) -> None:
        if lr is not None:  # Keras 2's name, used by the tutorial
            learning_rate = lr
        for name, value in (("learning_rate", learning_rate), ("momentum", momentum),
                            ("decay", decay)):
            if not isinstance(value, numbers.Real) or isinstance(value, bool) or value < 0:
                raise ValueError(f"SGD: {name} must be a number >= 0, got {value!r}")
        self.learning_rate = float(learning_rate)
        self.momentum = float(momentum)
        self.decay = float(decay)
        self.nesterov = bool(nesterov)
        self.iterations = 0
        self.velocities: dict[tuple[int, str], object] = {}
        self._scratch: dict[tuple[int, str], object] = {}  # work arrays, not state

    def get_config(self) -> dict:
        return {"learning_rate": self.learning_rate, "momentum": self.momentum,
                "decay": self.decay, "nesterov": self.nesterov}

    @property
    def current_learning_rate(self) -> float:
        """The rate the next update will use."""
        return self.learning_rate / (1.0 + self.decay * self.iterations)

    @property
    def lr(self) -> float:
        """Keras 2's name for the initial learning rate."""
        return self.learning_rate

    def apply(self, layers: Iterable[Any]) -> None:
        """One update of every parameter of ``layers`` from its gradient."""
        lr = self.current_learning_rate
        for index, layer in enumerate(layers):
            for name, param in layer.params.items():
                key = (index, name)
                xp = backend.get_array_module(param)
                gpu = backend.kernel(SGD_UPDATE, param) if self.momentum == 0.0 else None
                if gpu is not None:  # one launch per parameter instead of two
                    gpu(layer.grads[name], param.dtype.type(lr), param)
                    continue
                # NumPy has no fused axpy (w -= lr*g would allocate lr*g every step):
                # scale g into a scratch array kept per parameter, then subtract in place.
                step = self._scratch.get(key)
                if step is None or step.shape != param.shape or step.dtype != param.dtype:
                    step = self._scratch[key] = xp.empty_like(param)
                xp.multiply(layer.grads[name], lr, out=step)  # lr*g; a Python float keeps float32
                if self.momentum == 0.0:
                    param -= step
                    continue
                if key not in self.velocities:
                    self.velocities[key] = xp.zeros_like(param)
                v = self.velocities[key]
                v *= self.momentum
                v -= step
                if self.nesterov:  # w += momentum*v - lr*g
                    param -= step
                    xp.multiply(v, self.momentum, out=step)
                    param += step
                else:
                    param += v
        self.iterations += 1


OPTIMIZERS = {"sgd": SGD}


def get(identifier: str | SGD) -> SGD:
    if isinstance(identifier, SGD):
        return identifier
    if identifier not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {identifier!r}: expected one of "
                         f"{', '.join(OPTIMIZERS)} or an optimizer instance")
    return OPTIMIZERS[identifier]()
