"""SGD's per-weight learning-rate multipliers and weight decay, step for step against a
naive loop of PyTorch's SGD formula with param groups; the per-step learning-rate
schedules (minicnn.schedules) against their formulas, in an optimizer and in saved files."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

import minicnn
from minicnn import optimizers, schedules
from minicnn.layers import BatchNormalization, Conv2D, Dense, Flatten
from minicnn.models import Sequential
from minicnn.optimizers import SGD, Adam

from conftest import assert_close


class FakeLayer:
    """Just what an optimizer reads: a name, params, grads, trained_params()."""

    def __init__(self, name, params, frozen=()):
        self.name, self.params, self.frozen = name, params, set(frozen)
        self.grads = {}

    def trained_params(self):
        return [n for n in self.params if n not in self.frozen]


def layers_and_grads(rng, device=np.asarray):
    shapes = {"conv": {"kernel": (2, 2, 3, 4), "bias": (4,)},
              "bn": {"beta": (4,), "moving_mean": (4,)},
              "dense": {"kernel": (4, 3)}}
    layers = [FakeLayer(name, {w: device(rng.standard_normal(s).astype(np.float32))
                               for w, s in weights.items()},
                        frozen=("moving_mean",)) for name, weights in shapes.items()]
    steps = [{(l.name, w): rng.standard_normal(p.shape).astype(np.float32)
              for l in layers for w, p in l.params.items()} for _ in range(6)]
    return layers, steps


def torch_sgd_loop(params, grads_per_step, groups, momentum, nesterov, lr_at):
    """PyTorch's torch.optim.SGD (dampening 0), entry by entry in float64: per group
    (keys, lr, weight_decay): d = g + wd p; buf = m buf + d (buf = d the first time);
    d = d + m buf (Nesterov) or d = buf; p -= lr * s(t) * d. ``lr_at(t)``: LambdaLR's factor."""
    p = {k: v.astype(np.float64).ravel().tolist() for k, v in params.items()}
    buf: dict = {}
    for t, grads in enumerate(grads_per_step):
        for keys, lr, wd in groups:
            for k in keys:
                g = grads[k].astype(np.float64).ravel().tolist()
                for i in range(len(p[k])):
                    d = g[i] + wd * p[k][i]
                    if momentum:
                        b = d if (k, i) not in buf else momentum * buf[(k, i)] + d
                        buf[(k, i)] = b
                        d = d + momentum * b if nesterov else b
                    p[k][i] -= lr * lr_at(t) * d
    return {k: np.array(v).reshape(params[k].shape) for k, v in p.items()}


@pytest.mark.parametrize("momentum,nesterov,style", [
    (0.0, False, "keras"), (0.85, False, "keras"), (0.85, True, "keras"),
    (0.85, False, "pytorch"), (0.85, True, "pytorch")])
def test_multipliers_and_weight_decay_match_torch_param_groups(backend, momentum, nesterov, style):
    rng = np.random.default_rng(1)
    layers, steps = layers_and_grads(rng, minicnn.to_device)
    start = {(l.name, w): minicnn.to_host(p).copy() for l in layers for w, p in l.params.items()}
    lr, wd, bias_scale = 0.05, 0.3, 64.0
    sgd = SGD(lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=wd,
              lr_multipliers={"beta": bias_scale, "conv/bias": 0.5},
              exclude_from_weight_decay=["dense/kernel"], momentum_style=style)
    for grads in steps:
        for layer in layers:
            layer.grads = {w: minicnn.to_device(grads[(layer.name, w)]) for w in layer.params}
        sgd.apply(layers)
    # the recipe's groups: lr * c and weight decay lambda / c; no decay where excluded
    groups = [([("conv", "kernel")], lr, wd), ([("conv", "bias")], lr * 0.5, wd / 0.5),
              ([("bn", "beta")], lr * bias_scale, wd / bias_scale),
              ([("dense", "kernel")], lr, 0.0)]
    want = torch_sgd_loop(start, steps, groups, momentum, nesterov, lambda t: 1.0)
    for layer in layers:
        for w, p in layer.params.items():
            got = minicnn.to_host(p)
            if w == "moving_mean":  # not trained: untouched, decay or not
                np.testing.assert_array_equal(got, start[(layer.name, w)])
            else:
                assert_close(got, want[(layer.name, w)].astype(np.float32), rtol=1e-4,
                             err_msg=f"{layer.name}/{w}")
                assert got.dtype == np.float32


