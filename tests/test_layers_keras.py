"""The Keras 2 layers, activations and initializers beyond the CNN core.

* every new activation against a scalar formula, element by element (gelu is the
  erf form, math.erf's; gelu(approximate=True) the tanh form, within 5e-4 of it);
* every new layer's forward against a naive loop written here, its shapes
  (batch axis included), its errors, and 50 random float64 gradient checks;
* each runs on every backend (strict included) and matches numpy;
* a Sequential model of them trains, and its weights round-trip through a file;
* the initializers draw what Keras's do (bounds, variances, orthogonality).
"""
from __future__ import annotations

import math

import numpy as np
import pytest

import minicnn
from minicnn import activations, initializers
from minicnn.gradcheck import DEFAULT_TOLERANCE, check_layer
from minicnn.layers import (ELU, Activation, AveragePooling2D, Conv2D, Cropping2D, Dense,
                            Flatten, GlobalAveragePooling2D, GlobalMaxPooling2D, LeakyReLU,
                            PReLU, Reshape, ZeroPadding2D)
from minicnn.models import Sequential
from minicnn.optimizers import SGD

from conftest import assert_close

SEEDS = range(50)
MARGIN = DEFAULT_TOLERANCE / 10
NEW_ACTIVATIONS = ["elu", "selu", "softplus", "softsign", "hard_sigmoid", "exponential", "gelu"]
SELU_A, SELU_S = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946


@pytest.fixture
def f64():
    minicnn.set_floatx("float64")
    yield
    minicnn.set_floatx("float32")


# ---------------------------------------------------------------- activations
SCALAR = {
    "elu": lambda z: z if z > 0 else math.exp(z) - 1,
    "selu": lambda z: SELU_S * (z if z > 0 else SELU_A * (math.exp(z) - 1)),
    "softplus": lambda z: math.log(1 + math.exp(z)),
    "softsign": lambda z: z / (1 + abs(z)),
    "hard_sigmoid": lambda z: min(max(0.2 * z + 0.5, 0.0), 1.0),
    "exponential": math.exp,
    "gelu": lambda z: 0.5 * z * (1 + math.erf(z / math.sqrt(2))),
}
SCALAR_SLOPE = {
    "elu": lambda z: 1.0 if z > 0 else math.exp(z),
    "selu": lambda z: SELU_S * (1.0 if z > 0 else SELU_A * math.exp(z)),
    "softplus": lambda z: 1 / (1 + math.exp(-z)),
    "softsign": lambda z: 1 / (1 + abs(z)) ** 2,
    "hard_sigmoid": lambda z: 0.2 if -2.5 < z < 2.5 else 0.0,
    "exponential": math.exp,
    "gelu": lambda z: 0.5 * (1 + math.erf(z / math.sqrt(2)))
    + z * math.exp(-z * z / 2) / math.sqrt(2 * math.pi),
}


def test_every_new_activation_is_registered():
    assert set(NEW_ACTIVATIONS) <= set(activations.ACTIVATIONS)


@pytest.mark.parametrize("name", NEW_ACTIVATIONS)
def test_activation_forward_and_slope_match_scalar_formulas(name, f64):
    z = np.array([-30.0, -4.0, -2.6, -1.0, -0.3, -1e-9, 1e-9, 0.3, 1.0, 2.4, 4.0, 30.0])
    f = activations.get(name)
    y = f.forward(z.copy())
    assert_close(y, [SCALAR[name](v) for v in z])
    if name in SCALAR_SLOPE:
        assert_close(f.backward(np.ones_like(z)), [SCALAR_SLOPE[name](v) for v in z])


