"""GPU kernels: CUDA source kept beside the NumPy code it replaces.

Where a chain of CuPy operations would be many small GPU launches, an op
brings the CUDA source of one element-wise kernel (a ``Kernel``, kept beside
the NumPy code it replaces, its "twin"); ``kernel(spec, x)`` compiles it when
x lives on the GPU and returns None on the host, where the twin runs.

The state here: the compiled kernels (compiled once), whether they run at all
(``use_kernels``), and the CPU emulator tests may install for the strict backend.
"""
from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Callable, Iterator

import numpy

from minicnn import backend, strict
from minicnn.backend import Array

_state: dict[str, Any] = {
    "compiled": {},     # CuPy kernels, by Kernel
    "on": True,         # False: the NumPy twins run on the GPU too
    "emulator": None,   # tests: runs Kernels on the strict backend
}


@dataclasses.dataclass(frozen=True)
class Kernel:
    """The CUDA source of one element-wise kernel, as ``cupy.ElementwiseKernel`` takes it.

    ``operation`` runs once for each element ``i`` of the non-raw arguments
    (which it sees as that one element); ``raw`` arguments are whole
    C-contiguous arrays that it indexes by hand, ``x[flat_index]``. A type
    that is not a dtype name (``T``) takes the dtype of the arrays given for it.
    Calls pass the inputs, then the outputs, all allocated by the caller.
    """
    name: str
    in_params: str
    out_params: str
    operation: str
    preamble: str = ""


def kernel(spec: Kernel, *arrays: Array) -> Callable[..., Any] | None:
    """``spec`` compiled for the device that holds ``arrays``, or None on the host.

    An op asks first and runs its NumPy twin on None. On the strict backend a
    kernel runs only when a test has installed an emulator (set_kernel_emulator).
    """
    xp = backend.get_array_module(*arrays)
    if xp is numpy or not _state["on"]:
        return None
    if xp is strict.xp:
        emulator = _state["emulator"]
        return None if emulator is None else emulator(spec)
    compiled = _state["compiled"].get(spec)
    if compiled is None:  # CuPy compiles on first call, once per dtype, and caches on disk
        compiled = xp.ElementwiseKernel(spec.in_params, spec.out_params, spec.operation,
                                        spec.name, preamble=spec.preamble)
        _state["compiled"][spec] = compiled
    return compiled


@contextlib.contextmanager
def use_kernels(enabled: bool) -> Iterator[None]:
    """``with use_kernels(False): ...`` runs the NumPy twins (as composed CuPy
    operations) instead of the kernels: to time what a kernel saves, or to tell
    a kernel's bug from an op's."""
    previous = _state["on"]
    _state["on"] = bool(enabled)
    try:
        yield
    finally:
        _state["on"] = previous


def set_kernel_emulator(emulator: Callable[[Kernel], Any] | None) -> None:
    """For tests: ``emulator(spec)`` returns a CPU build of the kernel, so the strict
    backend runs the kernels' own CUDA source through the ops. None turns it off."""
    _state["emulator"] = emulator
