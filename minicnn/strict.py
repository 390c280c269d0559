"""The strict test backend: host arrays that behave like device arrays.

``DeviceArray`` is a NumPy array that, like a CuPy array, refuses to mix with
plain ``numpy.ndarray`` values; ``xp`` is NumPy wrapped so that every function
takes and returns DeviceArrays. Code that would silently move data between host
and device then fails on the CPU too, where the tests run. ``backend`` turns
it on (``minicnn.set_backend("strict")``); this module imports nothing from
minicnn.
"""
from __future__ import annotations

import functools
import types
from typing import Any, Callable, Collection

import numpy


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


class StrictModule:
    """Wraps ``numpy`` (or a submodule, or a generator) so every function takes
    and returns DeviceArrays and refuses plain host arrays."""

    def __init__(self, target: Any) -> None:
        self._target = target

    def __getattr__(self, name: str) -> Any:
        if name == "ndarray":
            return DeviceArray
        value = getattr(self._target, name)
        if isinstance(value, types.ModuleType):
            return StrictModule(value)
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


xp = StrictModule(numpy)  # the strict backend's array module
