"""Runs minicnn's GPU kernels on the CPU: the CUDA source, compiled by g++.

A ``kernels.Kernel`` is the body of a ``cupy.ElementwiseKernel``: C++ that runs
once per element ``i``. This module wraps that same text in a plain loop,

    for (ptrdiff_t i = 0; i < n; ++i) { <non-raw arguments bound to element i>; <operation> }

compiles it into a shared library and calls it through ctypes, with CuPy's
calling rules: non-raw arguments are broadcast to one shape and seen one
element at a time, raw ones are whole C-contiguous arrays, a type that is not a
dtype name (T) takes the dtype of the arrays given for it, inputs come first
and then the caller's outputs. Installed with ``kernels.set_kernel_emulator``,
it lets the strict backend run every kernel code path of the layers without a
GPU, and the tests compare the result with the NumPy twin.

What it cannot show: GPU-only faults (races between threads, which these
kernels avoid by writing only their own element; launch limits). The GPU run
of tests -k cupy covers those.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass

import numpy as np

from minicnn import backend
from minicnn.ops import kernels
from minicnn.fileio import write_text_atomic

C_TYPES = {"float32": "float", "float64": "double", "int8": "signed char", "int16": "short",
           "int32": "int", "int64": "long long", "uint8": "unsigned char", "bool": "bool"}


def compiler() -> str | None:
    return shutil.which("g++") or shutil.which("c++")


@dataclass(frozen=True)
class Param:
    raw: bool
    type: str
    name: str
    output: bool

    @property
    def placeholder(self) -> bool:
        return self.type not in C_TYPES


def parse(params: str, output: bool) -> list[Param]:
    result = []
    for text in params.split(","):
        words = text.split()
        raw = words[0] == "raw"
        if raw:
            words = words[1:]
        if len(words) != 2:
            raise ValueError(f"cannot read kernel parameter {text!r}")
        result.append(Param(raw, words[0], words[1], output))
    return result


class EmulatedKernel:
    def __init__(self, spec: kernels.Kernel, build_dir: str) -> None:
        self.spec = spec
        self.params = parse(spec.in_params, False) + parse(spec.out_params, True)
        self.build_dir = build_dir
        self._libraries: dict[tuple, ctypes.CDLL] = {}

    def __call__(self, *args):
        if len(args) != len(self.params):
            raise TypeError(f"{self.spec.name}: expected {len(self.params)} arguments "
                            f"(inputs then outputs), got {len(args)}")
        types = self._bind_types(args)
        host = [backend.to_host(a) if _is_array(a) else a for a in args]
        scalars = tuple(k for k, a in enumerate(args) if not _is_array(a))
        for k in scalars:
            if self.params[k].raw or self.params[k].output:
                raise TypeError(f"{self.spec.name}: {self.params[k].name} must be an array")
        elementwise = [a for p, a in zip(self.params, host) if not p.raw and isinstance(a, np.ndarray)]
        shape = np.broadcast_shapes(*(a.shape for a in elementwise)) if elementwise else ()
        n = int(np.prod(shape))
        keep, pointers, write_back = [], [], []
        for k, (p, a) in enumerate(zip(self.params, host)):
            dtype = np.dtype(types.get(p.type, p.type))
            if k in scalars:
                buf = np.array(a, dtype=dtype)
            elif p.raw:
                if not a.flags.c_contiguous:
                    raise ValueError(f"{self.spec.name}: raw argument {p.name} must be C-contiguous")
                buf = a
            else:
                if p.output and a.shape != shape:
                    raise ValueError(f"{self.spec.name}: output {p.name} has shape {a.shape}, "
                                     f"the arguments broadcast to {shape}")
                buf = np.ascontiguousarray(np.broadcast_to(a, shape))
                if p.output:
                    write_back.append((a, buf))
            keep.append(buf)
            pointers.append(buf.ctypes.data)
        library = self._library(tuple(sorted(types.items())), scalars)
        library.run(ctypes.c_longlong(n), (ctypes.c_void_p * len(pointers))(*pointers))
        for target, buf in write_back:
            np.copyto(target, buf)

    def _bind_types(self, args) -> dict[str, str]:
        """Placeholder -> dtype name, from the arrays; and every array's dtype checked."""
        types: dict[str, str] = {}
        for p, a in zip(self.params, args):
            if not _is_array(a):
                continue  # scalars take the parameter's type
            name = np.dtype(a.dtype).name
            if p.placeholder:
                if types.setdefault(p.type, name) != name:
                    raise TypeError(f"{self.spec.name}: {p.name} is {name} but {p.type} is "
                                    f"already {types[p.type]}")
            elif name != p.type:
                raise TypeError(f"{self.spec.name}: {p.name} must be {p.type}, got {name}")
        missing = {p.type for p in self.params if p.placeholder} - set(types)
        if missing:
            raise TypeError(f"{self.spec.name}: no array fixes the type of {sorted(missing)}")
        return types

    def _source(self, types: dict[str, str], scalars: tuple[int, ...]) -> str:
        lines = ["#include <cmath>", "#include <cstddef>",
                 "#define __device__  /* on the CPU every function is a host function */",
                 "using std::exp; using std::log; using std::sqrt; using std::fabs;"]
        lines += [f"typedef {C_TYPES[d]} {t};" for t, d in types.items()]
        lines += [self.spec.preamble, 'extern "C" void run(long long n, void** args) {']
        body = []
        for k, p in enumerate(self.params):
            ctype = p.type if p.placeholder else C_TYPES[p.type]
            const = "" if p.output else "const "
            if p.raw:
                lines.append(f"  {const}{ctype}* {p.name} = ({const}{ctype}*)args[{k}];")
            elif k in scalars:
                lines.append(f"  const {ctype} {p.name} = *(const {ctype}*)args[{k}];")
            else:
                lines.append(f"  {const}{ctype}* p_{p.name} = ({const}{ctype}*)args[{k}];")
                ref = "&" if p.output else ""
                body.append(f"    {const}{ctype}{ref} {p.name} = p_{p.name}[i];")
        lines.append("  for (ptrdiff_t i = 0; i < (ptrdiff_t)n; ++i) {")
        lines += body
        lines += ["    " + line for line in self.spec.operation.strip().splitlines()]
        lines += ["  }", "}"]
        return "\n".join(lines) + "\n"

    def _library(self, type_items: tuple, scalars: tuple[int, ...]) -> ctypes.CDLL:
        library = self._libraries.get((type_items, scalars))
        if library is None:
            source = self._source(dict(type_items), scalars)
            digest = hashlib.sha256(source.encode()).hexdigest()[:16]
            stem = os.path.join(self.build_dir, f"{self.spec.name}_{digest}")
            if not os.path.exists(stem + ".so"):
                write_text_atomic(stem + ".cpp", source)
                # The compiler writes a temporary name, renamed once complete: a killed
                # build never leaves a partial .so that the exists() check would trust.
                partial = f"{stem}.{os.getpid()}.partial.so"
                result = subprocess.run([compiler(), "-O2", "-shared", "-fPIC", "-std=c++14",
                                         "-Wall", "-Werror", "-Wno-unused-variable", "-o", partial,
                                         stem + ".cpp"], capture_output=True, text=True)
                if result.returncode != 0:
                    raise RuntimeError(f"{self.spec.name} does not compile:\n{result.stderr}\n{source}")
                os.replace(partial, stem + ".so")
            library = ctypes.CDLL(stem + ".so")
            library.run.restype = None
            self._libraries[(type_items, scalars)] = library
        return library


class Emulator:
    """``emulator(spec)`` -> a callable kernel; what kernels.set_kernel_emulator takes."""

    def __init__(self, build_dir: str | None = None) -> None:
        self.build_dir = build_dir or tempfile.mkdtemp(prefix="minicnn-kernels-")
        self._kernels: dict[kernels.Kernel, EmulatedKernel] = {}
        self.calls: dict[str, int] = {}  # kernel name -> times run (tests check the path was taken)

    def __call__(self, spec: kernels.Kernel):
        kernel = self._kernels.get(spec)
        if kernel is None:
            kernel = self._kernels[spec] = EmulatedKernel(spec, self.build_dir)

        def call(*args):
            self.calls[spec.name] = self.calls.get(spec.name, 0) + 1
            return kernel(*args)
        return call


def _is_array(a) -> bool:
    """Arrays (host or strict-device); Python and NumPy scalars are scalars."""
    return isinstance(a, np.ndarray) or backend.is_device_array(a)
