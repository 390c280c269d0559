"""One training step of a compiled model, its divergence check, and its profile.

    out = model.loss_input(x)   L = loss(out, y) + penalty   model.backward(dL/dout)
    optimizer.apply

The ReLU moves of the model's plan (``minicnn.plan``) are read once at the
start of a step and given to both passes.
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np

from minicnn import backend, distributed, metrics, plan
from minicnn.backend import Array
from minicnn.ops import memory
from minicnn.training.interrupts import TrainingDiverged
from minicnn.training.tracing import GradientTracer


def batch_loss(model: Any, x: Array, y: Array, training: bool,
               relu_moves: frozenset[int] | None = None, sample_weight: Array | None = None
               ) -> tuple[Array, Array | None]:
    """(batch loss, the metrics' sums over the batch or None without metrics), on the
    device. The batch loss is the loss's (weighted) mean plus the regularization
    penalty, as Keras reports it; the sums follow ``model.metrics`` (see ``metric_sums``)."""
    out = model.loss_input(x, training, relu_moves)
    loss_fn = model.loss_function()
    # (without weights, a custom loss written as forward(y_pred, y_true) works too)
    loss_value = loss_fn.forward(out, y) if sample_weight is None else \
        loss_fn.forward(out, y, sample_weight)
    extra = plan.penalty(model.layers)
    if extra is not None:
        loss_value = loss_value + extra
    return loss_value, metric_sums(model, loss_fn, out, y)


def metric_sums(model: Any, loss_fn: Any, out: Array, y: Array) -> Array | None:
    """Each metric of ``model.metric_functions`` summed over the batch, as one device
    array in ``model.metrics`` order (added up over an epoch and read once at its end)."""
    if not model.metrics:
        return None
    # The metrics see the model's output: the fused loss holds it when it took the logits.
    y_pred = loss_fn.probabilities() if loss_fn is not model.loss else out
    y_true = metrics.keras_targets(y, y_pred)
    xp = backend.get_array_module(y_pred)
    return xp.stack([metric.batch_sum(model.loss, y_true, y_pred)
                     for metric in model.metric_functions])


def train_step(model: Any, x: Array, y: Array, tracer: GradientTracer | None = None,
               epoch: int = 0, step: int = 0, check_finite: bool = True,
               sample_weight: Array | None = None) -> tuple[Array, Array | None]:
    """One step on a checked batch: (batch loss, metric sums), on the device; the
    loss and its gradient weighted by ``sample_weight`` (N,) when given.

    Only shapes are checked: a check of values would stall a GPU on every step.
    On the host the first step keeps freed memory for reuse (``ops.memory``)
    unless $MINICNN_KEEP_FREED_MEMORY is 0.
    With ``check_finite`` it raises ``TrainingDiverged`` before touching the
    weights when the loss or any gradient is NaN or infinite; NumPy's own
    overflow warnings are silenced because that check reports the problem.

    With a ``DistributedOptimizer`` the gradients and the loss are averaged over
    the ranks first and the check reads the averages, which every rank holds
    alike: all ranks raise together (a rank raising alone would leave the others
    in the next Allreduce for ever). The loss returned is then that average too,
    so batch callbacks that watch it (TerminateOnNaN) stop every rank at once.
    """
    keep_host_memory(x)
    averaging = distributed.is_distributed(model.optimizer)
    if tracer is not None:
        tracer.start(model.layers)  # its hooks make every layer watched: no ReLU moves
    try:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            moves = model.relu_moves()
            loss_value, correct = batch_loss(model, x, y, True, moves, sample_weight)
            # the tracer watches every layer's gradient: it gets the whole backward
            model.backward(model.loss_function().backward(), moves,
                           skip_frozen_bottom=tracer is None)
            if averaging:
                loss_value = model.optimizer.average_gradients(model.layers, loss_value)
            if check_finite:
                check_finite_step(model.layers, loss_value)
    finally:
        if tracer is not None:
            tracer.before_update(model.layers)  # also takes its hooks off again
    if averaging:
        model.optimizer.update(model.layers)
    else:
        model.optimizer.apply(model.layers)
    if tracer is not None:
        tracer.after_update(model.layers, epoch, step)
    return loss_value, correct


def keep_host_memory(x: Array) -> None:
    """On the host, from the first step on, keep freed memory for the next steps'
    arrays (ops.memory), unless $MINICNN_KEEP_FREED_MEMORY is 0."""
    if not memory.keeping_freed_memory() and not backend.is_device_array(x) \
            and memory.enabled_by_environment():
        memory.keep_freed_memory()


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
    keep_host_memory(x)  # as train_step: a profile times the steps training runs
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
        extra = plan.penalty(model.layers)
        loss_value = loss_value if extra is None else loss_value + extra
        grad = loss_fn.backward()
        mark[0] = _clock(x)
        loss_time = mark[0] - t
        model.backward(grad, moves, skip_frozen_bottom=True)
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