@pytest.mark.parametrize("nesterov", [False, True])
def test_pytorch_momentum_matches_torch_under_a_schedule_and_keras_does_not(backend, nesterov):
    rng = np.random.default_rng(4)
    layers, steps = layers_and_grads(rng, minicnn.to_device)
    start = {(l.name, w): minicnn.to_host(p).copy() for l in layers for w, p in l.params.items()}
    schedule = schedules.PiecewiseLinear([0, 2, 6], [0.2, 1.0, 0.07])
    groups = [([("conv", "kernel"), ("conv", "bias"), ("dense", "kernel")], 0.1, 0.2),
              ([("bn", "beta")], 0.1 * 64, 0.2 / 64)]
    want = torch_sgd_loop(start, steps, groups, 0.85, nesterov, lambda t: schedule(t))
    results = {}
    for style in ("pytorch", "keras"):
        copies = [FakeLayer(l.name, {w: p.copy() for w, p in l.params.items()}, l.frozen)
                  for l in layers]
        sgd = SGD(lr=schedules.PiecewiseLinear([0, 2, 6], [0.02, 0.1, 0.007]), momentum=0.85,
                  nesterov=nesterov, weight_decay=0.2, lr_multipliers={"beta": 64.0},
                  momentum_style=style)
        for grads in steps:
            for layer in copies:
                layer.grads = {w: minicnn.to_device(grads[(layer.name, w)]) for w in layer.params}
            sgd.apply(copies)
        results[style] = {(l.name, w): minicnn.to_host(l.params[w]) for l in copies
                          for w in l.trained_params()}
    for key, got in results["pytorch"].items():
        assert_close(got, want[key].astype(np.float32), rtol=1e-4, err_msg=str(key))
    keras_kernel = results["keras"][("conv", "kernel")]
    assert not np.allclose(keras_kernel, want[("conv", "kernel")], rtol=1e-3)


def test_a_zero_multiplier_freezes_the_weight():
    layer = FakeLayer("d", {"w": np.ones(3), "b": np.ones(3)})
    layer.grads = {"w": np.ones(3), "b": np.ones(3)}
    for style in ("keras", "pytorch"):
        SGD(lr=0.1, momentum=0.9, weight_decay=0.5, lr_multipliers={"w": 0.0},
            momentum_style=style).apply([layer])
        np.testing.assert_array_equal(layer.params["w"], np.ones(3))
    assert not np.allclose(layer.params["b"], 1.0)


def test_each_step_decays_by_lr_times_lambda_whatever_the_multiplier():
    for c in (1.0, 64.0, 0.01):
        layer = FakeLayer("d", {"w": np.ones(3, dtype=np.float64)})
        layer.grads = {"w": np.zeros(3)}
        SGD(lr=0.1, weight_decay=0.2, lr_multipliers={"w": c}).apply([layer])
        np.testing.assert_allclose(layer.params["w"], 1 - 0.1 * 0.2, rtol=1e-12)


