"""BatchNormalization fused with the activation after it (minicnn/ops/normalization.py,
minicnn/plan.py): the op against a loop reference and against the plain reference
ops, on every backend and through the GPU kernels' CPU build; a model with the
fusion trains to the same numbers (up to rounding) as the same model run unfused
under set_ops("reference"); gradient checks through the fused passes; and the
fusion steps aside where it must (hooks, reference ops, the last layer)."""
from __future__ import annotations

import math

import numpy as np
import pytest

import minicnn
from minicnn import backend as mbackend
from minicnn import ops
from minicnn.gradcheck import check_model
from minicnn.layers import Activation, BatchNormalization, Conv2D, Dense, Flatten, MaxPooling2D
from minicnn.models import Sequential
from minicnn.ops import normalization, reference, threads
from minicnn.optimizers import SGD
from minicnn.utils import to_categorical

from conftest import assert_close

ACTS = {
    "linear": (lambda z: z, lambda z: 1.0),
    "relu": (lambda z: max(z, 0.0), lambda z: 1.0 if z > 0 else 0.0),
    "gelu": (lambda z: 0.5 * z * (1 + math.erf(z / math.sqrt(2))),
             lambda z: 0.5 * (1 + math.erf(z / math.sqrt(2)))
             + z * math.exp(-z * z / 2) / math.sqrt(2 * math.pi)),
    "gelu_tanh": (lambda z: 0.5 * z * (1 + math.tanh(math.sqrt(2 / math.pi)
                                                      * (z + 0.044715 * z ** 3))),
                  None),
}


def loop_reference(x, dy, gamma, beta, eps, act):
    """Forward and backward with loops over channels and values, float64."""
    f, df = ACTS[act]
    x2 = np.asarray(x, np.float64).reshape(-1, x.shape[-1])
    dy2 = np.asarray(dy, np.float64).reshape(x2.shape)
    m, channels = x2.shape
    y, dx = np.empty_like(x2), np.empty_like(x2)
    means, variances = [], []
    for c in range(channels):
        values = [float(v) for v in x2[:, c]]
        mu = sum(values) / m
        var = sum((v - mu) ** 2 for v in values) / m
        means.append(mu)
        variances.append(var)
        r = 1 / math.sqrt(var + eps)
        x_hat = [(v - mu) * r for v in values]
        z = [gamma[c] * h + beta[c] for h in x_hat]
        y[:, c] = [f(v) for v in z]
        if df is None:
            continue
        dz = [float(dy2[i, c]) * df(z[i]) for i in range(m)]
        s1, s2 = sum(dz), sum(d * h for d, h in zip(dz, x_hat))
        dx[:, c] = [gamma[c] * r / m * (m * dz[i] - s1 - x_hat[i] * s2) for i in range(m)]
    return y.reshape(x.shape), dx.reshape(x.shape), np.array(means), np.array(variances)


@pytest.mark.parametrize("act", list(ACTS))
def test_fused_op_matches_loops(backend, act):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((6, 3, 4, 5)) * 2 + 1).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    gamma, beta = rng.uniform(0.5, 2, 5), rng.uniform(-1, 1, 5)
    y, dx, mean, variance = loop_reference(x, dy, gamma, beta, 1e-3, act)
    d = mbackend.to_device
    got_y, got_mean, got_var, cache = ops.batch_norm_act_forward(
        d(x), d(gamma, "float32"), d(beta, "float32"), None, None, 1e-3, act, True)
    assert_close(mbackend.to_host(got_y), y, rtol=2e-5)
    assert_close(mbackend.to_host(got_mean), mean)
    assert_close(mbackend.to_host(got_var), variance)
    if ACTS[act][1] is not None:
        got_dx, s1, s2 = ops.batch_norm_act_backward(d(dy), cache, True, True)
        assert_close(mbackend.to_host(got_dx), dx, rtol=5e-5)


