"""Stochastic gradient descent with Keras 2's time-based decay and momentum.

    lr_t = lr / (1 + decay * t)        t = updates (batches) done so far
    v    = momentum * v - lr_t * g
    w   += v                           (plain)
    w   += momentum * v - lr_t * g     (Nesterov)

With ``clipnorm`` every gradient is first scaled by clipnorm / ||g|| when the
norm of all gradients together exceeds it (Keras 2.2's rule); with
``clipvalue`` each entry is clipped to [-clipvalue, clipvalue]. A layer with
``trainable = False`` (or a weight made with ``add_weight(trainable=False)``)
is left alone.

Updates are in place, so arrays held elsewhere (``layer.params``) see them.
The state that must survive a restart (``t`` and every ``v``) comes out of
``get_state()`` and goes back with ``set_state``, keyed by layer and weight name.
"""
from __future__ import annotations

import functools
import math
import numbers
from typing import Any, Iterable

from minicnn import backend, ops


def _number(value: Any, name: str, low: float, high: float = math.inf,
            high_open: bool = False) -> float:
    """A finite real in [low, high] (or [low, high)), else a ValueError naming it."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = low <= value and (value < high if high_open else value <= high)
    if not ok:
        bound = f"[{low:g}, {high:g})" if high_open else \
            (f">= {low:g}" if math.isinf(high) else f"[{low:g}, {high:g}]")
        raise ValueError(f"SGD: {name} must be a finite number {bound}, got {value!r}")
    return float(value)


class SGD:
    def __init__(self, lr: float = 0.01, momentum: float = 0.0, decay: float = 0.0,
                 nesterov: bool = False, clipnorm: float | None = None,
                 clipvalue: float | None = None, learning_rate: float | None = None) -> None:
        if learning_rate is not None:  # the name Keras 2.3+ and PyTorch users type
            lr = learning_rate
        self.learning_rate = _number(lr, "lr", 0.0)
        self.momentum = _number(momentum, "momentum", 0.0, 1.0, high_open=True)
        self.decay = _number(decay, "decay", 0.0)
        if not isinstance(nesterov, (bool, numbers.Integral)):
            raise ValueError(f"SGD: nesterov must be True or False, got {nesterov!r}")
        self.nesterov = bool(nesterov)
        # Keras's default for both is "no clipping"; 0 means the same there.
        self.clipnorm = None if clipnorm is None else _number(clipnorm, "clipnorm", 0.0)
        self.clipvalue = None if clipvalue is None else _number(clipvalue, "clipvalue", 0.0)
        self.iterations = 0
        # v per weight, keyed (layer name, weight name) so the state outlives layer order
        self.velocities: dict[tuple[str, str], object] = {}
        self._scratch: dict[tuple[str, str], object] = {}  # work arrays, not state

    def get_config(self) -> dict:
        config = {"lr": self.learning_rate, "momentum": self.momentum,  # Keras 2.2.4's keys
                  "decay": self.decay, "nesterov": self.nesterov}
        for name in ("clipnorm", "clipvalue"):
            if getattr(self, name):
                config[name] = getattr(self, name)
        return config

    @property
    def current_learning_rate(self) -> float:
        """The rate the next update will use."""
        return self.learning_rate / (1.0 + self.decay * self.iterations)

    @property
    def lr(self) -> float:
        """Keras 2's name for the initial learning rate."""
        return self.learning_rate

    def get_state(self) -> dict:
        """What a restart needs: ``{"iterations": t, "velocities": {layer: {weight: v}}}``
        (the live arrays, on the backend: copy them to keep a snapshot)."""
        velocities: dict[str, dict[str, Any]] = {}
        for (layer, weight), value in self.velocities.items():
            velocities.setdefault(layer, {})[weight] = value
        return {"iterations": self.iterations, "velocities": velocities}

    def set_state(self, state: dict) -> None:
        """Continue from ``get_state()`` output: copies of its arrays, on the backend in
        floatx (so two optimizers never share a buffer)."""
        self.iterations = int(state["iterations"])
        self.velocities = {(layer, weight): backend.to_device(value, dtype=backend.floatx()).copy()
                           for layer, weights in state.get("velocities", {}).items()
                           for weight, value in weights.items()}

    def gradients(self, layers: Iterable[Any]) -> list[tuple[tuple[str, str], Any, Any]]:
        """((layer name, weight name), parameter, gradient) for every weight to update,
        with Keras's clipping applied (to copies: the layers keep their raw gradients)."""
        items = [((layer.name, name), layer.params[name], layer.grads[name])
                 for layer in layers for name in layer.trained_params()]
        if self.clipnorm:
            xp = backend.get_array_module(items[0][1]) if items else None
            norm = float(xp.sqrt(sum((g * g).sum() for _, _, g in items))) if items else 0.0
            if norm >= self.clipnorm:
                items = [(key, p, g * (self.clipnorm / norm)) for key, p, g in items]
        if self.clipvalue:
            items = [(key, p, backend.get_array_module(g).clip(g, -self.clipvalue, self.clipvalue))
                     for key, p, g in items]
        return items

    def _step(self, key: tuple[int, str], param: Any) -> Any:
        """A scratch array for lr*g, kept per parameter: NumPy has no fused axpy, and
        w -= lr*g would allocate lr*g every step."""
        step = self._scratch.get(key)
        if step is None or step.shape != param.shape or step.dtype != param.dtype:
            step = self._scratch[key] = backend.get_array_module(param).empty_like(param)
        return step

    def apply(self, layers: Iterable[Any]) -> None:
        """One update of every trainable parameter of ``layers`` from its gradient."""
        lr = self.current_learning_rate
        for key, param, grad in self.gradients(layers):
            xp = backend.get_array_module(param)
            if self.momentum == 0.0:
                ops.sgd_update(param, grad, lr, functools.partial(self._step, key, param))
                continue
            step = self._step(key, param)
            xp.multiply(grad, lr, out=step)  # lr*g; a Python float keeps float32
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
