"""Keras 2.2.4's optimizers against a NumPy transcription of keras/optimizers.py.

The reference below is written from Keras 2.2.4's get_updates, not from minicnn:
float64, one plain expression per line of Keras, so a wrong constant, a missing
bias correction or an epsilon on the wrong side of a sqrt shows up as a mismatch
of the parameter *changes* (compared, not the parameters, so tiny steps still count).
"""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest

import minicnn
from minicnn import optimizers
from minicnn.layers import Conv2D, Dense, Flatten, MaxPooling2D
from minicnn.models import Sequential
from minicnn.optimizers import SGD, Adadelta, Adagrad, Adam, Adamax, Nadam, RMSprop
from minicnn.training import checkpoint as ckpt
from minicnn.utils import to_categorical

EPS = 1e-7  # K.epsilon()

# Keras 2.2.4's defaults, as its __init__ signatures give them.
DEFAULTS = {
    "sgd": {"lr": 0.01, "momentum": 0.0, "decay": 0.0, "nesterov": False},
    "rmsprop": {"lr": 0.001, "rho": 0.9, "decay": 0.0, "epsilon": EPS},
    "adagrad": {"lr": 0.01, "decay": 0.0, "epsilon": EPS},
    "adadelta": {"lr": 1.0, "rho": 0.95, "decay": 0.0, "epsilon": EPS},
    "adam": {"lr": 0.001, "beta_1": 0.9, "beta_2": 0.999, "decay": 0.0, "epsilon": EPS,
             "amsgrad": False},
    "adamax": {"lr": 0.002, "beta_1": 0.9, "beta_2": 0.999, "decay": 0.0, "epsilon": EPS},
    "nadam": {"lr": 0.002, "beta_1": 0.9, "beta_2": 0.999, "epsilon": EPS,
              "schedule_decay": 0.004},
}