def test_a_function_selects_multipliers_and_decay():
    layers, steps = layers_and_grads(np.random.default_rng(2))
    a = SGD(lr=0.1, momentum=0.9, weight_decay=0.1,
            lr_multipliers=lambda layer, w: 3.0 if layer.name == "bn" else 1.0,
            exclude_from_weight_decay=lambda layer, w: w == "bias")
    b = SGD(lr=0.1, momentum=0.9, weight_decay=0.1, lr_multipliers={"bn/beta": 3.0},
            exclude_from_weight_decay=["bias"])
    twins = [FakeLayer(l.name, {w: p.copy() for w, p in l.params.items()}, l.frozen)
             for l in layers]
    for grads in steps:
        for group in (layers, twins):
            for layer in group:
                layer.grads = {w: grads[(layer.name, w)] for w in layer.params}
        a.apply(layers)
        b.apply(twins)
    for la, lb in zip(layers, twins):
        for w in la.params:
            np.testing.assert_array_equal(la.params[w], lb.params[w])  # the same arithmetic
    with pytest.raises(ValueError, match="lr_multipliers"):
        SGD(lr_multipliers=lambda layer, w: -1.0).apply(layers)


def test_defaults_leave_keras_sgd_and_its_config_alone():
    sgd = SGD(lr=0.1, momentum=0.9, decay=0.01, nesterov=True)
    assert sgd.get_config() == {"lr": 0.1, "momentum": 0.9, "decay": 0.01, "nesterov": True}
    layers, steps = layers_and_grads(np.random.default_rng(3))
    v = {}
    want = {(l.name, w): p.astype(np.float64) for l in layers for w, p in l.params.items()}
    for t, grads in enumerate(steps):
        for layer in layers:
            layer.grads = {w: grads[(layer.name, w)] for w in layer.params}
        sgd.apply(layers)
        lr_t = 0.1 / (1 + 0.01 * t)
        for key in want:
            if key[1] == "moving_mean":
                continue
            g = grads[key].astype(np.float64)
            v[key] = 0.9 * v.get(key, 0.0) - lr_t * g
            want[key] = want[key] + 0.9 * v[key] - lr_t * g
    for layer in layers:
        for w, p in layer.params.items():
            assert_close(p, want[(layer.name, w)].astype(np.float32), rtol=1e-5)


@pytest.mark.parametrize("make,pattern", [
    (lambda: SGD(weight_decay=-1), "weight_decay"),
    (lambda: SGD(lr_multipliers={"bn/beta": math.nan}), r"lr_multipliers\['bn/beta'\]"),
    (lambda: SGD(lr_multipliers={"a/b/c": 2.0}), "layer_name/weight_name"),
    (lambda: SGD(lr_multipliers=[("beta", 2.0)]), "dict of weight names"),
    (lambda: SGD(exclude_from_weight_decay="bias"), "list of weight names"),
    (lambda: SGD(momentum_style="torch"), "momentum_style must be"),
    (lambda: SGD(lr=schedules.PiecewiseLinear([0, 1], [1.0])), "same length"),
    (lambda: SGD(lr={"class_name": "Nope", "config": {}}), "unknown schedule 'Nope'"),
])
def test_bad_arguments_are_named(make, pattern):
    with pytest.raises(ValueError, match=pattern):
        make()


def test_config_round_trips_with_schedule_multipliers_and_decay():
    sgd = SGD(lr=schedules.PiecewiseLinear([0, 10, 40], [0.2, 1.0, 0.07]), momentum=0.85,
              nesterov=True, weight_decay=0.01, lr_multipliers={"beta": 64.0},
              exclude_from_weight_decay=["dense/kernel"], momentum_style="pytorch")
    config = json.loads(json.dumps(optimizers.serialize(sgd)))
    again = optimizers.deserialize(config)
    assert again.get_config() == sgd.get_config()
    assert isinstance(again.lr, schedules.PiecewiseLinear)
    assert again.lr_multipliers == {"beta": 64.0}
    assert again.exclude_from_weight_decay == ["dense/kernel"]
    assert again.momentum_style == "pytorch"
    assert optimizers.schedules.PiecewiseLinear is schedules.PiecewiseLinear  # tf.keras's path


# ---------------------------------------------------------------- schedules
def naive_interp(t, xs, ys):
    if t <= xs[0]:
        return ys[0]
    for (x0, y0), (x1, y1) in zip(zip(xs, ys), zip(xs[1:], ys[1:])):
        if x0 <= t <= x1:
            return y0 + (y1 - y0) * (t - x0) / (x1 - x0)
    return ys[-1]


