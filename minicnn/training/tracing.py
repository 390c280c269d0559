"""Watching backpropagation happen: gradient statistics during training.

Every ``every`` training steps, for each layer:

    act_mean, act_std   mean and spread of the layer's output
    dead_relu           fraction of its units (channels or neurons) that gave 0
                        for every input of the batch (ReLU layers only)
    grad_norm           ||dL/dW|| of its kernel: vanishing near 0, exploding when huge
    update_ratio        ||W_after - W_before|| / ||W_before|| for this step;
                        about 1e-3 is the classic healthy value

Statistics are computed on the device inside forward hooks and read back
once per traced step; between traced steps the tracer costs nothing.
"""
from __future__ import annotations

import math
from typing import Iterable

from minicnn import activations, backend
from minicnn.layers.base import Layer


class GradientTracer:
    COLUMNS = ("epoch", "step", "layer", "act_mean", "act_std", "dead_relu", "grad_norm",
               "update_ratio")

    def __init__(self, every: int) -> None:
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"trace_gradients must be a positive number of steps, got {every!r}")
        self.every = every
        self.rows: list[dict] = []
        self._pending: dict = {}
        self._handles: list = []

    def wants(self, global_step: int) -> bool:
        return global_step % self.every == 0

    def start(self, layers: Iterable[Layer]) -> None:
        """Hook every layer for the coming forward pass."""
        self._pending = {layer.name: {} for layer in layers}
        self._handles = [layer.register_forward_hook(self._on_forward) for layer in layers]

    def _on_forward(self, layer, x, y) -> None:
        stats = self._pending[layer.name]
        stats["act_mean"], stats["act_std"] = y.mean(), y.std()
        if isinstance(layer.activation, activations.ReLU):
            alive = (y.reshape(-1, y.shape[-1]) > 0).any(axis=0)
            stats["dead_relu"] = 1.0 - alive.mean()

    def before_update(self, layers: Iterable[Layer]) -> None:
        """After backward: gradient norms, and the kernels as they are before the step."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        for layer in layers:
            if "kernel" in layer.params:
                xp = backend.get_array_module(layer.params["kernel"])
                stats = self._pending[layer.name]
                stats["grad_norm"] = xp.linalg.norm(layer.grads["kernel"].reshape(-1))
                stats["_before"] = layer.params["kernel"].copy()

    def after_update(self, layers: Iterable[Layer], epoch: int, step: int) -> None:
        """After the optimizer: update ratios; read everything back to the host once."""
        for layer in layers:
            stats = self._pending[layer.name]
            before = stats.pop("_before", None)
            if before is not None:
                xp = backend.get_array_module(before)
                change = xp.linalg.norm((layer.params["kernel"] - before).reshape(-1))
                stats["update_ratio"] = change / xp.maximum(xp.linalg.norm(before.reshape(-1)), 1e-12)
            row = {"epoch": epoch + 1, "step": step, "layer": layer.name}
            for key in self.COLUMNS[3:]:
                row[key] = float(stats[key]) if key in stats else math.nan
            self.rows.append(row)
        self._pending = {}