class KerasReference:
    """keras/optimizers.py 2.2.4, get_gradients and get_updates, in NumPy float64."""

    def __init__(self, name: str, config: dict) -> None:
        self.name, self.c = name, {**DEFAULTS[name], **config}
        self.iterations = 0
        self.m_schedule = 1.0
        self.slots: dict[int, dict[str, np.ndarray]] = {}

    def gradients(self, grads):
        c = self.c
        if c.get("clipnorm", 0) > 0:
            norm = math.sqrt(sum(float(np.sum(np.square(g))) for g in grads))
            grads = [g * c["clipnorm"] / norm if norm >= c["clipnorm"] else g for g in grads]
        if c.get("clipvalue", 0) > 0:
            grads = [np.clip(g, -c["clipvalue"], c["clipvalue"]) for g in grads]
        return grads

    def step(self, params, grads):
        c, grads = self.c, self.gradients(grads)
        lr = c["lr"]
        if c.get("decay", 0) > 0:
            lr = lr * (1. / (1. + c["decay"] * self.iterations))
        t = self.iterations + 1
        if self.name == "nadam":
            momentum_cache_t = c["beta_1"] * (1. - 0.5 * (0.96 ** (t * c["schedule_decay"])))
            momentum_cache_t_1 = c["beta_1"] * (1. - 0.5 * (0.96 ** ((t + 1) * c["schedule_decay"])))
            m_schedule_new = self.m_schedule * momentum_cache_t
            m_schedule_next = self.m_schedule * momentum_cache_t * momentum_cache_t_1
            self.m_schedule = m_schedule_new
        new_params = []
        for i, (p, g) in enumerate(zip(params, grads)):
            s = self.slots.setdefault(i, {k: np.zeros_like(p) for k in ("a", "b", "c")})
            if self.name == "sgd":
                v = c["momentum"] * s["a"] - lr * g
                s["a"] = v
                if c["momentum"] == 0:
                    new_p = p - lr * g
                elif c["nesterov"]:
                    new_p = p + c["momentum"] * v - lr * g
                else:
                    new_p = p + v
            elif self.name == "rmsprop":
                s["a"] = c["rho"] * s["a"] + (1. - c["rho"]) * np.square(g)
                new_p = p - lr * g / (np.sqrt(s["a"]) + c["epsilon"])
            elif self.name == "adagrad":
                s["a"] = s["a"] + np.square(g)
                new_p = p - lr * g / (np.sqrt(s["a"]) + c["epsilon"])
            elif self.name == "adadelta":
                s["a"] = c["rho"] * s["a"] + (1. - c["rho"]) * np.square(g)
                update = g * np.sqrt(s["b"] + c["epsilon"]) / np.sqrt(s["a"] + c["epsilon"])
                new_p = p - lr * update
                s["b"] = c["rho"] * s["b"] + (1 - c["rho"]) * np.square(update)
            elif self.name == "adam":
                lr_t = lr * (np.sqrt(1. - c["beta_2"] ** t) / (1. - c["beta_1"] ** t))
                s["a"] = (c["beta_1"] * s["a"]) + (1. - c["beta_1"]) * g
                s["b"] = (c["beta_2"] * s["b"]) + (1. - c["beta_2"]) * np.square(g)
                if c["amsgrad"]:
                    s["c"] = np.maximum(s["c"], s["b"])
                    new_p = p - lr_t * s["a"] / (np.sqrt(s["c"]) + c["epsilon"])
                else:
                    new_p = p - lr_t * s["a"] / (np.sqrt(s["b"]) + c["epsilon"])
            elif self.name == "adamax":
                lr_t = lr / (1. - c["beta_1"] ** t)
                s["a"] = (c["beta_1"] * s["a"]) + (1. - c["beta_1"]) * g
                s["b"] = np.maximum(c["beta_2"] * s["b"], np.abs(g))
                new_p = p - lr_t * s["a"] / (s["b"] + c["epsilon"])
            else:  # nadam
                g_prime = g / (1. - m_schedule_new)
                s["a"] = c["beta_1"] * s["a"] + (1. - c["beta_1"]) * g
                m_t_prime = s["a"] / (1. - m_schedule_next)
                s["b"] = c["beta_2"] * s["b"] + (1. - c["beta_2"]) * np.square(g)
                v_t_prime = s["b"] / (1. - c["beta_2"] ** t)
                m_t_bar = (1. - momentum_cache_t) * g_prime + momentum_cache_t_1 * m_t_prime
                new_p = p - c["lr"] * m_t_bar / (np.sqrt(v_t_prime) + c["epsilon"])
            new_params.append(new_p)
        self.iterations += 1
        return new_params


CONFIGS = [
    ("sgd", {}), ("sgd", {"momentum": 0.9, "nesterov": True, "lr": 0.1}),
    ("rmsprop", {}), ("rmsprop", {"rho": 0.5, "epsilon": 1e-3, "lr": 0.01}),
    ("adagrad", {}), ("adagrad", {"epsilon": 0.1}),
    ("adadelta", {}), ("adadelta", {"rho": 0.7, "epsilon": 1e-4, "lr": 0.5}),
    ("adam", {}), ("adam", {"amsgrad": True}), ("adam", {"beta_1": 0.5, "beta_2": 0.9, "epsilon": 1e-3}),
    ("adamax", {}), ("adamax", {"beta_1": 0.3, "beta_2": 0.6}),
    ("nadam", {}), ("nadam", {"beta_1": 0.8, "schedule_decay": 0.5, "epsilon": 1e-3}),
]
# Decay and both clippings on every optimizer (Nadam: Keras 2.2.4 gives it no decay).
SHARED = [{"decay": 0.5}, {"clipnorm": 0.5}, {"clipvalue": 0.3}, {"clipnorm": 2.0, "clipvalue": 0.4}]
CONFIGS += [(name, extra) for name in DEFAULTS for extra in SHARED
            if not (name == "nadam" and "decay" in extra)]