def test_gelu_approximate_is_the_tanh_form_close_to_erf():
    z = np.linspace(-6, 6, 2001)
    f = activations.Gelu(approximate=True)
    y = f.forward(z)
    tanh_form = [0.5 * v * (1 + math.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v ** 3)))
                 for v in z]
    assert_close(y, tanh_form)
    exact = np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in z])
    gap = np.abs(y - exact).max()
    assert 1e-5 < gap < 5e-4  # an approximation, and a close one
    assert repr(f.clone()) == "gelu(approximate=True)"
    with pytest.raises(ValueError, match="approximate=True"):
        activations.serialize(f)
    with pytest.raises(ValueError, match="approximate must be True or False"):
        activations.Gelu(approximate="yes")


@pytest.mark.parametrize("dtype, tolerance", [("float64", 1e-15), ("float32", 5e-7)])
def test_erf_matches_math_erf_to_the_dtypes_rounding(backend, dtype, tolerance):
    grid = np.concatenate([np.linspace(-7, 7, 14001), [0.0, 1e-12, -1e-30, 0.46875, -0.46875,
                                                       4.0, -4.0, 26.0, 1e10, -1e10]])
    x = grid.astype(dtype)
    y = minicnn.backend.to_host(activations.erf(minicnn.backend.to_device(x, dtype=dtype)))
    assert y.dtype == dtype
    exact = np.array([math.erf(float(v)) for v in x])
    # relative near 0, absolute near +-1: both are what rounding to dtype allows
    assert (np.abs(y - exact) <= tolerance * np.maximum(np.abs(exact), 1e-3)).all()


@pytest.mark.parametrize("dtype, tolerance", [("float64", 1e-15), ("float32", 5e-7)])
def test_normal_cdf_matches_math_erf(backend, dtype, tolerance):
    """Phi(z) = (1 + erf(z / sqrt 2)) / 2, GELU's gate; in float32 on the host a fit with
    its constants folded: to within the dtype's rounding of values up to 1, absolutely
    (so GELU's z Phi(z) is within a few ulps of z), and 0.5 at 0 exactly."""
    from minicnn.ops.special import normal_cdf
    grid = np.concatenate([np.linspace(-9, 9, 18001), [0.0, -1e-30, 5.65, -5.66, 40.0, -40.0]])
    x = minicnn.backend.to_device(grid.astype(dtype), dtype=dtype)
    exact = np.array([0.5 * (1 + math.erf(float(v) / math.sqrt(2))) for v in grid.astype(dtype)])
    y = minicnn.backend.to_host(normal_cdf(x))
    assert y.dtype == dtype and y[18001] == 0.5
    assert np.abs(y - exact).max() <= tolerance  # absolute: Phi's values are up to 1
    out = minicnn.backend.to_device(np.full(len(grid), 9.0), dtype=dtype)
    normal_cdf(x, out=out)
    np.testing.assert_array_equal(minicnn.backend.to_host(out), y)
    assert y.min() >= 0 and y.max() <= 1


@pytest.mark.parametrize("approximate", [False, True])
def test_gelu_gradient_checks(f64, approximate):
    for seed in range(10):
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((3, 7)) * 3
        result = check_layer(Activation(activations.Gelu(approximate)), x, seed=seed)
        assert result.passed and result.max_error < MARGIN, f"seed {seed}: {result}"
        layer = Activation(activations.Gelu(approximate))  # and a wrong slope fails
        right = layer.activation.backward
        layer.activation.backward = lambda grad: right(grad) * 1.01
        assert check_layer(layer, x, seed=seed).verdict == "FAILED"


def test_softplus_is_stable_far_out():
    f = activations.get("softplus")
    y = f.forward(np.array([-800.0, 800.0]))
    assert np.isfinite(y).all() and y[1] == 800.0
    assert np.isfinite(f.backward(np.ones(2))).all()


@pytest.mark.parametrize("name", NEW_ACTIVATIONS)
def test_activation_layer_and_dense_take_the_name(name, f64):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4))
    layer = Activation(name)
    assert_close(layer.forward(x, training=True), [[SCALAR[name](v) for v in row] for row in x])
    assert layer.config() == {"activation": name}
    dense = Dense(2, activation=name)
    dense.forward(x)
    assert dense.config()["activation"] == name


