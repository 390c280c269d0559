"""The one module that knows NumPy from CuPy.

Every other module asks this one for its array module: ``xp()`` for the current
backend when creating arrays, ``get_array_module(x)`` for the module that owns
an existing array (the DeZero idea). Layer code then writes ``xp.exp(z)`` and
runs unchanged on the CPU (NumPy) or the GPU (CuPy).

Three backends exist:

* ``"numpy"``  - the default, CPU.
* ``"cupy"``   - the GPU, needs ``pip install "minicnn[gpu]"`` and a CUDA device.
* ``"strict"`` - a test backend: NumPy arrays of a subclass that, like CuPy
  arrays, refuse to mix with plain NumPy arrays, so code that would silently
  move data between host and device fails on the CPU too.

Where a chain of CuPy operations would be many small GPU launches, a layer
brings the CUDA source of one element-wise kernel (a ``Kernel``, kept beside
the NumPy code it replaces, its "twin"); ``kernel(spec, x)`` compiles it when
x lives on the GPU and returns None on the host, where the twin runs.

On the host, the memory-bound passes that BLAS does not do for us (im2col's
copy, pooling, dropout, col2im's adds) are split over the batch across a few
threads with ``over_batch``: NumPy lets go of the GIL inside its loops, so the
parts run at the same time, each on its own images (the same numbers, bit for
bit, as one pass).

The only global state is the backend choice and what goes with it: the
default float type, the seed from which layers and ``fit`` draw their random
generators, the GPU kernels (compiled once; ``use_kernels`` switches them off,
and tests may set a CPU emulator for them), the imported CuPy module, and the
host threads (their count, the size below which a pass runs unsplit, and the
pool).
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import types
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Collection, Iterator

import numpy

Array = Any  # a numpy.ndarray, a cupy.ndarray, or the strict backend's DeviceArray

_BACKENDS = ("numpy", "cupy", "strict")
_FLOATX = ("float32", "float64")
GPU_HELP = ('the "cupy" backend needs CuPy and a CUDA GPU; install it with '
            '`pip install "minicnn[gpu]"` (CUDA 12) or the cupy-cudaXXx wheel matching your CUDA')

_state = {"backend": "numpy", "floatx": "float32",
          "seed_sequence": numpy.random.SeedSequence(),
          "kernels": {},             # compiled CuPy kernels, by Kernel
          "kernels_on": True,        # False: the NumPy twins run on the GPU too
          "kernel_emulator": None,   # tests: runs Kernels on the strict backend
          "threads": None,           # host threads for over_batch (None: from the environment)
          "min_bytes": 1 << 21,      # smaller passes run in one piece
          "pool": None}


# --------------------------------------------------------------------------
# The strict test backend: host arrays that behave like device arrays.
# --------------------------------------------------------------------------
class DeviceArray(numpy.ndarray):
    """A NumPy array that pretends to live on a device.

    Mixing it with a plain ``numpy.ndarray`` in a ufunc, or handing it to a
    plain ``numpy`` function, raises ``TypeError`` exactly where CuPy would.
    """

    def __array_ufunc__(self, ufunc: numpy.ufunc, method: str, *inputs: Any,
                        **kwargs: Any) -> Any:
        _refuse_host_arrays(ufunc.__name__, inputs + tuple(kwargs.get("out", ())))
        inputs = tuple(_to_plain(v) for v in inputs)
        if "out" in kwargs:
            kwargs["out"] = tuple(_to_plain(v) for v in kwargs["out"])
        result = getattr(ufunc, method)(*inputs, **kwargs)
        return _to_device_tree(result)

    def __array_function__(self, func: Callable[..., Any], types_: Collection[type],
                           args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        raise TypeError(
            f"numpy.{func.__name__}() was given a device array; use the backend's array "
            "module (minicnn.backend.get_array_module) or minicnn.backend.to_host() first")


def _refuse_host_arrays(name: str, values) -> None:
    for v in values:
        if type(v) is numpy.ndarray and v.ndim > 0:
            raise TypeError(f"{name}: cannot mix a host numpy.ndarray of shape {v.shape} with a "
                            "device array; move it with minicnn.backend.to_device() first")


def _to_plain(v):
    return v.view(numpy.ndarray) if isinstance(v, DeviceArray) else v


def _to_device_tree(v):
    if type(v) is numpy.ndarray:
        return v.view(DeviceArray)
    if isinstance(v, tuple):
        return tuple(_to_device_tree(u) for u in v)
    return v


def _unwrap_tree(v):
    if isinstance(v, DeviceArray):
        return v.view(numpy.ndarray)
    if isinstance(v, numpy.ndarray) and v.ndim > 0:
        raise TypeError(f"cannot pass a host numpy.ndarray of shape {v.shape} to the strict "
                        "backend's array module; move it with minicnn.backend.to_device() first")
    if isinstance(v, (list, tuple)):
        return type(v)(_unwrap_tree(u) for u in v)
    return v


class _StrictModule:
    """Wraps ``numpy`` (or a submodule, or a generator) so every function takes
    and returns DeviceArrays and refuses plain host arrays."""

    def __init__(self, target: Any) -> None:
        self._target = target

    def __getattr__(self, name: str) -> Any:
        if name == "ndarray":
            return DeviceArray
        value = getattr(self._target, name)
        if isinstance(value, types.ModuleType):
            return _StrictModule(value)
        if callable(value) and not isinstance(value, type):
            return self._wrap(value)
        return value

    @staticmethod
    def _wrap(func):
        @functools.wraps(func)
        def call(*args, **kwargs):
            args = _unwrap_tree(args)
            kwargs = {k: _unwrap_tree(v) for k, v in kwargs.items()}
            return _to_device_tree(func(*args, **kwargs))
        return call


strict = _StrictModule(numpy)


# --------------------------------------------------------------------------
# CuPy, imported only when asked for.
# --------------------------------------------------------------------------
def _cupy():
    if _state.get("cupy") is not None:
        return _state["cupy"]  # checked once; get_array_module calls this for every op
    try:
        import cupy  # noqa: PLC0415  (optional dependency)
    except ImportError as exc:
        raise RuntimeError(f"cannot use the cupy backend: CuPy is not installed. {GPU_HELP}") from exc
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDA driver missing or broken
        raise RuntimeError(f"cannot use the cupy backend: no CUDA device ({exc}). {GPU_HELP}") from exc
    if count < 1:
        raise RuntimeError(f"cannot use the cupy backend: no CUDA device found. {GPU_HELP}")
    _state["cupy"] = cupy
    return cupy


def cupy_available() -> bool:
    """True when CuPy imports and sees at least one GPU."""
    try:
        _cupy()
    except RuntimeError:
        return False
    return True


# --------------------------------------------------------------------------
# Backend choice.
# --------------------------------------------------------------------------
def set_backend(name: str) -> None:
    """Choose ``"numpy"`` (CPU), ``"cupy"`` (GPU) or ``"strict"`` (tests)."""
    if name not in _BACKENDS:
        raise ValueError(f"unknown backend {name!r}: expected one of {', '.join(_BACKENDS)}")
    if name == "cupy":
        _cupy()
    _state["backend"] = name


def get_backend() -> str:
    return _state["backend"]


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """``with use_backend("cupy"): ...`` switches the backend for a block."""
    previous = get_backend()
    set_backend(name)
    try:
        yield
    finally:
        _state["backend"] = previous


def xp() -> Any:
    """The array module of the current backend (numpy, cupy or the strict one)."""
    name = _state["backend"]
    if name == "numpy":
        return numpy
    if name == "strict":
        return strict
    return _cupy()


def get_array_module(*arrays: Array) -> Any:
    """The array module that owns ``arrays`` (CuPy's ``get_array_module``)."""
    for a in arrays:
        if isinstance(a, DeviceArray):
            return strict
        module = type(a).__module__
        if module.startswith("cupy"):
            return _cupy()
    return numpy


def is_device_array(a: Any) -> bool:
    return isinstance(a, DeviceArray) or type(a).__module__.startswith("cupy")


def synchronize(a: Array) -> None:
    """Wait until the GPU has finished the work queued so far (nothing to wait for on
    the host). A clock read after it times the work, not just its launch."""
    if type(a).__module__.startswith("cupy"):
        _cupy().cuda.get_current_stream().synchronize()


def to_device(a: Any, dtype: Any = None) -> Array:
    """Copy a host array (or anything array-like) to the current backend."""
    name = _state["backend"]
    if name == "numpy":
        return numpy.asarray(a, dtype=dtype)
    if name == "strict":
        if isinstance(a, DeviceArray):
            return a if dtype is None else a.astype(dtype)
        return numpy.array(a, dtype=dtype).view(DeviceArray)
    cupy = _cupy()
    return cupy.asarray(a, dtype=dtype)


def to_host(a: Any) -> numpy.ndarray:
    """A ``numpy.ndarray`` with the values of ``a`` (a copy only when needed)."""
    if isinstance(a, DeviceArray):
        return a.view(numpy.ndarray)
    if type(a).__module__.startswith("cupy"):
        return a.get()
    return numpy.asarray(a)


def as_strided(x: Array, shape: tuple[int, ...], strides: tuple[int, ...]) -> Array:
    """A strided view of ``x`` for any backend (the heart of im2col)."""
    return get_array_module(x).lib.stride_tricks.as_strided(x, shape=shape, strides=strides)


# --------------------------------------------------------------------------
# GPU kernels.
# --------------------------------------------------------------------------
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

    A layer asks first and runs its NumPy twin on None. On the strict backend a
    kernel runs only when a test has installed an emulator (set_kernel_emulator).
    """
    xp = get_array_module(*arrays)
    if xp is numpy or not _state["kernels_on"]:
        return None
    if xp is strict:
        emulator = _state["kernel_emulator"]
        return None if emulator is None else emulator(spec)
    compiled = _state["kernels"].get(spec)
    if compiled is None:  # CuPy compiles on first call, once per dtype, and caches on disk
        compiled = xp.ElementwiseKernel(spec.in_params, spec.out_params, spec.operation,
                                        spec.name, preamble=spec.preamble)
        _state["kernels"][spec] = compiled
    return compiled


@contextlib.contextmanager
def use_kernels(enabled: bool) -> Iterator[None]:
    """``with use_kernels(False): ...`` runs the NumPy twins (as composed CuPy
    operations) instead of the kernels: to time what a kernel saves, or to tell
    a kernel's bug from a layer's."""
    previous = _state["kernels_on"]
    _state["kernels_on"] = bool(enabled)
    try:
        yield
    finally:
        _state["kernels_on"] = previous


def set_kernel_emulator(emulator: Callable[[Kernel], Any] | None) -> None:
    """For tests: ``emulator(spec)`` returns a CPU build of the kernel, so the strict
    backend runs the kernels' own CUDA source through the layer code. None turns it off."""
    _state["kernel_emulator"] = emulator


# --------------------------------------------------------------------------
# Host threads.
# --------------------------------------------------------------------------
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
    and the size below which a pass is not worth splitting (tests set 0)."""
    if count is not None and (not isinstance(count, int) or count < 1):
        raise ValueError(f"set_host_threads: count must be a positive integer, got {count!r}")
    _state["threads"] = count
    if min_bytes is not None:
        _state["min_bytes"] = int(min_bytes)


def over_batch(fn: Callable[[slice], Any], x: Array) -> None:
    """Call ``fn(part)`` for slices ``part`` that cover x's batch axis, each image once.

    On a device, or for a small x, one call covers everything (one kernel launch
    is what a GPU wants). On the host the batch is cut into one part per thread and
    the parts run at the same time; fn must touch only its own images.
    """
    n = x.shape[0]
    if is_device_array(x) or n < 2 or x.nbytes < _state["min_bytes"] or host_threads() == 1:
        fn(slice(0, n))
        return
    threads = host_threads()
    parts = min(threads, n)
    bounds = [n * k // parts for k in range(parts + 1)]
    pool, size = _state["pool"] or (None, 0)
    if size < parts - 1:  # the caller's thread takes one part itself
        if pool is not None:
            pool.shutdown(wait=False)  # too small now: its idle threads end
        pool = ThreadPoolExecutor(parts - 1, thread_name_prefix="minicnn")
        _state["pool"] = (pool, parts - 1)
    futures = [pool.submit(fn, slice(a, b)) for a, b in zip(bounds[1:-1], bounds[2:])]
    fn(slice(bounds[0], bounds[1]))  # this thread does the first part
    for future in futures:
        future.result()  # re-raises a part's exception here


# --------------------------------------------------------------------------
# Float type.
# --------------------------------------------------------------------------
def set_floatx(name: str) -> None:
    """Default float type: ``"float32"`` for training, ``"float64"`` for gradient checks."""
    if name not in _FLOATX:
        raise ValueError(f"unknown floatx {name!r}: expected one of {', '.join(_FLOATX)}")
    _state["floatx"] = name


def floatx() -> str:
    return _state["floatx"]


@contextlib.contextmanager
def use_floatx(name: str) -> Iterator[None]:
    previous = floatx()
    set_floatx(name)
    try:
        yield
    finally:
        _state["floatx"] = previous


# --------------------------------------------------------------------------
# Random generators: one seed, many independent streams.
# --------------------------------------------------------------------------
def set_seed(seed: int | None) -> None:
    """Seed every generator created from now on (weights, dropout, shuffling)."""
    _state["seed_sequence"] = numpy.random.SeedSequence(seed)


def _next_seed() -> int:
    child = _state["seed_sequence"].spawn(1)[0]
    return int(child.generate_state(1)[0])


def host_rng(seed: int | None = None) -> numpy.random.Generator:
    """A NumPy generator (weights are drawn on the host so both backends agree)."""
    return numpy.random.default_rng(_next_seed() if seed is None else seed)


def device_rng(seed: int | None = None) -> Any:
    """A generator of the current backend (dropout masks, shuffling)."""
    seed = _next_seed() if seed is None else seed
    if _state["backend"] == "cupy":
        return _cupy().random.default_rng(seed)
    if _state["backend"] == "strict":
        return _StrictModule(numpy.random.default_rng(seed))
    return numpy.random.default_rng(seed)



def permutation(rng: Any, n: int) -> Array:
    """A random permutation of range(n) on the generator's own device."""
    if hasattr(rng, "permutation"):
        return rng.permutation(n)
    return rng.random(n).argsort()  # CuPy generators lack permutation()


def rng_state(rng: Any) -> dict | None:
    """A generator's state as plain data (JSON-able), or None where it cannot be read.

    NumPy generators expose it; CuPy's keep theirs on the device, so a CuPy run
    resumes with fresh random streams.
    """
    state = getattr(getattr(rng, "bit_generator", None), "state", None)
    return state if isinstance(state, dict) else None


def set_rng_state(rng: Any, state: dict) -> None:
    """Put a generator back into a state returned by ``rng_state``."""
    bit_generator = getattr(rng, "bit_generator", None)
    if bit_generator is not None and isinstance(getattr(bit_generator, "state", None), dict):
        bit_generator.state = state
