"""The backend switch: numpy / cupy / strict, floatx, seeds, host <-> device."""
from __future__ import annotations

import time

import numpy as np
import pytest

import minicnn
from minicnn import backend as B
from minicnn import initializers
from minicnn.ops import threads as T
from minicnn.layers import Dense, Layer


# ---------------------------------------------------------------- choosing a backend
def test_default_backend_is_numpy_and_float32():
    assert minicnn.get_backend() == "numpy"
    assert minicnn.floatx() == "float32"
    assert B.xp() is np


def test_backend_fixture_sets_and_the_module_follows(backend):
    assert minicnn.get_backend() == ("strict" if backend == "kernels" else backend)
    a = minicnn.to_device(np.arange(6.0))
    if backend == "numpy":
        assert type(a) is np.ndarray
    else:
        assert B.is_device_array(a)
    assert B.get_array_module(a) is B.xp()


@pytest.mark.skipif(B.cupy_available(), reason="CuPy and a GPU are available here")
def test_cupy_without_cupy_raises_runtime_error_with_install_hint():
    with pytest.raises(RuntimeError, match=r"minicnn\[gpu\]"):
        minicnn.set_backend("cupy")
    assert minicnn.get_backend() == "numpy"  # a failed switch changes nothing
    assert B.cupy_available() is False


def test_unknown_backend_names_the_choices():
    with pytest.raises(ValueError, match=r"unknown backend 'tensorflow'.*numpy.*cupy.*strict"):
        minicnn.set_backend("tensorflow")
    assert minicnn.get_backend() == "numpy"


def test_unknown_floatx_names_the_choices():
    with pytest.raises(ValueError, match=r"unknown floatx 'float16'.*float32.*float64"):
        minicnn.set_floatx("float16")
    assert minicnn.floatx() == "float32"


def test_use_backend_restores_after_block_and_after_exception():
    with minicnn.use_backend("strict"):
        assert minicnn.get_backend() == "strict"
        assert B.is_device_array(minicnn.to_device([1.0, 2.0]))
    assert minicnn.get_backend() == "numpy"
    with pytest.raises(KeyError):
        with minicnn.use_backend("strict"):
            raise KeyError("boom")
    assert minicnn.get_backend() == "numpy"
    # nested: the inner block restores the outer choice, not "numpy"
    with minicnn.use_backend("strict"):
        with minicnn.use_backend("numpy"):
            assert minicnn.get_backend() == "numpy"
        assert minicnn.get_backend() == "strict"
    assert minicnn.get_backend() == "numpy"


def test_use_floatx_restores_and_params_follow_floatx():
    with minicnn.use_floatx("float64"):
        layer = Dense(3)
        layer.build((None, 4))
        assert layer.params["kernel"].dtype == np.float64
    assert minicnn.floatx() == "float32"
    layer = Dense(3)
    layer.build((None, 4))
    assert layer.params["kernel"].dtype == np.float32
    assert layer.params["bias"].dtype == np.float32


# ---------------------------------------------------------------- the strict backend
@pytest.fixture
def strict():
    minicnn.set_backend("strict")
    yield
    minicnn.set_backend("numpy")


def test_strict_ufunc_with_host_array_raises(strict):
    d = minicnn.to_device(np.ones((2, 3)))
    h = np.ones((2, 3))
    with pytest.raises(TypeError, match=r"host numpy\.ndarray.*to_device"):
        d + h
    with pytest.raises(TypeError, match="host numpy.ndarray"):
        h * d
    with pytest.raises(TypeError, match="host numpy.ndarray"):
        np.add(d, h, out=d)
    # scalars and 0-d values are fine, as they are on CuPy
    assert minicnn.to_host(d * 2.0 + np.float32(1)).tolist() == [[3.0] * 3] * 2


def test_strict_numpy_function_on_device_array_raises(strict):
    d = minicnn.to_device(np.arange(4.0))
    with pytest.raises(TypeError, match=r"numpy\.sum\(\) was given a device array"):
        np.sum(d)
    with pytest.raises(TypeError, match="device array"):
        np.concatenate([d, d])
    # the backend's own module takes device arrays and refuses host ones
    xp = B.xp()
    assert float(xp.sum(d)) == 6.0
    with pytest.raises(TypeError, match="host numpy.ndarray"):
        xp.sum(np.arange(4.0))


def test_strict_results_stay_on_device(strict):
    d = minicnn.to_device(np.arange(6.0).reshape(2, 3))
    for result in (d + 1, d @ d.T, d.sum(axis=0), d.max(axis=1, keepdims=True), d.T,
                   B.xp().exp(d), B.xp().zeros((2, 2)), d[0]):
        assert B.is_device_array(result), type(result)


def test_to_host_to_device_round_trip(backend):
    host = np.random.default_rng(0).standard_normal((3, 4, 5)).astype(np.float32)
    dev = minicnn.to_device(host)
    back = minicnn.to_host(dev)
    assert type(back) is np.ndarray
    assert back.dtype == np.float32
    np.testing.assert_array_equal(back, host)
    dev64 = minicnn.to_device(host, dtype="float64")
    assert minicnn.to_host(dev64).dtype == np.float64
    np.testing.assert_array_equal(minicnn.to_host(dev64), host.astype(np.float64))