@pytest.mark.parametrize("step", [0, 3, 10, 11, 25, 40, 41, 100])
def test_schedules_follow_their_formulas(step):
    assert schedules.PiecewiseLinear([0, 10, 40], [0.2, 1.0, 0.07])(step) == pytest.approx(
        naive_interp(step, [0, 10, 40], [0.2, 1.0, 0.07]), rel=1e-12)
    # tf.keras: values[0] for t <= b0, values[i] for b(i-1) < t <= b(i), the last after
    want = 1.0 if step <= 10 else 0.5 if step <= 40 else 0.1
    assert schedules.PiecewiseConstantDecay([10, 40], [1.0, 0.5, 0.1])(step) == want
    assert schedules.ExponentialDecay(0.1, 20, 0.5)(step) == pytest.approx(0.1 * 0.5 ** (step / 20))
    assert schedules.ExponentialDecay(0.1, 20, 0.5, staircase=True)(step) == pytest.approx(
        0.1 * 0.5 ** (step // 20))
    cos = 0.5 * (1 + math.cos(math.pi * min(step, 40) / 40))
    assert schedules.CosineDecay(0.1, 40, alpha=0.1)(step) == pytest.approx(0.1 * (0.9 * cos + 0.1))


def test_an_optimizer_reads_its_schedule_at_every_step_and_decay_still_divides():
    layer = FakeLayer("d", {"w": np.zeros(1, dtype=np.float64)})
    layer.grads = {"w": np.ones(1)}
    schedule = schedules.PiecewiseLinear([0, 4], [0.5, 1.0])
    sgd = SGD(lr=schedule, decay=0.1)
    want = 0.0
    for t in range(7):
        assert sgd.current_learning_rate == pytest.approx(schedule(t) / (1 + 0.1 * t))
        sgd.apply([layer])
        want -= schedule(t) / (1 + 0.1 * t)
    np.testing.assert_allclose(layer.params["w"], [want], rtol=1e-12)
    adam = Adam(lr=schedules.CosineDecay(1e-3, 10))
    adam.iterations = 5
    assert adam.current_learning_rate == pytest.approx(0.5e-3)


def test_a_per_epoch_lr_callback_refuses_a_schedule_clearly():
    with pytest.raises(TypeError, match="sets the learning rate at every step"):
        float(SGD(lr=schedules.CosineDecay(0.1, 10)).lr)


def test_a_saved_model_keeps_its_schedule_and_param_groups(tmp_path):
    minicnn.set_seed(0)
    rng = np.random.default_rng(0)
    model = Sequential([Conv2D(2, 3, input_shape=(5, 5, 1), use_bias=False),
                        BatchNormalization(scale=False) if _has_scale() else BatchNormalization(),
                        Flatten(), Dense(3, activation="softmax")])
    sgd = SGD(lr=schedules.PiecewiseLinear([0, 3, 6], [0.02, 0.1, 0.01]), momentum=0.85,
              nesterov=True, weight_decay=0.05, lr_multipliers={"beta": 8.0},
              momentum_style="pytorch")
    model.compile(optimizer=sgd, loss="sparse_categorical_crossentropy")
    x, y = rng.standard_normal((8, 5, 5, 1)), rng.integers(0, 3, 8)
    model.fit(x, y, batch_size=4, epochs=1, verbose=0, shuffle=False)
    model.save(tmp_path / "m.npz")
    loaded = minicnn.models.load_model(tmp_path / "m.npz")
    assert loaded.optimizer.get_config() == sgd.get_config()
    model.fit(x, y, batch_size=4, epochs=1, verbose=0, shuffle=False)
    loaded.fit(x, y, batch_size=4, epochs=1, verbose=0, shuffle=False)
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        assert_close(b, a)


def _has_scale():
    import inspect
    return "scale" in inspect.signature(BatchNormalization).parameters
