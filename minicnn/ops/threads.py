"""Host threads for the memory-bound passes BLAS does not do for us.

im2col's copy, pooling, dropout and col2im's adds are split over the batch
across a few threads with ``over_batch``: NumPy lets go of the GIL inside its
loops, so the parts run at the same time, each on its own images (the same
numbers, bit for bit, as one pass). The large convolutions split their
products the same way, with BLAS single-threaded meanwhile (``blas``).

The state here: the thread count, the size below which a pass runs unsplit,
the pool, and each thread's work arrays (``thread_buffer``).
"""
from __future__ import annotations

import contextlib
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import numpy

from minicnn import backend
from minicnn.backend import Array
from minicnn.ops.blas import single_threaded as single_threaded_blas

DEFAULT_MIN_BYTES = 1 << 21  # smaller passes are not worth splitting

_state: dict[str, Any] = {
    "threads": None,               # None: read from the environment on first use
    "min_bytes": DEFAULT_MIN_BYTES,
    "pool": None,                  # (ThreadPoolExecutor, its size)
}
_inside = threading.local()  # .part: this thread is running a part of over_batch
_buffers = threading.local()  # each thread's work arrays (thread_buffer), by name


def host_threads() -> int:
    """Threads over_batch uses: set_host_threads's choice, else $MINICNN_NUM_THREADS,
    else $OMP_NUM_THREADS (what BLAS is told too), else the CPUs this process may use."""
    if _state["threads"] is None:  # read once: over_batch asks on every pass
        _state["threads"] = _threads_from_environment()
    return _state["threads"]


def _threads_from_environment() -> int:
    for var in ("MINICNN_NUM_THREADS", "OMP_NUM_THREADS"):
        if os.environ.get(var, "").strip().isdigit():
            return max(1, int(os.environ[var]))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def set_host_threads(count: int | None = None, min_bytes: int | None = None) -> None:
    """Threads for the host's memory-bound passes (None: read the environment again),
    and the size below which a pass is not worth splitting (tests set 0;
    DEFAULT_MIN_BYTES is the default)."""
    if count is not None and (not isinstance(count, int) or count < 1):
        raise ValueError(f"set_host_threads: count must be a positive integer, got {count!r}")
    _state["threads"] = count
    if min_bytes is not None:
        _state["min_bytes"] = int(min_bytes)


def over_batch(fn: Callable[[slice], Any], x: Array, blas: bool = False) -> list:
    """Call ``fn(part)`` for slices ``part`` that cover x's batch axis, each image once;
    return what the calls returned, in the batch's order (whichever part ended first).

    On a device, or for a small x, one call covers everything (one kernel launch
    is what a GPU wants). On the host the batch is cut into one part per thread and
    the parts run at the same time; fn must touch only its own images. With
    ``blas`` (fn calls BLAS), BLAS runs single-threaded meanwhile (``blas``
    module), and where that cannot be arranged one call covers everything, with
    BLAS's own threads. A part that calls over_batch again runs that call whole.
    """
    n = x.shape[0]
    if backend.is_device_array(x) or n < 2 or x.nbytes < _state["min_bytes"] \
            or host_threads() == 1 or getattr(_inside, "part", False):
        return [fn(slice(0, n))]
    if not blas:
        return _run_parts(fn, n)
    with single_threaded_blas() as single:
        if single:
            return _run_parts(fn, n)
        return [fn(slice(0, n))]  # two threads each starting BLAS's threads would fight


def thread_buffer(name: str, shape: tuple[int, ...], like: Array) -> Array:
    """An uninitialised array of ``shape`` and like's dtype and array type, this
    thread's own, kept for its next call by the same name (made anew only when it
    is too small or of another dtype or type): a part's work arrays cost no
    allocation, and no page faults, from one block or one step to the next."""
    size = math.prod(shape)
    flat = getattr(_buffers, name, None)
    if (flat is None or flat.size < size or flat.dtype != like.dtype
            or type(flat) is not type(like)):
        flat = backend.get_array_module(like).empty(size, dtype=like.dtype)
        setattr(_buffers, name, flat)
    return flat[:size].reshape(shape)


def quiet_overflow() -> contextlib.AbstractContextManager:
    """No NumPy warning for a product that overflows to inf, in this thread: finding
    non-finite values is fit's job (its finite checks), and a product on BLAS's own
    threads never warns either (the flags are raised in BLAS's threads)."""
    return numpy.errstate(over="ignore", invalid="ignore")


def _run_parts(fn: Callable[[slice], Any], n: int) -> list:
    parts = min(host_threads(), n)
    bounds = [n * k // parts for k in range(parts + 1)]
    pool, size = _state["pool"] or (None, 0)
    if size < parts - 1:  # the caller's thread takes one part itself
        if pool is not None:
            pool.shutdown(wait=False)  # too small now: its idle threads end
        pool = ThreadPoolExecutor(parts - 1, thread_name_prefix="minicnn")
        _state["pool"] = (pool, parts - 1)

    def run(part: slice) -> Any:
        _inside.part = True
        try:
            return fn(part)
        finally:
            _inside.part = False
    futures = [pool.submit(run, slice(a, b)) for a, b in zip(bounds[1:-1], bounds[2:])]
    try:
        first = run(slice(bounds[0], bounds[1]))  # this thread does the first part
    finally:
        # waits for every part; re-raises a part's exception here
        rest = [future.result() for future in futures]
    return [first, *rest]
