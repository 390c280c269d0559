"""DistributedOptimizer: average the gradients over the ranks, then update as usual.

Per step, on every rank (p ranks, g_r this rank's gradient of weight w):

    flat   = concat(g_r for every trained weight)     one buffer per dtype
    flat   = Allreduce(flat, SUM) / p                 in place, one message per step
    g      = flat[offset(w) : offset(w) + size(w)]    written back into layer.grads
    wrapped optimizer's update from g                 (clipping sees the average)

One message for all the weights instead of one per weight: the latency of a
collective is paid once per step, and MPI or NCCL pipelines the large buffer
over the links. The update is the same on every rank from the same averaged
gradient, so the optimizer's state (iterations, hence the decayed learning
rate; momentum and other slots) stays identical without being sent.

``fit`` averages before its divergence check (``average_gradients`` with the
batch loss riding in the same buffer, then ``update``): a NaN or inf on any
rank makes the averages non-finite on every rank, so all ranks raise
``TrainingDiverged`` at the same step instead of one leaving the others
waiting in the next Allreduce.
"""
from __future__ import annotations

from typing import Any, Iterable

from minicnn import backend
from minicnn.backend import Array
from minicnn.distributed import mpi as _mpi_job
from minicnn.optimizers import Optimizer

_classes: dict[type, type] = {}


class _GradientAveraging:
    """The mix-in: ``apply`` averages the gradients first. Its buffers are scratch,
    made on the first step and again whenever the set of gradients changes."""

    _buffers: dict | None = None

    def average_gradients(self, layers: list, loss: Array | None = None) -> Array | None:
        """Replace every trained weight's gradient in ``layers`` by its average over
        the ranks (in place, so the layers hold the averaged values). ``loss`` (a
        scalar on the device) is averaged in the same message: its average is
        returned (None without it), the same on every rank."""
        grads = [layer.grads[name] for layer in layers for name in layer.trained_params()]
        if loss is not None:
            loss = backend.get_array_module(loss).asarray(loss).reshape(1).copy()
            grads.append(loss)
        groups: dict[tuple, list] = {}
        for g in grads:  # one buffer per array module and dtype (all floatx in practice)
            groups.setdefault((backend.get_array_module(g).__name__, str(g.dtype)), []).append(g)
        if self._buffers is None:
            self._buffers = {}
        for key, members in groups.items():
            total = sum(int(g.size) for g in members)
            flat = self._buffers.get(key)
            if flat is None or flat.size != total:
                flat = self._buffers[key] = backend.get_array_module(members[0]).empty(
                    total, dtype=members[0].dtype)
            start = 0
            for g in members:
                flat[start:start + g.size] = g.reshape(-1)
                start += g.size
            _mpi_job.allreduce_inplace(flat, average=True)
            start = 0
            for g in members:
                g[...] = flat[start:start + g.size].reshape(g.shape)
                start += g.size
        return None if loss is None else loss.reshape(())

    def apply(self, layers: Iterable[Any]) -> None:
        layers = list(layers)
        self.average_gradients(layers)
        super().apply(layers)  # type: ignore[misc]

    def update(self, layers: Iterable[Any]) -> None:
        """The wrapped optimizer's update from gradients already averaged."""
        super().apply(layers)  # type: ignore[misc]


def _distributed_class(base: type) -> type:
    """The subclass of ``base`` that averages first, made once per class. It keeps
    ``base``'s name, so configs, saved models and checkpoints name the plain
    optimizer and load into an undistributed run (Horovod does the same)."""
    if base not in _classes:
        _classes[base] = type(base.__name__, (_GradientAveraging, base),
                              {"__module__": base.__module__, "__qualname__": base.__qualname__,
                               "__doc__": f"{base.__name__} with its gradients averaged over "
                                          "the ranks (minicnn.distributed)"})
    return _classes[base]


def DistributedOptimizer(optimizer: Optimizer) -> Optimizer:  # noqa: N802  (Horovod's name)
    """A copy of ``optimizer`` (same class, config and state) whose every update first
    averages the gradients over the ranks. Call ``init()`` first; compile the model
    with the result on every rank."""
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"DistributedOptimizer: expected a minicnn optimizer instance "
                        f"(e.g. SGD(lr=0.05)), got {type(optimizer).__name__}")
    if isinstance(optimizer, _GradientAveraging):
        raise ValueError("DistributedOptimizer: this optimizer already averages over the "
                         "ranks; wrapping it twice would average twice per step")
    _mpi_job.require_init("DistributedOptimizer")  # refuse now, not at the first step
    distributed = _distributed_class(type(optimizer)).__new__(_distributed_class(type(optimizer)))
    distributed.__dict__.update(optimizer.__dict__)
    for slot in optimizer.slots:  # the state is copied, not shared with the original
        setattr(distributed, slot, {})
    distributed.set_state(optimizer.get_state())
    if hasattr(optimizer, "_scratch"):
        distributed._scratch = {}
    distributed._buffers = None
    return distributed


def is_distributed(optimizer: Any) -> bool:
    """Does ``optimizer`` average its gradients over the ranks?"""
    return isinstance(optimizer, _GradientAveraging)
