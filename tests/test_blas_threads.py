"""BLAS's own threads (minicnn/ops/blas.py) and over_batch(blas=True): while the host's
threads split a batch whose parts call BLAS, BLAS runs single-threaded, its thread
count comes back afterwards (nested and overlapping blocks too), and where BLAS's
threads cannot be controlled the batch runs as one part; blas.kernel() names the
kernels OpenBLAS runs."""
from __future__ import annotations

import ctypes
import os
import platform
import subprocess
import sys
import threading

from pathlib import Path

import numpy as np
import pytest

from minicnn.ops import blas, threads

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def two_threads():
    threads.set_host_threads(2, min_bytes=0)
    yield
    threads.set_host_threads(None, min_bytes=threads.DEFAULT_MIN_BYTES)


def controllable():
    lib = blas.library()
    if lib is None or lib.parallel != blas.PTHREADS:
        pytest.skip("NumPy's BLAS is not a pthreads OpenBLAS here: nothing to set")
    return lib


def test_single_threaded_sets_one_thread_and_gives_the_count_back():
    lib = controllable()
    before = lib.get_num_threads()
    with blas.single_threaded() as single:
        assert single and lib.get_num_threads() == 1
        with blas.single_threaded():
            assert lib.get_num_threads() == 1
        assert lib.get_num_threads() == 1  # the outer block is still under way
    assert lib.get_num_threads() == before


def test_overlapping_blocks_in_two_threads_give_the_count_back_once_both_end():
    lib = controllable()
    before = lib.get_num_threads()
    inside, release = threading.Event(), threading.Event()

    def other():
        with blas.single_threaded():
            inside.set()
            release.wait(10)
    thread = threading.Thread(target=other)
    with blas.single_threaded():
        thread.start()
        assert inside.wait(10)
    assert lib.get_num_threads() == 1  # the other thread's block goes on
    release.set()
    thread.join()
    assert lib.get_num_threads() == before


def test_the_parts_see_a_single_threaded_blas(two_threads):
    lib = controllable()
    seen = []
    threads.over_batch(lambda part: seen.append((part, lib.get_num_threads())),
                       np.zeros((6, 3)), blas=True)
    assert sorted((p.start, p.stop, n) for p, n in seen) == [(0, 3, 1), (3, 6, 1)]


def test_without_control_the_batch_runs_as_one_part(two_threads, monkeypatch):
    monkeypatch.setenv("MINICNN_BLAS_THREADS_CONTROL", "0")
    monkeypatch.setattr(blas, "_found", {})  # looked for again, under that setting
    assert blas.library() is None
    with blas.single_threaded() as single:
        assert single is False
    parts = []
    threads.over_batch(parts.append, np.zeros((6, 3)), blas=True)
    assert parts == [slice(0, 6)]
    parts.clear()
    threads.over_batch(parts.append, np.zeros((6, 3)))  # passes without BLAS still split
    assert sorted((p.start, p.stop) for p in parts) == [(0, 3), (3, 6)]


def test_kernel_names_the_kernels_openblas_runs():
    """blas.kernel() reads OpenBLAS's own answer: told OPENBLAS_CORETYPE, a build that
    picks its kernels at run time (NumPy's wheels) names the ones it was told, as its
    configuration string does."""
    config = openblas_config()
    if not config:
        pytest.skip("no OpenBLAS found in this process")
    assert blas.kernel() and blas.kernel() in config  # the name OpenBLAS gives itself
    if "DYNAMIC_ARCH" not in config:
        pytest.skip(f"this OpenBLAS runs one kernel ({blas.kernel()}) whatever it is told")
    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("Haswell and Sandybridge are x86-64 kernels")
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from minicnn.ops import blas; "
            "import test_blas_threads as t; print(blas.kernel()); print(t.openblas_config())")
    for coretype in ("Haswell", "Sandybridge"):
        env = {**os.environ, "OPENBLAS_CORETYPE": coretype,
               "PYTHONPATH": os.pathsep.join([str(ROOT), str(Path(__file__).parent)])}
        run = subprocess.run([sys.executable, "-c", code, str(ROOT)], env=env,
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr
        name, told = run.stdout.splitlines()[:2]
        assert name == coretype and coretype in told


def openblas_config() -> str:
    """openblas_get_config()'s answer ("OpenBLAS 0.3.31 ... DYNAMIC_ARCH Haswell ..."),
    or "" where no OpenBLAS is found."""
    for path in blas._loaded_libraries():
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for name in ("scipy_openblas_get_config64_", "scipy_openblas_get_config",
                     "openblas_get_config64_", "openblas_get_config"):
            function = getattr(lib, name, None)
            if function is not None:
                function.restype = ctypes.c_char_p
                return (function() or b"").decode(errors="replace")
    return ""
