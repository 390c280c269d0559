"""Shared fixtures for the minicnn core tests.

* ``backend``: runs a test on "numpy", on "strict" (host arrays that refuse to
  mix with plain numpy arrays the way CuPy arrays do), on "kernels" (the strict
  backend running the layers' GPU kernels, their CUDA source compiled for the
  CPU by tests/kernel_emulator.py; skipped with the reason where no C++
  compiler is found) and on "cupy" (skipped, with the reason, where CuPy or a
  GPU is missing). The backend is set back to "numpy" afterwards whatever
  happens.
* an autouse fixture puts floatx back to "float32" and seeds minicnn with 0
  before every test, so tests neither leak state nor depend on their order.
  It also makes the host split every pass over the batch into 3 threaded parts
  (ops.threads.over_batch), however small, so every NumPy test checks that path.
* ``assert_close``, ``near_ties`` and ``assert_same_accuracy`` compare results of two
  computation paths (other summation orders) with a tolerance, so the suite holds on
  any CPU, BLAS kernel and thread count.
"""
from __future__ import annotations

import numpy as np
import pytest

import minicnn
from minicnn import backend as _backend
from minicnn.ops import kernels as _kernels
from minicnn.ops import threads as _threads

import kernel_emulator as kernel_emulator_module

def _cupy_reason() -> str:
    try:
        _backend._cupy()
    except RuntimeError as exc:
        return str(exc)
    return "unknown reason"


@pytest.fixture(autouse=True)
def _fresh_state():
    minicnn.set_backend("numpy")
    minicnn.set_floatx("float32")
    minicnn.set_seed(0)
    minicnn.set_ops("fast")
    _threads.set_host_threads(3, min_bytes=0)
    yield
    minicnn.set_backend("numpy")
    minicnn.set_floatx("float32")
    minicnn.set_ops("fast")
    _threads.set_host_threads(None, min_bytes=_threads.DEFAULT_MIN_BYTES)


@pytest.fixture(scope="session")
def kernel_emulator():
    """The CPU build of the GPU kernels (one build folder per test session)."""
    if kernel_emulator_module.compiler() is None:
        reason = "no C++ compiler (g++) to build the GPU kernels for the CPU"
        print(reason)
        pytest.skip(reason)
    return kernel_emulator_module.Emulator()


@pytest.fixture(params=["numpy", "strict", "kernels", "cupy"])
def backend(request):
    name = request.param
    if name == "cupy" and not _backend.cupy_available():
        reason = f"CuPy or a GPU is not available: {_cupy_reason()}"
        print(reason)
        pytest.skip(reason)
    if name == "kernels":
        _kernels.set_kernel_emulator(request.getfixturevalue("kernel_emulator"))
    minicnn.set_backend("strict" if name == "kernels" else name)
    try:
        yield name
    finally:
        minicnn.set_backend("numpy")
        _kernels.set_kernel_emulator(None)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def distinct(shape, rng=None):
    """Values that are all different and well apart: a random permutation of an
    evenly spaced grid over [-1, 1] that never contains 0. No max-pool ties, and
    no input sits on a ReLU kink, so finite differences mean something."""
    rng = np.random.default_rng(0) if rng is None else rng
    n = int(np.prod(shape))
    step = 2.0 / n
    values = -1.0 + step * (np.arange(n) + 0.25)
    return rng.permutation(values).reshape(shape)


# ---------------------------------------------------------------- comparing two paths
# Two computations of the same numbers that add in a different order (another CPU's
# BLAS kernel, another thread count or blocking, a GPU kernel against its NumPy
# twin, strict against numpy) agree only up to rounding, in the last bits. Such
# results are compared with these helpers; bit-exact comparisons are kept for runs
# of the same arithmetic in the same order (a copy, a save/load round trip, a rerun
# with the same seed on the same path).
RTOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12}


def assert_close(actual, desired, rtol=None, err_msg=""):
    """``actual`` equals ``desired`` up to the rounding of another summation order.

    rtol defaults to 1e-5 for float32 and 1e-12 for float64 (about 100 and 5,000
    units in the last place: far below any real bug). The absolute part is rtol
    times the largest magnitude of ``desired``, because an entry that a sum
    cancels to nearly zero keeps the rounding error of the sum's larger terms."""
    actual, desired = np.asarray(actual), np.asarray(desired)
    if rtol is None:
        dtypes = [a.dtype for a in (actual, desired) if a.dtype.kind == "f"]
        rtol = max(RTOL.get(np.dtype(d), 1e-12) for d in dtypes) if dtypes else 1e-12
    scale = float(np.max(np.abs(desired))) if desired.size else 0.0
    np.testing.assert_allclose(actual, desired, rtol=rtol, atol=rtol * scale, err_msg=err_msg)


def near_ties(scores, rtol=1e-4) -> int:
    """Rows of ``scores`` (logits or probabilities) whose two largest entries are so close
    that rounding on another path could swap them, and so flip the argmax."""
    scores = np.asarray(scores, dtype=np.float64)
    top = np.sort(scores, axis=1)[:, -2:]
    gap = top[:, 1] - top[:, 0]
    return int(np.sum(gap <= rtol * np.maximum(np.abs(top[:, 1]), 1.0)))


def assert_same_accuracy(acc, expected, n, scores):
    """Two accuracies over the same ``n`` samples, computed on different paths, count the
    same correct predictions, except where a near-tie in ``scores`` (the samples'
    outputs) lets the last bits pick the other class."""
    differ = round(abs(acc - expected) * n)
    assert differ <= near_ties(scores), (
        f"accuracy {acc} vs {expected}: {differ} of {n} predictions differ, "
        f"{near_ties(scores)} near-tie(s) could explain that")


def pytest_terminal_summary(terminalreporter):
    """One line per distinct skip reason (pytest's -rs prints one per test location)."""
    reasons: dict[str, int] = {}
    for report in terminalreporter.stats.get("skipped", []):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        reason = reason.removeprefix("Skipped: ")
        reasons[reason] = reasons.get(reason, 0) + 1
    if reasons:
        terminalreporter.write_line("skipped tests, by reason:")
        for reason, count in reasons.items():
            terminalreporter.write_line(f"  {count} skipped: {reason}")
