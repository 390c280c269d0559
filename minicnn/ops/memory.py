"""Host memory: keep the memory NumPy frees, for the next step's arrays.

A training step allocates and frees the same large arrays again and again
(activations, their gradients, im2col blocks). By default glibc's malloc maps
each large block on its own (over 128 KB, a threshold that rises to at most
32 MB as it sees such blocks freed) and hands it back to the kernel when it is
freed, and it returns the top of its heap once more than that is free there.
The next step's array of the same size is then mapped again, and each of its
pages is faulted in and zeroed by the kernel (and, for NumPy's huge-page
arrays, often compacted first): at batch 1024 that kernel time is a tenth of
a CPU training step, and it lands unevenly on the threads.

``keep_freed_memory()`` asks glibc to take blocks from its heaps, not from
maps of their own (``M_MMAP_MAX`` 0), and never to shrink the main heap
(``M_TRIM_THRESHOLD`` -1): freed memory stays mapped, and the next array
reuses its pages as they are. (A thread other than the main one still maps a
block over 64 MB on its own: its heap cannot hold it. minicnn's worker threads
allocate only small work arrays.) The memory a process holds then stays at
its peak until ``give_back_freed_memory()`` (or the process's end) returns
what is free. The first training step on the host calls it
(``training.step``) unless $MINICNN_KEEP_FREED_MEMORY is 0. It is
process-wide, overrides $MALLOC_MMAP_MAX_ and $MALLOC_TRIM_THRESHOLD_, and does
nothing where the C library is not glibc (macOS, Windows, musl): there malloc
keeps its own policy. Imports nothing from minicnn.
"""
from __future__ import annotations

import ctypes
import os
import platform

# glibc's mallopt parameters (malloc.h) and their defaults
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
DEFAULT_TRIM_THRESHOLD, DEFAULT_MMAP_MAX = 128 * 1024, 65536
NEVER_TRIM = -1  # mallopt(3): a trim threshold of -1 turns trimming off

_state: dict = {"kept": False, "libc": None}


def _glibc() -> ctypes.CDLL | None:
    """The running glibc, or None where the C library is another one."""
    if _state["libc"] is None:
        libc = None
        if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
            try:
                libc = ctypes.CDLL(None)
                libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
                libc.malloc_trim.argtypes = (ctypes.c_size_t,)
            except (OSError, AttributeError):
                libc = None
        _state["libc"] = libc or False
    return _state["libc"] or None


def enabled_by_environment() -> bool:
    """False when $MINICNN_KEEP_FREED_MEMORY is 0 (or false, no, off)."""
    value = os.environ.get("MINICNN_KEEP_FREED_MEMORY", "1").strip().lower()
    return value not in ("0", "false", "no", "off")


def keep_freed_memory() -> bool:
    """Keep freed memory mapped for reuse (see the module docstring); True when glibc
    took the settings (or had them already), False where it cannot."""
    if _state["kept"]:
        return True
    libc = _glibc()
    if libc is None:
        return False
    ok = libc.mallopt(M_MMAP_MAX, 0) == 1 and \
        libc.mallopt(M_TRIM_THRESHOLD, NEVER_TRIM) == 1
    _state["kept"] = ok
    return ok


def give_back_freed_memory() -> None:
    """Hand the free memory back to the kernel and map large blocks again: blocks over
    128 KB get maps of their own and the heap is trimmed above 128 KB free, glibc's
    starting values (its threshold no longer adapts once set). The next training
    step keeps freed memory again unless $MINICNN_KEEP_FREED_MEMORY is 0."""
    libc = _glibc()
    if libc is None:
        return
    libc.mallopt(M_MMAP_MAX, DEFAULT_MMAP_MAX)
    libc.mallopt(M_TRIM_THRESHOLD, DEFAULT_TRIM_THRESHOLD)
    libc.malloc_trim(0)
    _state["kept"] = False


def keeping_freed_memory() -> bool:
    """Whether keep_freed_memory's settings are in force."""
    return _state["kept"]