# Three gradients per weight, the last much smaller, so Adam's v shrinks (amsgrad
# then keeps the old maximum) and Adamax's u decays instead of jumping.
_rng = np.random.default_rng(15)
GRADS = [(_rng.standard_normal((3, 2)) * s, _rng.standard_normal(2) * s) for s in (1.0, 2.0, 0.01)]


def _dense():
    minicnn.set_floatx("float64")
    layer = Dense(2)
    layer.build((None, 3))
    layer.params["kernel"][...] = minicnn.to_device(_rng.standard_normal((3, 2)))
    layer.params["bias"][...] = minicnn.to_device(_rng.standard_normal(2))
    return layer


def _host(layer):
    return [minicnn.to_host(layer.params[n]).copy() for n in ("kernel", "bias")]


@pytest.mark.parametrize("name,config", CONFIGS, ids=[f"{n}-{'-'.join(c) or 'defaults'}"
                                                        for n, c in CONFIGS])
def test_first_three_updates_match_keras_formulas(backend, name, config):
    layer = _dense()
    opt = optimizers.OPTIMIZERS[name](**config)
    reference = KerasReference(name, config)
    expected = _host(layer)
    for k, (gw, gb) in enumerate(GRADS):
        before = _host(layer)
        layer.grads["kernel"], layer.grads["bias"] = minicnn.to_device(gw), minicnn.to_device(gb)
        opt.apply([layer])
        expected = reference.step(expected, [gw, gb])
        for actual, want, start, what in zip(_host(layer), expected, before, ("kernel", "bias")):
            # Subtracting a parameter near 1 costs the change ~1e-16 absolute: hence atol.
            np.testing.assert_allclose(actual - start, want - start, rtol=1e-9, atol=1e-14,
                                       err_msg=f"{name} {config} update {k + 1} {what}")
            np.testing.assert_allclose(actual, want, rtol=1e-12)
    assert opt.iterations == 3


@pytest.mark.parametrize("name", list(DEFAULTS))
def test_decay_and_clipping_change_the_updates_of_every_optimizer(name):
    """The shared options reach each optimizer: with them the three updates differ."""
    def run(**config):
        layer = _dense()
        layer.params["kernel"][...] = 0.0
        opt = optimizers.OPTIMIZERS[name](**config)
        for gw, gb in GRADS:
            layer.grads["kernel"], layer.grads["bias"] = minicnn.to_device(gw), minicnn.to_device(gb)
            opt.apply([layer])
        return _host(layer)[0]
    plain = run()
    for extra in SHARED:
        if name == "nadam" and "decay" in extra:
            continue
        assert np.abs(run(**extra) - plain).max() > 1e-6, extra


def test_amsgrad_keeps_the_largest_second_moment():
    layer = _dense()
    opts = Adam(), Adam(amsgrad=True)
    for gw, gb in GRADS:
        layer.grads["kernel"], layer.grads["bias"] = minicnn.to_device(gw), minicnn.to_device(gb)
        for opt in opts:
            opt.apply([layer])
    key = (layer.name, "kernel")
    assert np.all(opts[1].vhats[key] >= opts[0].vs[key])
    assert np.any(opts[1].vhats[key] > opts[0].vs[key])


def test_non_trainable_weights_are_left_alone():
    layer = _dense()
    layer.trainable = False
    layer.grads["kernel"], layer.grads["bias"] = (minicnn.to_device(g) for g in GRADS[0])
    before = _host(layer)
    for name in DEFAULTS:
        opt = optimizers.OPTIMIZERS[name]()
        opt.apply([layer])
        assert opt.iterations == 1
        assert all(getattr(opt, slot) == {} for slot in opt.slots)
    for a, b in zip(_host(layer), before):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", list(DEFAULTS))
