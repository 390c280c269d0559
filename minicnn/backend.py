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
  move data between host and device fails on the CPU too (``minicnn.strict``).

The GPU kernels and the host's threads are the ops tier's business
(``minicnn.ops``); this module holds only the global state every tier shares:
the backend choice (and the imported CuPy module), the default float type, and
the seed from which layers and ``fit`` draw their random generators.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

import numpy

from minicnn import strict
from minicnn.strict import DeviceArray

Array = Any  # a numpy.ndarray, a cupy.ndarray, or the strict backend's DeviceArray

_BACKENDS = ("numpy", "cupy", "strict")
_FLOATX = ("float32", "float64")
GPU_HELP = ('the "cupy" backend needs CuPy and a CUDA GPU; install it with '
            '`pip install "minicnn[gpu]"` (CUDA 12) or the cupy-cudaXXx wheel matching your CUDA')

_state = {"backend": "numpy", "floatx": "float32",
          "seed_sequence": numpy.random.SeedSequence()}


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
        return strict.xp
    return _cupy()


def get_array_module(*arrays: Array) -> Any:
    """The array module that owns ``arrays`` (CuPy's ``get_array_module``)."""
    for a in arrays:
        if isinstance(a, DeviceArray):
            return strict.xp
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


def current_device() -> int | None:
    """The id of the CUDA device current in the calling thread when the backend is
    cupy (``cupy.cuda.Device(i).use()`` chose it), else None. CuPy keeps the current
    device per thread: a thread the caller starts begins on device 0."""
    if _state["backend"] != "cupy":
        return None
    return int(_cupy().cuda.runtime.getDevice())


def device_context(device: int | None) -> contextlib.AbstractContextManager:
    """``with device_context(current_device()):`` in another thread allocates and
    launches on the caller's device; nothing to do for None (no GPU). A new
    ``cupy.cuda.Device`` each time: one object entered by several threads at once
    would mix up the devices they return to."""
    if device is None:
        return contextlib.nullcontext()
    return _cupy().cuda.Device(device)


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
        return strict.StrictModule(numpy.random.default_rng(seed))
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
