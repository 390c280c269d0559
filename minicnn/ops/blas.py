"""The BLAS library's own threads, so that minicnn's threads can share the cores with it.

A convolution on the host can run its products over the batch, one part of the
images per host thread, each part in blocks small enough to stay in cache
(``conv``). For that, each product must run on its caller's thread alone:
two threads that each start BLAS's own threads would fight over the cores.

``single_threaded()`` makes it so for a ``with`` block, where it can: in the
OpenBLAS NumPy is linked to (NumPy's and SciPy's wheels ship one, a pthreads
build), found once through ctypes among the libraries this process has
loaded. A sequential OpenBLAS needs nothing. Elsewhere (MKL, Accelerate, an
OpenMP build of OpenBLAS, a library that cannot be found) it yields False and
changes nothing; callers then keep BLAS's own threads and do not split.
``MINICNN_BLAS_THREADS_CONTROL=0`` turns it off. ``kernel()`` names the kernels
OpenBLAS picked for this CPU.
"""
from __future__ import annotations

import contextlib
import ctypes
import glob
import os
import threading
from typing import Any, Callable, Iterator, NamedTuple

import numpy as np

SEQUENTIAL, PTHREADS = 0, 1  # openblas_get_parallel()'s answers (2: OpenMP)
_PREFIXES = ("scipy_openblas", "openblas")  # NumPy 2's wheels; other builds
_SUFFIXES = ("64_", "")  # 64-bit-integer builds add a suffix


class OpenBLAS(NamedTuple):
    path: str
    get_num_threads: Callable[[], int]
    set_num_threads: Callable[[int], None]
    parallel: int


_lock = threading.Lock()
# "library": OpenBLAS or None, once looked for; "users": the single_threaded blocks
# under way, "threads before": BLAS's thread count when the first of them began
_found: dict[str, Any] = {}


def _loaded_libraries() -> list[str]:
    """Shared libraries that could be NumPy's OpenBLAS: those this process has mapped
    (Linux), else those in NumPy's own library folders (wheels on macOS, Windows)."""
    paths: list[str] = []
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                fields = line.split(maxsplit=5)  # address perms offset dev inode path
                path = fields[5].strip() if len(fields) == 6 else ""
                if "openblas" in os.path.basename(path).lower() and path not in paths:
                    paths.append(path)
    except OSError:
        pass
    root = os.path.dirname(os.path.dirname(np.__file__))
    for folder in ("numpy.libs", os.path.join("numpy", ".dylibs"), "numpy/.libs"):
        for path in sorted(glob.glob(os.path.join(root, folder, "*openblas*"))):
            if path not in paths:
                paths.append(path)
    return paths


def _bind(path: str) -> OpenBLAS | None:
    try:
        library = ctypes.CDLL(path)
    except OSError:
        return None
    for prefix in _PREFIXES:
        for suffix in _SUFFIXES:
            names = [f"{prefix}_{verb}{suffix}" for verb in
                     ("get_num_threads", "set_num_threads", "get_parallel")]
            if all(hasattr(library, name) for name in names):
                get, put, parallel = (getattr(library, name) for name in names)
                get.restype, parallel.restype = ctypes.c_int, ctypes.c_int
                put.argtypes, put.restype = [ctypes.c_int], None
                return OpenBLAS(path, get, put, int(parallel()))
    return None


def library() -> OpenBLAS | None:
    """NumPy's OpenBLAS with its thread functions, or None (looked for once)."""
    if "library" not in _found:
        with _lock:
            if "library" not in _found:
                found = None
                if os.environ.get("MINICNN_BLAS_THREADS_CONTROL", "1").strip() != "0":
                    found = next(filter(None, map(_bind, _loaded_libraries())), None)
                _found["library"] = found
    return _found["library"]


def kernel() -> str | None:
    """The name of the kernels NumPy's OpenBLAS runs on this CPU (``"Haswell"``,
    ``"SkylakeX"``, ...: its own pick, or ``OPENBLAS_CORETYPE``'s), or None where no
    OpenBLAS is found. Benchmarks report it: the AVX-512 kernels' float32 products
    run about twice as fast as the AVX2 ones where the CPU has both."""
    if "kernel" not in _found:
        name = None
        bound = library()  # the one whose threads minicnn sets, when found
        for path in ([bound.path] if bound else []) + _loaded_libraries():
            try:
                lib = ctypes.CDLL(path)
            except OSError:
                continue
            corename = next(filter(None, (getattr(lib, f"{prefix}_get_corename{suffix}", None)
                                          for prefix in _PREFIXES for suffix in _SUFFIXES)),
                            None)
            if corename is not None:
                corename.restype = ctypes.c_char_p
                name = (corename() or b"").decode(errors="replace").strip() or None
                break
        _found["kernel"] = name
    return _found["kernel"]


@contextlib.contextmanager
def single_threaded() -> Iterator[bool]:
    """Within the block, each BLAS call runs on its caller's thread alone; yields whether
    that could be arranged (False: nothing changed). Blocks in several threads at once
    share one setting: the thread count comes back when the last of them ends."""
    lib = library()
    if lib is None or lib.parallel not in (SEQUENTIAL, PTHREADS):
        yield False
        return
    if lib.parallel == SEQUENTIAL:
        yield True
        return
    with _lock:
        if _found.setdefault("users", 0) == 0:
            _found["threads before"] = lib.get_num_threads()
            if _found["threads before"] != 1:
                lib.set_num_threads(1)
        _found["users"] += 1
    try:
        yield True
    finally:
        with _lock:
            _found["users"] -= 1
            if _found["users"] == 0 and _found["threads before"] != 1:
                lib.set_num_threads(_found["threads before"])