def test_string_names_defaults_and_keras_config_keys(name):
    opt = optimizers.get(name)
    assert type(opt) is optimizers.OPTIMIZERS[name]
    assert type(opt).__name__.lower() == name
    assert opt.get_config() == DEFAULTS[name]
    assert list(opt.get_config()) == list(DEFAULTS[name])  # Keras's key order
    clipped = type(opt)(clipnorm=1.0, clipvalue=0.5, learning_rate=0.3)
    assert clipped.get_config() == {**DEFAULTS[name], "lr": 0.3, "clipnorm": 1.0, "clipvalue": 0.5}
    assert type(opt).from_config(clipped.get_config()).get_config() == clipped.get_config()
    assert optimizers.get(clipped) is clipped
    assert clipped.lr == 0.3 and clipped.current_learning_rate == 0.3


@pytest.mark.parametrize("make,error,pattern", [
    (lambda: RMSprop(lr=-0.1), ValueError, r"RMSprop: lr must be a finite number >= 0, got -0\.1"),
    (lambda: Adagrad(lr=float("nan")), ValueError, r"Adagrad: lr must be a finite number >= 0, got nan"),
    (lambda: Adam(beta_1=1.0), ValueError, r"Adam: beta_1 must be a finite number \[0, 1\), got 1\.0"),
    (lambda: Adam(beta_1=-0.1), ValueError, r"Adam: beta_1 must be a finite number \[0, 1\), got -0\.1"),
    (lambda: Adamax(beta_2=float("nan")), ValueError, r"Adamax: beta_2 must be a finite number \[0, 1\), got nan"),
    (lambda: Nadam(beta_2=1), ValueError, r"Nadam: beta_2 must be a finite number \[0, 1\), got 1"),
    (lambda: Adadelta(rho=1.5), ValueError, r"Adadelta: rho must be a finite number \[0, 1\), got 1\.5"),
    (lambda: RMSprop(epsilon=0), ValueError, r"RMSprop: epsilon must be a finite number > 0, got 0"),
    (lambda: Adam(epsilon="1e-8"), ValueError, r"Adam: epsilon must be a finite number > 0, got '1e-8'"),
    (lambda: Adam(decay=-1), ValueError, r"Adam: decay must be a finite number >= 0, got -1"),
    (lambda: Adamax(clipnorm=float("inf")), ValueError, r"Adamax: clipnorm must be a finite number >= 0, got inf"),
    (lambda: Adagrad(clipvalue=-1), ValueError, r"Adagrad: clipvalue must be a finite number >= 0, got -1"),
    (lambda: Nadam(schedule_decay=float("nan")), ValueError,
     r"Nadam: schedule_decay must be a finite number >= 0, got nan"),
    (lambda: Adam(amsgrad="yes"), ValueError, r"Adam: amsgrad must be True or False, got 'yes'"),
    (lambda: Nadam(decay=0.01), TypeError, r"unexpected keyword argument 'decay'"),  # as in Keras
    (lambda: optimizers.get(Adam), ValueError, r"unknown optimizer <class .*Adam'>: expected one of sgd"),
])
def test_bad_hyper_parameters_name_optimizer_and_argument(make, error, pattern):
    with pytest.raises(error, match=pattern):
        make()


@pytest.mark.parametrize("name,config", [(n, {}) for n in DEFAULTS] + [("adam", {"amsgrad": True})])
def test_state_round_trip_continues_the_same_updates(name, config):
    layer = _dense()
    opt = optimizers.OPTIMIZERS[name](**config)
    for gw, gb in GRADS[:2]:
        layer.grads["kernel"], layer.grads["bias"] = minicnn.to_device(gw), minicnn.to_device(gb)
        opt.apply([layer])
    state = opt.get_state()
    assert state["iterations"] == 2 and set(state) == {"iterations", *opt.slots}
    for slot in opt.slots:
        if not (name == "sgd" and slot == "velocities"):  # plain SGD keeps no velocity
            assert set(state[slot][layer.name]) == {"kernel", "bias"}, slot
    twin_layer = copy.deepcopy(layer)
    twin = optimizers.OPTIMIZERS[name](**config)
    twin.set_state(state)
    for lay, o in ((layer, opt), (twin_layer, twin)):
        lay.grads["kernel"], lay.grads["bias"] = (minicnn.to_device(g) for g in GRADS[2])
        o.apply([lay])
    for a, b in zip(_host(layer), _host(twin_layer)):
        np.testing.assert_array_equal(a, b)


