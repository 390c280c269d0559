"""One training step of a compiled model, its divergence check, and its profile.

    out = model.loss_input(x)   L = loss(out, y)   model.backward(dL/dout)   optimizer.apply

The ReLU moves of the model's plan (``minicnn.plan``) are read once at the
start of a step and given to both passes.
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np

from minicnn import backend
from minicnn.backend import Array
from minicnn.training.interrupts import TrainingDiverged
from minicnn.training.tracing import GradientTracer


def batch_loss(model: Any, x: Array, y: Array, training: bool,
               relu_moves: frozenset[int] | None = None) -> tuple[Array, Array | None]:
    """(mean loss, number correct or None without metrics) for one batch, on the device."""
    out = model.loss_input(x, training, relu_moves)
    loss_value = model.loss_function().forward(out, y)
    correct = None
    if model.metrics:
        truth = y.reshape(-1) if model.loss.sparse else y.argmax(axis=1)
        correct = (out.argmax(axis=1) == truth).sum()
    return loss_value, correct


def train_step(model: Any, x: Array, y: Array, tracer: GradientTracer | None = None,
               epoch: int = 0, step: int = 0, check_finite: bool = True
               ) -> tuple[Array, Array | None]:
    """One step on a checked batch: (mean loss, number correct), on the device.

    Only shapes are checked: a check of values would stall a GPU on every step.
    With ``check_finite`` it raises ``TrainingDiverged`` before touching the
    weights when the loss or any gradient is NaN or infinite; NumPy's own
    overflow warnings are silenced because that check reports the problem.
    """
    if tracer is not None:
        tracer.start(model.layers)  # its hooks make every layer watched: no ReLU moves
    try:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            moves = model.relu_moves()
            loss_value, correct = batch_loss(model, x, y, True, moves)
            model.backward(model.loss_function().backward(), moves)
            if check_finite:
                check_finite_step(model.layers, loss_value)
    finally:
        if tracer is not None:
            tracer.before_update(model.layers)  # also takes its hooks off again
    model.optimizer.apply(model.layers)
    if tracer is not None:
        tracer.after_update(model.layers, epoch, step)
    return loss_value, correct


def check_finite_step(layers: list, loss_value: Array) -> None:
    """Raise ``TrainingDiverged`` naming where a NaN or inf first appeared, if one did."""
    # One sum, one host read: a NaN or inf anywhere makes the whole sum non-finite.
    total = loss_value + sum(g.sum() for layer in layers for g in layer.grads.values())
    xp = backend.get_array_module(loss_value)
    if bool(xp.isfinite(total)):
        return
    if not bool(xp.isfinite(loss_value)):
        raise TrainingDiverged(f"the loss became {float(loss_value)}")
    # Backward runs from the loss towards the input, and a NaN spreads to every
    # layer below where it appeared: the first one backward met is the culprit.
    for layer in reversed(layers):
        for name, grad in layer.grads.items():
            if not bool(xp.isfinite(grad).all()):
                raise TrainingDiverged(f"the gradient of {layer.name}/{name} became "
                                       "non-finite (the first layer backward reached where it did)")
    raise TrainingDiverged("the gradients overflowed")


def _clock(like: Array) -> float:
    """time.perf_counter() once the device that holds ``like`` has finished its work."""
    backend.synchronize(like)
    return time.perf_counter()


def profile_step(model: Any, x: Array, y: Array) -> dict:
    """``train_step`` (no accuracy count) with a clock at each layer's forward and
    backward hook; see ``Sequential.profile_step`` for the dict it returns."""
    n = len(model.layers)
    times = {"forward": [0.0] * n, "backward": [0.0] * n}
    moves = model.relu_moves()  # read before the clock's hooks, which count as watchers
    mark = [0.0]

    def timer(part: str, i: int):
        def hook(layer, a, b):  # each layer's time runs from the hook before it
            now = _clock(a)
            times[part][i], mark[0] = now - mark[0], now
        return hook

    handles = [hook for i, layer in enumerate(model.layers)
               for hook in (layer.register_forward_hook(timer("forward", i)),
                            layer.register_backward_hook(timer("backward", i)))]
    try:
        start = mark[0] = _clock(x)
        out = model.loss_input(x, True, moves)
        t = _clock(x)
        loss_fn = model.loss_function()
        loss_value = loss_fn.forward(out, y)
        grad = loss_fn.backward()
        mark[0] = _clock(x)
        loss_time = mark[0] - t
        model.backward(grad, moves)
    finally:
        for handle in handles:
            handle.remove()
    t = _clock(x)
    check_finite_step(model.layers, loss_value)
    check_time = _clock(x) - t
    t = _clock(x)
    model.optimizer.apply(model.layers)
    end = _clock(x)
    return {**times, "loss": loss_time, "finite check": check_time, "optimizer": end - t,
            "step": end - start}
