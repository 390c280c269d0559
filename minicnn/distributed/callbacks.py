"""Starting every rank from the same model: broadcast_weights and its callback.

    w = w_root on every rank, for every weight (trainable or not: a
    BatchNormalization's moving statistics too), in one Bcast of one buffer;
    the optimizer's state (iterations, slots) follows, so a run resumed from
    a checkpoint that only the root read continues identically everywhere.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from minicnn import backend
from minicnn.callbacks import Callback
from minicnn.distributed import mpi as _mpi_job


def broadcast_weights(model: Any, root: int = 0, optimizer: bool = True) -> None:
    """Give every rank the root rank's weights and, with ``optimizer``, its optimizer
    state. Every rank must call it, with a built model of the same architecture."""
    world = _mpi_job.require_init("broadcast_weights")
    root = _mpi_job.check_root(root, "broadcast_weights")
    if not getattr(model, "built", False):
        raise ValueError("broadcast_weights: the model is not built yet; give its first layer "
                         "an input_shape, or call it from a callback (BroadcastWeights) in fit")
    weights = model.get_weights()
    layout = [(tuple(w.shape), str(w.dtype)) for w in weights]
    layouts = world.allgather(layout)
    if any(other != layout for other in layouts):
        ranks = [r for r, other in enumerate(layouts) if other != layouts[root]]
        raise ValueError(f"broadcast_weights: ranks {ranks} hold models whose weights differ "
                         f"in shape or dtype from rank {root}'s: every rank must build the "
                         "same model")
    if world.Get_size() > 1 and weights:
        flat = np.concatenate([w.reshape(-1).astype(np.float64, copy=False) for w in weights])
        _mpi_job.broadcast_inplace(flat, root)
        if world.Get_rank() != root:
            parts, start = [], 0
            for w in weights:
                parts.append(flat[start:start + w.size].reshape(w.shape).astype(w.dtype))
                start += w.size
            model.set_weights(parts)
    if optimizer and getattr(model, "optimizer", None) is not None and world.Get_size() > 1:
        state = model.optimizer.get_state() if world.Get_rank() == root else None
        if state is not None:  # host copies travel (pickled: the slots may still be empty)
            state = {k: v if k == "iterations" else
                     {layer: {name: backend.to_host(a) for name, a in arrays.items()}
                      for layer, arrays in v.items()} for k, v in state.items()}
        state = world.bcast(state, root=root)
        if world.Get_rank() != root:
            model.optimizer.set_state(state)


class BroadcastWeights(Callback):
    """At the start of ``fit``, after a resumed run has loaded its checkpoint, every
    rank takes the root's weights and optimizer state (Horovod's
    BroadcastGlobalVariablesCallback)."""

    def __init__(self, root: int = 0) -> None:
        super().__init__()
        self.root = root

    def on_train_begin(self, logs: dict | None = None) -> None:
        broadcast_weights(self.model, self.root)