def _cnn(optimizer):
    model = Sequential([Conv2D(4, 3, input_shape=(8, 8, 3), activation="relu"),
                        MaxPooling2D(), Flatten(), Dense(10, activation="softmax")])
    model.compile(optimizer, "categorical_crossentropy", metrics=["accuracy"])
    return model


def _data(n: int = 40):
    rng = np.random.default_rng(3)
    return (rng.random((n, 8, 8, 3)).astype("float32"),
            to_categorical(rng.integers(0, 10, n), 10))


def _weights(model):
    return {f"{layer.name}/{k}": minicnn.to_host(v).copy()
            for layer in model.layers for k, v in layer.params.items()}


@pytest.mark.parametrize("name,config", [(n, {}) for n in DEFAULTS] + [("adam", {"amsgrad": True})])
def test_checkpoint_resume_equals_the_straight_run(tmp_path, name, config):
    def train(epochs, **kwargs):
        minicnn.set_seed(7)
        model = _cnn(optimizers.OPTIMIZERS[name](**config))
        history = model.fit(*_data(), batch_size=8, epochs=epochs, verbose=0, **kwargs)
        return model, history
    path = tmp_path / "run.npz"
    full, full_history = train(2)
    train(1, checkpoint=path)
    with np.load(path) as f:
        slots = {k.split("/")[3] for k in f.files if k.count("/") == 3}
    assert slots == (set() if name == "sgd" else  # plain SGD keeps no velocity
                     set(optimizers.OPTIMIZERS[name](**config).slots))
    resumed, resumed_history = train(2, checkpoint=path, resume=True)
    assert resumed_history.history == full_history.history
    assert resumed.optimizer.iterations == full.optimizer.iterations == 2 * 5
    for key, value in _weights(full).items():
        np.testing.assert_array_equal(_weights(resumed)[key], value, err_msg=key)


def test_checkpoint_made_with_adam_refuses_an_sgd_model(tmp_path):
    path = tmp_path / "run.npz"
    _cnn(Adam()).fit(*_data(), batch_size=8, epochs=1, verbose=0, checkpoint=path)
    with pytest.raises(ckpt.CheckpointError, match="made with optimizer Adam, the model is "
                                                   "compiled with SGD"):
        ckpt.load(path, _cnn(SGD()))


def test_checkpoint_slot_of_another_optimizer_is_refused(tmp_path):
    path = tmp_path / "run.npz"
    _cnn(Adam()).fit(*_data(), batch_size=8, epochs=1, verbose=0, checkpoint=path)
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    arrays["optimizer/conv2d_1/kernel/accumulators"] = arrays["optimizer/conv2d_1/kernel/ms"]
    np.savez(path, **arrays)
    with pytest.raises(ckpt.CheckpointError, match=r"'optimizer/conv2d_1/kernel/accumulators'.*"
                                                   r"Adam's slots are ms, vs"):
        ckpt.load(path, _cnn(Adam()))


def test_compile_adam_by_name_trains_a_small_cnn(backend):
    minicnn.set_seed(0)
    model = _cnn("adam")
    assert isinstance(model.optimizer, Adam)
    x, y = _data()
    before = model.evaluate(x, y, verbose=0)[0]
    model.fit(x, y, batch_size=8, epochs=20, verbose=0)
    after = model.evaluate(x, y, verbose=0)[0]
    assert after < before - 0.2, (before, after)  # random labels: 2.33 -> 2.07 at Keras's lr