def activation_sweep(name):
    def make(rng):
        x = rng.standard_normal((3, int(rng.integers(1, 6)))) * rng.choice([0.1, 1.0, 3.0])
        if rng.integers(2):
            return Activation(name), x
        return Dense(int(rng.integers(1, 4)), activation=name,
                     bias_initializer=lambda s, r: r.uniform(-0.5, 0.5, s)), x
    return make


# ---------------------------------------------------------------- naive references
def naive_avg_pool(x, pool, strides, padding):
    n, h, w, c = x.shape
    (ph, pw), (sh, sw) = pool, strides
    if padding == "valid":
        oh, ow, top, left = (h - ph) // sh + 1, (w - pw) // sw + 1, 0, 0
    else:
        oh, ow = -(-h // sh), -(-w // sw)
        top = max((oh - 1) * sh + ph - h, 0) // 2
        left = max((ow - 1) * sw + pw - w, 0) // 2
    y = np.zeros((n, oh, ow, c))
    for b in range(n):
        for oy in range(oh):
            for ox in range(ow):
                for ch in range(c):
                    total, count = 0.0, 0
                    for i in range(ph):
                        for j in range(pw):
                            r, s = oy * sh + i - top, ox * sw + j - left
                            if 0 <= r < h and 0 <= s < w:
                                total += x[b, r, s, ch]
                                count += 1
                    y[b, oy, ox, ch] = total / count
    return y


def naive_global(x, reduce):
    n, h, w, c = x.shape
    y = np.zeros((n, c))
    for b in range(n):
        for ch in range(c):
            y[b, ch] = reduce([x[b, r, s, ch] for r in range(h) for s in range(w)])
    return y


def naive_zero_pad(x, pads):
    (top, bottom), (left, right) = pads
    n, h, w, c = x.shape
    y = np.zeros((n, h + top + bottom, w + left + right, c))
    for b in range(n):
        for r in range(h):
            for s in range(w):
                y[b, r + top, s + left] = x[b, r, s]
    return y


def naive_crop(x, crops):
    (top, bottom), (left, right) = crops
    n, h, w, c = x.shape
    y = np.zeros((n, h - top - bottom, w - left - right, c))
    for b in range(n):
        for r in range(y.shape[1]):
            for s in range(y.shape[2]):
                y[b, r, s] = x[b, r + top, s + left]
    return y


def naive_prelu(x, alpha):
    y = np.empty_like(x)
    for index in np.ndindex(*x.shape):
        a = alpha[tuple(min(i, d - 1) for i, d in zip(index[1:], alpha.shape))]
        y[index] = x[index] if x[index] > 0 else a * x[index]
    return y


def test_average_pooling_same_leaves_the_padding_out_of_the_count():
    x = np.arange(9.0).reshape(1, 3, 3, 1)
    y = AveragePooling2D(3, strides=1, padding="same").forward(x)
    # the corner window holds 0, 1, 3, 4: their mean, not their sum over 9
    assert y[0, 0, 0, 0] == pytest.approx(2.0)
    assert y[0, 1, 1, 0] == pytest.approx(4.0)


def test_average_pooling_same_matches_tensorflow_printed_values():
    """tf.nn.avg_pool(1..25 as 5x5, ksize 5, stride 1, 'SAME'), as printed in
    apache/mxnet issue #10194: the first row starts 7, 7.5, 8, 8.5."""
    x = np.arange(1.0, 26.0).reshape(1, 5, 5, 1)
    y = AveragePooling2D(5, strides=1, padding="same").forward(x)
    assert y[0, 0, :4, 0].tolist() == [7.0, 7.5, 8.0, 8.5]


@pytest.mark.parametrize("pool,strides,padding,shape", [
    ((2, 2), None, "valid", (2, 4, 4, 3)), ((3, 3), (2, 2), "same", (2, 5, 5, 2)),
    ((2, 3), (1, 2), "same", (1, 4, 7, 1)), ((3, 2), (2, 1), "valid", (2, 7, 5, 2)),
    (1, 1, "valid", (1, 3, 2, 2)), ((4, 4), (3, 3), "same", (1, 5, 6, 1))])
def test_average_pooling_matches_naive_loops(pool, strides, padding, shape, f64):
    x = np.random.default_rng(0).standard_normal(shape)
    layer = AveragePooling2D(pool, strides=strides, padding=padding)
    y = layer.forward(x)
    assert_close(y, naive_avg_pool(x, layer.pool_size, layer.strides, padding))
    assert layer.compute_output_shape((None, *shape[1:])) == (None, *y.shape[1:])


def test_global_pooling_matches_naive_loops(f64):
    x = np.random.default_rng(1).standard_normal((3, 4, 5, 2))
    assert_close(GlobalAveragePooling2D().forward(x), naive_global(x, np.mean))
    assert_close(GlobalMaxPooling2D().forward(x), naive_global(x, max))
    assert GlobalMaxPooling2D().compute_output_shape((None, 4, 5, 2)) == (None, 2)


def test_global_max_pooling_sends_dy_to_the_first_winner():
    x = np.zeros((1, 2, 2, 1))
    x[0, 0, 1, 0] = x[0, 1, 0, 0] = 1.0
    layer = GlobalMaxPooling2D()
    layer.forward(x, training=True)
    dx = layer.backward(np.array([[5.0]]))
    assert dx[..., 0].tolist() == [[[0.0, 5.0], [0.0, 0.0]]]


@pytest.mark.parametrize("padding,pads", [
    (1, ((1, 1), (1, 1))), ((2, 0), ((2, 2), (0, 0))), (((0, 1), (2, 3)), ((0, 1), (2, 3)))])
def test_zero_padding_and_cropping_match_naive_loops(padding, pads, f64):
    x = np.random.default_rng(2).standard_normal((2, 6, 7, 2))
    layer = ZeroPadding2D(padding)
    assert layer.padding == pads
    y = layer.forward(x)
    assert_close(y, naive_zero_pad(x, pads))
    assert layer.compute_output_shape((None, 6, 7, 2)) == (None, *y.shape[1:])
    crop = Cropping2D(padding)
    assert_close(crop.forward(x), naive_crop(x, pads))
    assert_close(Cropping2D(padding).forward(y), x)  # cropping undoes the padding


def test_reshape_with_minus_one(f64):
    x = np.arange(24.0).reshape(2, 3, 4)
    layer = Reshape((-1, 2))
    assert layer.compute_output_shape((None, 3, 4)) == (None, 6, 2)
    y = layer.forward(x)
    assert y.shape == (2, 6, 2) and y[1, 0, 0] == 12.0 and y[0, 5, 1] == 11.0
    assert Reshape((2, 2, 3)).compute_output_shape((None, 12)) == (None, 2, 2, 3)


def test_advanced_activations_match_naive_loops(f64):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 4, 2))
    flat = x.reshape(-1)
    leaky = LeakyReLU().forward(x).reshape(-1)
    assert_close(leaky, [v if v > 0 else 0.3 * v for v in flat])
    elu = ELU(alpha=0.5).forward(x).reshape(-1)
    assert_close(elu, [v if v > 0 else 0.5 * (math.exp(v) - 1) for v in flat])
    for shared in (None, 1, [1, 2], (3,)):
        layer = PReLU(alpha_initializer=lambda s, r: r.uniform(-1, 1, s), shared_axes=shared)
        y = layer.forward(x)
        alpha = layer.params["alpha"]
        expected_shape = [1 if a in np.atleast_1d(shared if shared is not None else []) else d
                          for a, d in enumerate(x.shape) if a > 0]
        assert list(alpha.shape) == expected_shape
        assert_close(y, naive_prelu(x, alpha))