@pytest.mark.parametrize("act", list(ACTS))
@pytest.mark.parametrize("scale, center", [(True, True), (False, True), (True, False)])
@pytest.mark.parametrize("training", [True, False])
def test_fast_op_matches_reference_op(act, scale, center, training):
    """Over several threads and blocks (conftest: 3 threads, no minimum size), the
    blocked, threaded statistics and passes give the plain code's numbers."""
    rng = np.random.default_rng(1)
    normalization_block, sum_block = normalization.BLOCK, normalization.SUM_BLOCK
    # many blocks per thread even for this small x, and partial sums within each
    normalization.BLOCK, normalization.SUM_BLOCK = 64, 16
    try:
        x = (rng.standard_normal((16, 5, 5, 4)) * 3 + 5).astype(np.float32)
        dy = rng.standard_normal(x.shape).astype(np.float32)
        gamma = rng.uniform(0.5, 2, 4).astype(np.float32) if scale else None
        beta = rng.uniform(-1, 1, 4).astype(np.float32) if center else None
        stats = (None, None) if training else (rng.uniform(-1, 1, 4).astype(np.float32),
                                               rng.uniform(0.5, 2, 4).astype(np.float32))
        results = []
        for impl in (normalization, reference):
            y, mean, variance, cache = impl.batch_norm_act_forward(x, gamma, beta, *stats,
                                                                   1e-3, act, True)
            results.append((y, mean, variance, *impl.batch_norm_act_backward(dy, cache,
                                                                             training, True)))
    finally:
        normalization.BLOCK, normalization.SUM_BLOCK = normalization_block, sum_block
    for fast, plain in zip(*results):
        assert_close(fast, plain, rtol=2e-5)


@pytest.mark.parametrize("rows", [1, 3, 4, 9, 12])
def test_column_sums_are_float32_groups_added_in_float64(rows, monkeypatch):
    """column_sums: float32 partial sums over groups of len(ones) rows (the whole groups
    in one stacked product, the rest in another), added in float64. Beside 1e8 (float32
    spacing 8) the 1s of the first group vanish in any order of addition; every later
    group's 4 survive, which neither one float32 sum nor one float64 sum would give."""
    x = np.ones((rows, 3), np.float32)
    x[0, 0] = 1e8
    x[:, 1] = np.arange(rows)
    x[:, 2] = -2
    got = normalization.column_sums(x, np.ones(4, np.float32))
    assert got.dtype == np.float64
    assert got.tolist() == [1e8 + max(rows - 4, 0), rows * (rows - 1) / 2, -2 * rows]
    # without BLAS (ones None): NumPy's sums over groups of SUM_BLOCK values a column
    monkeypatch.setattr(normalization, "SUM_BLOCK", 12)
    got = normalization.column_sums(x, None)
    assert got.dtype == np.float64
    assert got.tolist() == [1e8 + max(rows - 4, 0), rows * (rows - 1) / 2, -2 * rows]


def test_the_sums_take_groups_of_sum_block_values():
    for channels in (1, 3, 64, 1 << 16):
        ones = normalization._ones_for_sums(np.empty((2, channels), np.float32))
        assert len(ones) == max(1, normalization.SUM_BLOCK // channels) and (ones == 1).all()


def test_numpys_sums_where_blas_threads_cannot_be_set(monkeypatch):
    """Where BLAS's threads are out of minicnn's hands, the passes still run on the
    host's threads and sum with NumPy (column_sums without ones): the same numbers."""
    import contextlib
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((16, 5, 5, 4)) * 3 + 5).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    beta = rng.uniform(-1, 1, 4).astype(np.float32)

    def run():
        y, mean, var, cache = normalization.batch_norm_act_forward(x, None, beta, None, None,
                                                                   1e-3, "gelu", True)
        return [y, mean, var, *normalization.batch_norm_act_backward(dy, cache, True, True)]
    threads.set_host_threads(2, min_bytes=0)
    try:
        with_blas = run()
        calls = []
        real_sums = normalization.column_sums
        monkeypatch.setattr(normalization, "column_sums",
                            lambda a, ones: calls.append(ones is None) or real_sums(a, ones))
        monkeypatch.setattr(normalization, "single_threaded_blas",
                            contextlib.contextmanager(lambda: (yield False)))
        without = run()
    finally:
        threads.set_host_threads(None, min_bytes=threads.DEFAULT_MIN_BYTES)
    assert calls and all(calls)
    for a, b in zip(with_blas, without):
        assert_close(a, b, rtol=2e-5)


@pytest.mark.parametrize("act", ["relu", "gelu", "gelu_tanh"])
def test_kernels_match_twins(kernel_emulator, act):
    """The CUDA source of the three kernels, built for the CPU, on the strict backend."""
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((4, 3, 3, 6)) * 2).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    gamma = rng.uniform(0.5, 2, 6).astype(np.float32)
    beta = rng.uniform(-1, 1, 6).astype(np.float32)
    twin_y, _, _, cache = normalization.batch_norm_act_forward(x, gamma, beta, None, None,
                                                               1e-3, act, True)
    twin_dx = normalization.batch_norm_act_backward(dy, cache, True, True)[0]
    before = dict(kernel_emulator.calls)
    ops.kernels.set_kernel_emulator(kernel_emulator)
    try:
        with minicnn.use_backend("strict"):
            d = mbackend.to_device
            y, _, _, cache = ops.batch_norm_act_forward(d(x), d(gamma), d(beta), None, None,
                                                        1e-3, act, True)
            dx = ops.batch_norm_act_backward(d(dy), cache, True, True)[0]
            y, dx = mbackend.to_host(y), mbackend.to_host(dx)
    finally:
        ops.kernels.set_kernel_emulator(None)
    for name in ("minicnn_bn_act_forward", "minicnn_bn_act_backward_dz",
                 "minicnn_bn_act_backward_dx"):
        assert kernel_emulator.calls.get(name, 0) == before.get(name, 0) + 1, name
    assert_close(y, twin_y, rtol=2e-5)
    assert_close(dx, twin_dx, rtol=2e-5)