class _HostMixingLayer(Layer):
    """A buggy layer: it adds a host array created with plain numpy."""

    def _forward(self, x, training):
        return x + np.ones(x.shape, dtype=x.dtype)  # should be backend.xp().ones

    def _backward(self, grad):
        return grad


class _HostOnlyLayer(Layer):
    """Another buggy layer: it calls a numpy function on its input."""

    def _forward(self, x, training):
        return np.tanh(x) * np.ones_like(x)

    def _backward(self, grad):
        return grad


def test_host_mixing_layer_runs_on_numpy_but_is_caught_by_strict():
    x = np.zeros((2, 3))
    np.testing.assert_array_equal(_HostMixingLayer().forward(x), np.ones((2, 3)))
    minicnn.set_backend("strict")
    with pytest.raises(TypeError, match="host numpy.ndarray"):
        _HostMixingLayer().forward(minicnn.to_device(x))
    with pytest.raises(TypeError, match="device array"):
        _HostOnlyLayer().forward(minicnn.to_device(x))


# ---------------------------------------------------------------- seeds
def test_set_seed_makes_host_and_device_generators_repeat(backend):
    minicnn.set_seed(42)
    a = B.host_rng().standard_normal(5)
    d1 = minicnn.to_host(B.device_rng().random(5))
    minicnn.set_seed(42)
    b = B.host_rng().standard_normal(5)
    d2 = minicnn.to_host(B.device_rng().random(5))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(d1, d2)
    minicnn.set_seed(43)
    assert not np.array_equal(a, B.host_rng().standard_normal(5))


def test_permutation_is_a_permutation(backend):
    p = minicnn.to_host(B.permutation(B.device_rng(), 17))
    assert sorted(p.tolist()) == list(range(17))


@pytest.mark.parametrize("n,threads", [(1, 3), (2, 3), (7, 3), (32, 2), (5, 1)])
def test_over_batch_covers_each_image_once(n, threads):
    T.set_host_threads(threads, min_bytes=0)
    x = np.zeros((n, 4))
    seen = []
    T.over_batch(lambda part: (seen.append(part), x.__setitem__(part, x[part] + 1)), x)
    assert (x == 1).all()  # every image touched exactly once
    assert len(seen) == min(threads, n)


def test_over_batch_runs_once_for_small_work_and_on_a_device(backend):
    T.set_host_threads(4, min_bytes=1 << 20)
    calls = []
    T.over_batch(calls.append, minicnn.to_device(np.zeros((8, 4))))  # 256 bytes: not worth it
    assert calls == [slice(0, 8)]
    T.set_host_threads(4, min_bytes=0)
    calls.clear()
    T.over_batch(calls.append, minicnn.to_device(np.zeros((8, 4))))
    assert len(calls) == (4 if backend == "numpy" else 1)  # a device wants one launch


def test_over_batch_returns_the_parts_answers_in_the_batchs_order():
    """The first part (this thread's) ends last here; the answers still come in order."""
    T.set_host_threads(3, min_bytes=0)

    def part(images):
        if images.start == 0:
            time.sleep(0.05)
        return images.start, images.stop
    assert T.over_batch(part, np.zeros((9, 2))) == [(0, 3), (3, 6), (6, 9)]
    T.set_host_threads(3, min_bytes=1 << 20)
    assert T.over_batch(part, np.zeros((9, 2))) == [(0, 9)]  # one call: one answer


def test_over_batch_reraises_a_parts_error():
    T.set_host_threads(2, min_bytes=0)

    def fail_second_half(part):
        if part.start > 0:
            raise ValueError("part failed")
    with pytest.raises(ValueError, match="part failed"):
        T.over_batch(fail_second_half, np.zeros((4, 2)))


def test_host_threads_come_from_the_environment(monkeypatch):
    T.set_host_threads(None)
    monkeypatch.setenv("MINICNN_NUM_THREADS", "5")
    assert T.host_threads() == 5
    monkeypatch.delenv("MINICNN_NUM_THREADS")
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert T.host_threads() == 5  # read once, not on every pass
    T.set_host_threads(None)      # read again
    assert T.host_threads() == 3
    with pytest.raises(ValueError, match="positive integer, got 0"):
        T.set_host_threads(0)


def test_a_build_draws_all_its_weights_from_one_generator():
    # One host generator per build, as before layers made weights with add_weight: a
    # bias (zeros) must not use up a seed, or every later layer's weights would move.
    minicnn.set_seed(5)
    first, second = Dense(3), Dense(2)
    first.build((None, 4))
    second.build((None, 3))
    minicnn.set_seed(5)
    expected = [initializers.glorot_uniform(shape, B.host_rng()).astype(np.float32)
                for shape in ((4, 3), (3, 2))]
    np.testing.assert_array_equal(minicnn.to_host(first.params["kernel"]), expected[0])  # same draws
    np.testing.assert_array_equal(minicnn.to_host(second.params["kernel"]), expected[1])