def test_prelu_starts_as_relu_and_its_alpha_trains():
    layer = PReLU()
    x = np.array([[-2.0, 3.0]], dtype=np.float32)
    assert layer.forward(x, training=True).tolist() == [[0.0, 3.0]]
    layer.backward(np.ones((1, 2), dtype=np.float32))
    assert layer.grads["alpha"].tolist() == [-2.0, 0.0]
    assert layer.trained_params() == ["alpha"]


# ---------------------------------------------------------------- gradient checks
def random_input(rng, shape):
    return rng.standard_normal(shape) * rng.choice([0.1, 1.0, 3.0])


def image(rng, low=1):
    return (int(rng.integers(1, 4)), int(rng.integers(low, 7)), int(rng.integers(low, 7)),
            int(rng.integers(1, 4)))


def random_avg_pool(rng):
    ph, pw = (int(p) for p in rng.integers(1, 4, 2))
    strides = None if rng.integers(2) else tuple(int(s) for s in rng.integers(1, 4, 2))
    layer = AveragePooling2D((ph, pw), strides=strides,
                             padding=str(rng.choice(["valid", "same"])))
    shape = (2, int(rng.integers(ph, 7)), int(rng.integers(pw, 7)), int(rng.integers(1, 3)))
    return layer, random_input(rng, shape)