@pytest.mark.parametrize("approximate", [False, True])
def test_gelu_alone_fast_matches_reference_and_kernels(kernel_emulator, approximate):
    """ops.gelu_forward/backward (minicnn/ops/gelu.py): the blocked, threaded host passes
    and the kernels' CUDA source (CPU build, strict backend) against the plain code."""
    from minicnn.ops import gelu
    rng = np.random.default_rng(5)
    z = (rng.standard_normal((9, 4, 3, 5)) * 3).astype(np.float32)
    dy = rng.standard_normal(z.shape).astype(np.float32)
    block = normalization.BLOCK
    normalization.BLOCK = 32
    try:
        y, cache = gelu.gelu_forward(z, approximate)
        dz = gelu.gelu_backward(dy, z, cache, approximate)
    finally:
        normalization.BLOCK = block
    plain_y, _ = reference.gelu_forward(z, approximate)
    plain_dz = reference.gelu_backward(dy, z, None, approximate)
    assert_close(y, plain_y)
    assert_close(dz, plain_dz)
    before = dict(kernel_emulator.calls)
    ops.kernels.set_kernel_emulator(kernel_emulator)
    try:
        with minicnn.use_backend("strict"):
            d = mbackend.to_device
            ky, kcache = ops.gelu_forward(d(z), approximate)
            kdz = ops.gelu_backward(d(dy), d(z), kcache, approximate)
            ky, kdz = mbackend.to_host(ky), mbackend.to_host(kdz)
    finally:
        ops.kernels.set_kernel_emulator(None)
    for name in ("minicnn_gelu_forward", "minicnn_gelu_backward"):
        assert kernel_emulator.calls.get(name, 0) == before.get(name, 0) + 1, name
    assert_close(ky, plain_y, rtol=2e-5)
    assert_close(kdz, plain_dz, rtol=2e-5)


def test_unknown_activation_is_refused():
    x = np.ones((4, 3), np.float32)
    with pytest.raises(ValueError, match="unknown activation 'tanh'"):
        ops.batch_norm_act_forward(x, None, None, None, None, 1e-3, "tanh", False)


def recipe_block(activation="gelu", seed=0):
    """airbench's conv group, small: conv -> pool -> BN(no scale) -> act -> conv -> BN -> act."""
    minicnn.set_seed(seed)
    model = Sequential([
        Conv2D(6, 3, padding="same", use_bias=False, input_shape=(8, 8, 3)),
        MaxPooling2D(2),
        BatchNormalization(scale=False, epsilon=1e-12, momentum=0.6),
        Activation(activation),
        Conv2D(5, 3, padding="same", use_bias=False),
        BatchNormalization(momentum=0.6),
        Activation(activation),
        Flatten(),
        Dense(3, activation="softmax"),
    ])
    model.compile(optimizer=SGD(lr=0.05, momentum=0.9, nesterov=True),
                  loss="categorical_crossentropy")
    return model


def data(n=12, dtype="float32"):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((n, 8, 8, 3)).astype(dtype)
    return x, to_categorical(np.arange(n) % 3, 3, dtype=dtype)


def run_steps(model, x, y, steps=3):
    seen = []
    for _ in range(steps):
        seen.append(float(model.train_on_batch(x, y)))
        seen += [minicnn.to_host(g).copy() for layer in model.layers
                 for g in layer.grads.values()]
        seen.append(minicnn.to_host(model.predict(x)))
    seen += [minicnn.to_host(p).copy() for layer in model.layers for p in layer.params.values()]
    return seen


@pytest.mark.parametrize("activation", ["gelu", "relu"])
def test_a_model_trains_the_same_fused_and_unfused(activation):
    x, y = data()
    fused_model = recipe_block(activation)
    moves = fused_model.relu_moves()
    assert ("norm", 2) in moves and ("norm", 5) in moves
    fused = run_steps(fused_model, x, y)
    with ops.use_ops("reference"):
        plain_model = recipe_block(activation)
        assert not any(isinstance(m, tuple) for m in plain_model.relu_moves())
        plain = run_steps(plain_model, x, y)
    assert len(fused) == len(plain)
    for a, b in zip(fused, plain):
        assert_close(a, b, rtol=1e-4)


@pytest.mark.parametrize("small_blocks", [False, True], ids=["default-blocks", "small-blocks"])
def test_gradients_through_the_fused_passes(monkeypatch, small_blocks):
    """Float64 central differences through the fused passes; with small blocks, the
    statistics and backward's sums go through many blocks, BLAS groups and two threads."""
    if small_blocks:
        monkeypatch.setattr(normalization, "BLOCK", 64)
        monkeypatch.setattr(normalization, "SUM_BLOCK", 16)
        threads.set_host_threads(2, min_bytes=0)
    minicnn.set_floatx("float64")
    x, y = data(6, "float64")
    try:
        for activation in ("gelu", "relu"):
            model = recipe_block(activation)
            assert ("norm", 2) in model.relu_moves()
            result = check_model(model, x, y)
            assert result.passed, result
    finally:
        threads.set_host_threads(None, min_bytes=threads.DEFAULT_MIN_BYTES)


def test_the_fusion_steps_aside():
    model = recipe_block()
    model.layers[3].retain = True  # someone watches the Activation layer
    assert ("norm", 2) not in model.relu_moves() and ("norm", 5) in model.relu_moves()
    model.layers[3].retain = False
    # The last layer's activation may be folded into the loss: never fused.
    tail = Sequential([Dense(4, input_shape=(3,)), BatchNormalization(), Activation("relu")])
    tail.compile("sgd", "mse")
    assert not any(isinstance(m, tuple) for m in tail.relu_moves())
    # tanh, or an axis other than the last, run as written
    other = Sequential([Dense(4, input_shape=(3,)), BatchNormalization(), Activation("tanh"),
                        Dense(2)])
    other.compile("sgd", "mse")
    assert not any(isinstance(m, tuple) for m in other.relu_moves())


def test_a_fused_relu_before_pooling_is_not_moved_too():
    model = Sequential([Conv2D(4, 3, input_shape=(6, 6, 2)), BatchNormalization(),
                        Activation("relu"), MaxPooling2D(2), Flatten(), Dense(2)])
    model.compile("sgd", "mse")
    assert model.relu_moves() == frozenset({("norm", 1)})
    with ops.use_ops("reference"):
        assert model.relu_moves() == frozenset({2})  # unfused: the ReLU moves after the pool


def test_axis_other_than_last_runs_unfused_inside_the_pair():
    minicnn.set_floatx("float64")
    rng = np.random.default_rng(4)
    model = Sequential([Conv2D(3, 2, input_shape=(5, 5, 2)), BatchNormalization(axis=1),
                        Activation("gelu"), Flatten(), Dense(2, activation="softmax")])
    model.compile("sgd", "categorical_crossentropy")
    assert ("norm", 1) in model.relu_moves()
    x = rng.standard_normal((4, 5, 5, 2))
    y = to_categorical([0, 1, 0, 1], 2, dtype="float64")
    assert check_model(model, x, y).passed


def test_the_threads_sums_are_merged_in_the_batchs_order(monkeypatch):
    """The per-channel statistics and sums come from one partial sum per thread; they are
    merged in the order of the batch, not in the order the threads finish, so a seeded
    run gives the same bits every time. Here the parts run last-first (in float64, where
    the merge's rounding shows)."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((12, 5, 5, 7)) * 3 + 1e3
    dy = rng.standard_normal(x.shape) * 10.0 ** rng.integers(-8, 8, x.shape)
    gamma, beta = np.linspace(0.5, 2, 7), np.zeros(7)

    def parts_in_order(fn, x2, order):
        bounds = [0, 3, 7, 12 * 25 - 5, 12 * 25]
        slices = [slice(a, b) for a, b in zip(bounds, bounds[1:])]
        ran = {part.start: fn(part) for part in (slices if order == "first" else slices[::-1])}
        return [ran[part.start] for part in slices]  # over_batch's answer: the batch's order

    results = {}
    for order in ("first", "last"):
        monkeypatch.setattr(normalization, "over_batch",
                            lambda fn, x2, blas=False, order=order: parts_in_order(fn, x2, order))
        y, mean, var, cache = normalization.batch_norm_act_forward(
            x, gamma, beta, None, None, 1e-3, "gelu", keep_cache=True)
        dx, sum_dz, sum_dzx = normalization.batch_norm_act_backward(dy, cache, True, True)
        results[order] = [y, mean, var, dx, sum_dz, sum_dzx]
    for first, last in zip(results["first"], results["last"]):
        np.testing.assert_array_equal(first, last)  # the same computation: the same bits