def random_prelu(rng):
    shape = image(rng) if rng.integers(2) else (int(rng.integers(1, 4)), int(rng.integers(1, 6)))
    axes = [a for a in range(1, len(shape)) if rng.integers(2)]
    return (PReLU(alpha_initializer=lambda s, r: r.uniform(-1, 1, s), shared_axes=axes or None),
            random_input(rng, shape))


def random_padding(rng):
    return tuple(tuple(int(v) for v in rng.integers(0, 3, 2)) for _ in range(2))


def random_crop(rng):
    pads = random_padding(rng)
    shape = (int(rng.integers(1, 3)), sum(pads[0]) + int(rng.integers(1, 4)),
             sum(pads[1]) + int(rng.integers(1, 4)), int(rng.integers(1, 3)))
    return Cropping2D(pads), random_input(rng, shape)


def random_reshape(rng):
    shape = image(rng)
    size = math.prod(shape[1:])
    target = (size // shape[3], -1) if rng.integers(2) else (-1,)
    return Reshape(target), random_input(rng, shape)


RANDOM_LAYERS = {
    "leaky_relu": lambda rng: (LeakyReLU(float(rng.uniform(0, 1))), random_input(rng, image(rng))),
    "elu": lambda rng: (ELU(float(rng.uniform(0.1, 2))), random_input(rng, image(rng))),
    "prelu": random_prelu,
    "average_pooling": random_avg_pool,
    "global_average": lambda rng: (GlobalAveragePooling2D(), random_input(rng, image(rng))),
    "global_max": lambda rng: (GlobalMaxPooling2D(), random_input(rng, image(rng))),
    "zero_padding": lambda rng: (ZeroPadding2D(random_padding(rng)), random_input(rng, image(rng))),
    "cropping": random_crop,
    "reshape": random_reshape,
    **{f"activation-{name}": activation_sweep(name) for name in NEW_ACTIVATIONS},
}


@pytest.mark.parametrize("kind", list(RANDOM_LAYERS))
def test_gradients_pass_for_every_seed(kind, f64):
    worst = 0.0
    for seed in SEEDS:
        minicnn.set_seed(seed)
        layer, x = RANDOM_LAYERS[kind](np.random.default_rng(seed))
        result = check_layer(layer, x)
        assert result.passed, f"seed {seed}: {layer.describe()} on {x.shape}: {result}"
        assert result.max_error < MARGIN, f"seed {seed}: too close: {result}"
        worst = max(worst, result.max_error)
    print(f"{kind}: worst error over {len(SEEDS)} seeds {worst:.1e}")


@pytest.mark.parametrize("kind", ["prelu", "average_pooling", "elu"])
def test_a_wrong_backward_fails(kind, f64):
    """The sweep can fail: dx 1% off is caught on every seed."""
    for seed in range(10):
        layer, x = RANDOM_LAYERS[kind](np.random.default_rng(seed))
        right = layer._backward
        layer._backward = lambda grad: right(grad) * 1.01
        assert check_layer(layer, x).verdict == "FAILED", f"seed {seed}"


# ---------------------------------------------------------------- every backend
def all_layers():
    return [LeakyReLU(0.2), ELU(), Activation("hard_sigmoid"), Activation("selu"), PReLU(alpha_initializer="random_uniform", shared_axes=[1, 2]),
            AveragePooling2D(3, 2, "same"), ZeroPadding2D(((1, 0), (0, 2))), Cropping2D(1),
            Activation("gelu"), GlobalMaxPooling2D(), Reshape((3, -1)), Reshape((-1,)),
            Dense(6, activation="selu"), Reshape((2, 3)), Flatten()]


def test_every_backend_matches_numpy(backend):
    x = np.random.default_rng(4).standard_normal((2, 6, 5, 3)).astype(np.float32)

    def run():
        minicnn.set_seed(0)
        layers = all_layers()
        h = minicnn.to_device(x)
        for layer in layers:
            h = layer.run_forward(h, training=True)
            assert h.dtype == np.float32, f"{layer.describe()} gives y as {h.dtype}"
        g = minicnn.to_device(np.ones(h.shape, dtype=np.float32))
        for layer in reversed(layers):
            g = layer.run_backward(g)
            assert g.dtype == np.float32, f"{layer.describe()} gives dx as {g.dtype}"
        return minicnn.to_host(h), minicnn.to_host(g), minicnn.to_host(layers[4].grads["alpha"])

    got = run()
    minicnn.set_backend("numpy")
    for a, b in zip(got, run()):
        assert_close(a, b)


# ---------------------------------------------------------------- models and files
def small_model():
    return Sequential([
        ZeroPadding2D(1, input_shape=(6, 6, 2)), Conv2D(3, 3, kernel_initializer="he_uniform"),
        PReLU(shared_axes=[1, 2]), AveragePooling2D(2, padding="same"), ELU(),
        Cropping2D(((0, 1), (1, 0))), LeakyReLU(), GlobalAveragePooling2D(),
        Reshape((3, 1)), Reshape((-1,)), Dense(4, activation="softplus",
                                                kernel_initializer="lecun_normal"),
        Activation("hard_sigmoid"), Dense(2, activation="softmax",
                                           kernel_initializer="orthogonal")])


def test_model_trains_and_round_trips_its_weights(tmp_path):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((16, 6, 6, 2)).astype(np.float32)
    labels = (x.mean(axis=(1, 2, 3)) > 0).astype(np.int64)
    model = small_model()
    model.compile(optimizer=SGD(lr=0.5), loss="sparse_categorical_crossentropy")
    alpha = minicnn.to_host(model.layers[2].params["alpha"]).copy()
    history = model.fit(x, labels, batch_size=8, epochs=3, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert not np.array_equal(minicnn.to_host(model.layers[2].params["alpha"]), alpha)
    path = tmp_path / "w.npz"
    model.save_weights(path)
    other = small_model()
    other.load_weights(path)
    np.testing.assert_array_equal(other.predict(x), model.predict(x))


def test_configs_record_the_arguments():
    assert LeakyReLU(0.1).config() == {"alpha": 0.1}
    assert ELU().config() == {"alpha": 1.0}
    assert PReLU(shared_axes=2).config() == {"shared_axes": [2]}
    assert AveragePooling2D(3).config() == {"pool_size": (3, 3), "strides": (3, 3),
                                            "padding": "valid"}
    assert ZeroPadding2D((1, 2)).config() == {"padding": ((1, 1), (2, 2))}
    assert Cropping2D(1).config() == {"cropping": ((1, 1), (1, 1))}
    assert Reshape((2, -1)).config() == {"target_shape": (2, -1)}
    assert GlobalMaxPooling2D().config() == {}


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize("make,pattern", [
    (lambda: LeakyReLU(-0.1), r"LeakyReLU: alpha must be a finite number >= 0, got -0.1"),
    (lambda: LeakyReLU("0.3"), r"LeakyReLU: alpha must be"),
    (lambda: ELU(0), r"ELU: alpha must be a finite number > 0, got 0"),
    (lambda: ELU(float("nan")), r"ELU: alpha must be"),
    (lambda: activations.Elu(-1.0), r"elu: alpha must be a finite number > 0, got -1.0"),
    (lambda: PReLU(shared_axes=[0]), r"PReLU: shared_axes must be .* >= 1 \(axis 0 is the batch\)"),
    (lambda: PReLU(shared_axes=[3]).maybe_build((None, 4, 4)), r"PReLU: shared_axes \[3\] name axis 3"),
    (lambda: PReLU(alpha_regularizer=0.01), r"PReLU alpha_regularizer: could not interpret "
                                             r"regularizer 0.01"),
    (lambda: ZeroPadding2D(-1), r"ZeroPadding2D: padding must be an int >= 0, a pair"),
    (lambda: ZeroPadding2D((1, 2, 3)), r"ZeroPadding2D: padding must be .* got \(1, 2, 3\)"),
    (lambda: ZeroPadding2D(((1, 2), 3)), r"ZeroPadding2D: padding must be"),
    (lambda: Cropping2D(((1, 2), (0, -1))), r"Cropping2D: cropping must be"),
    (lambda: Cropping2D(2).maybe_build((None, 4, 9, 1)), r"Cropping2D: cropping \(\(2, 2\), \(2, 2\)\) leaves nothing of an input of 4x9"),
    (lambda: Reshape((5, 5)).maybe_build((None, 4, 6)), r"Reshape: cannot reshape a sample of shape \(4, 6\) \(24 values\) to \(5, 5\) \(25 values\)"),
    (lambda: Reshape((-1, 5)).maybe_build((None, 24)), r"Reshape: .*\(24 values\) to \(-1, 5\): 24 is not a multiple of 5"),
    (lambda: Reshape((-1, -1)), r"Reshape: target_shape must be positive ints with at most one -1"),
    (lambda: Reshape((0, 3)), r"Reshape: target_shape must be"),
    (lambda: Reshape(3), r"Reshape: target_shape must be a tuple"),
    (lambda: AveragePooling2D(2, padding="full"), r"AveragePooling2D: unknown padding 'full'"),
    (lambda: AveragePooling2D(5).maybe_build((None, 4, 4, 1)), r"AveragePooling2D: pool \(5, 5\) .* does not fit an input of 4x4"),
    (lambda: GlobalAveragePooling2D().maybe_build((None, 4)), r"GlobalAveragePooling2D: expected input of rank 4"),
    (lambda: GlobalMaxPooling2D(data_format="channels_first"), r"GlobalMaxPooling2D: data_format must be 'channels_last'"),
    (lambda: initializers.Constant("a"), r"Constant: value must be a finite number"),
    (lambda: initializers.RandomNormal(stddev=0), r"RandomNormal: stddev must be a finite number > 0"),
    (lambda: initializers.RandomUniform(1, 0), r"RandomUniform: minval 1 must not exceed maxval 0"),
    (lambda: initializers.VarianceScaling(mode="fan_mean"), r"VarianceScaling: mode must be one of fan_in, fan_out, fan_avg"),
    (lambda: initializers.VarianceScaling(distribution="gamma"), r"VarianceScaling: distribution must be"),
    (lambda: initializers.Orthogonal()((3,), np.random.default_rng(0)), r"Orthogonal: needs a shape of rank 2"),
    (lambda: initializers.RandomNormal(seed=1.5), r"RandomNormal: seed must be an int"),
])
def test_clear_errors(make, pattern):
    with pytest.raises(ValueError, match=pattern):
        make()


def test_backward_without_a_cache_is_named():
    for layer in (AveragePooling2D(2), GlobalMaxPooling2D(), GlobalAveragePooling2D(), PReLU()):
        x = np.ones((1, 4, 4, 1), dtype=np.float32)
        layer.forward(x, training=False)
        with pytest.raises(RuntimeError, match="backward needs a forward with training=True"):
            layer.backward(np.ones(layer.output_shape[1:], dtype=np.float32)[None])


# ---------------------------------------------------------------- initializers
RNG_SHAPE = (3, 3, 40, 60)  # fan_in 360, fan_out 540


@pytest.mark.parametrize("name,variance,uniform", [
    ("he_uniform", 2 / 360, True), ("lecun_uniform", 1 / 360, True),
    ("glorot_uniform", 2 / 900, True), ("he_normal", 2 / 360, False),
    ("lecun_normal", 1 / 360, False), ("glorot_normal", 2 / 900, False)])
def test_variance_scaling_names(name, variance, uniform):
    w = initializers.get(name)(RNG_SHAPE, np.random.default_rng(0))
    assert w.shape == RNG_SHAPE
    assert w.var() == pytest.approx(variance, rel=0.03)
    if uniform:
        assert np.abs(w).max() <= math.sqrt(3 * variance)
        assert np.abs(w).max() > 0.99 * math.sqrt(3 * variance)
    else:  # truncated at 2 of the pre-truncation std
        assert np.abs(w).max() <= 2 * math.sqrt(variance) / 0.87962566103423978


def test_simple_initializers():
    rng = np.random.default_rng(0)
    assert (initializers.Constant(0.7)((2, 3), rng) == 0.7).all()
    assert (initializers.get("one")((2,), rng) == 1).all()
    w = initializers.RandomNormal(mean=1.0, stddev=0.5)((200, 100), rng)
    assert w.mean() == pytest.approx(1.0, abs=0.01) and w.std() == pytest.approx(0.5, rel=0.02)
    w = initializers.RandomUniform(2.0, 3.0)((200, 100), rng)
    assert 2.0 <= w.min() < 2.01 and 2.99 < w.max() <= 3.0
    w = initializers.TruncatedNormal(stddev=0.1)((200, 100), rng)
    assert np.abs(w).max() <= 0.2 and w.std() == pytest.approx(0.1 * 0.8796, rel=0.02)
    assert initializers.get("random_normal")((200, 100), rng).std() == pytest.approx(0.05, rel=0.02)


@pytest.mark.parametrize("shape", [(5, 8), (8, 5), (3, 3, 2, 4)])
def test_orthogonal(shape):
    w = initializers.Orthogonal(gain=2.0)(shape, np.random.default_rng(0))
    q = w.reshape(-1, shape[-1])
    gram = q.T @ q if q.shape[0] >= q.shape[1] else q @ q.T
    assert_close(gram, 4 * np.eye(min(q.shape)))


def test_seeded_initializers_repeat_and_layers_take_them():
    a = initializers.RandomUniform(seed=3)((4, 4), np.random.default_rng(0))
    b = initializers.RandomUniform(seed=3)((4, 4), np.random.default_rng(1))
    np.testing.assert_array_equal(a, b)
    layer = Dense(3, kernel_initializer=initializers.Constant(0.25), bias_initializer="ones")
    layer.maybe_build((None, 2))
    assert (minicnn.to_host(layer.params["kernel"]) == 0.25).all()
