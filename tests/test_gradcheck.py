"""The gradient checker itself (minicnn.gradcheck): no false failures, no missed
bugs, and kinks named instead of failed.

* Correct layers pass, far below the tolerance, over 50 random seeds each:
  Conv2D (random kernel, strides, padding, bias, activation), Dense with every
  activation, MaxPooling2D (random pool, strides, padding), Dropout, Flatten,
  and the Activation layer for every activation; so do every loss (through
  check_loss) and tiny models with each loss (through check_model).
* Wrong backward passes fail: off by 1% (dx, or the kernel gradient), or wrong
  in a single entry, over the same seeds; also at a kink.
* At a kink (a max-pool tie, ReLU at 0) a correct layer is "inconclusive",
  with the kink named, and never a plain FAILED.

Nothing here may depend on the CPU: the same run must pass with any BLAS
kernel (OPENBLAS_CORETYPE=Sandybridge, ...) and any thread count. ``-s`` prints
the margins: the worst error of the correct layers and the smallest error of
the wrong ones.
"""
from __future__ import annotations

import numpy as np
import pytest

import minicnn
from minicnn import activations, losses
from minicnn.gradcheck import (DEFAULT_TOLERANCE, STEP, check_layer, check_loss, check_model,
                               step_size)
from minicnn.layers import Activation, Conv2D, Dense, Dropout, Flatten, MaxPooling2D
from minicnn.models import Sequential
from minicnn.utils import to_categorical

SEEDS = range(50)  # correct layers and losses
FEWER_SEEDS = range(20)  # wrong layers and kinks: each seed's failures are evident
ACTIVATIONS = sorted(activations.ACTIVATIONS)  # every activation minicnn has
MARGIN = DEFAULT_TOLERANCE / 10  # correct layers must stay this far below the tolerance


@pytest.fixture(autouse=True)
def f64():
    """float64 for everything built inside the test (set before any layer exists)."""
    minicnn.set_floatx("float64")
    yield
    minicnn.set_floatx("float32")


def uniform_bias(shape, rng):
    return rng.uniform(-0.5, 0.5, shape)  # nonzero, so the bias moves the activation


def random_input(rng, shape):
    """Standard normal, scaled by 0.1, 1 or 3: small, moderate and saturating inputs."""
    return rng.standard_normal(shape) * rng.choice([0.1, 1.0, 3.0])


# ---------------------------------------------------------------- random layers
def conv_config(rng, choices=ACTIVATIONS + [None], fewest_filters=1):
    """Random Conv2D arguments and an input shape that fits them."""
    kh, kw = (int(k) for k in rng.integers(1, 4, 2))
    config = dict(filters=int(rng.integers(fewest_filters, 4)), kernel_size=(kh, kw),
                  strides=tuple(int(s) for s in rng.integers(1, 4, 2)),
                  padding=str(rng.choice(["valid", "same"])), use_bias=bool(rng.integers(2)),
                  activation=rng.choice(choices), bias_initializer=uniform_bias)
    return config, (2, int(rng.integers(kh, 7)), int(rng.integers(kw, 7)), int(rng.integers(1, 4)))


def dense_config(rng, activation, fewest_units=1):
    config = dict(units=int(rng.integers(fewest_units, 6)), activation=activation,
                  use_bias=bool(rng.integers(2)), bias_initializer=uniform_bias)
    return config, (int(rng.integers(1, 5)), int(rng.integers(1, 7)))


def random_conv(rng):
    config, shape = conv_config(rng)
    return Conv2D(**config), random_input(rng, shape)


def random_dense(activation):
    def make(rng):
        config, shape = dense_config(rng, activation)
        return Dense(**config), random_input(rng, shape)
    return make


def random_pool(rng):
    ph, pw = (int(p) for p in rng.integers(1, 4, 2))
    strides = None if rng.integers(2) else tuple(int(s) for s in rng.integers(1, 4, 2))
    layer = MaxPooling2D((ph, pw), strides=strides, padding=str(rng.choice(["valid", "same"])))
    shape = (2, int(rng.integers(ph, 7)), int(rng.integers(pw, 7)), int(rng.integers(1, 3)))
    return layer, random_input(rng, shape)


def random_dropout(rng):
    layer = Dropout(float(rng.uniform(0.1, 0.7)), seed=int(rng.integers(2**31)))
    return layer, random_input(rng, (int(rng.integers(1, 4)), 3, 4, 2))


def random_flatten(rng):
    return Flatten(), random_input(rng, (int(rng.integers(1, 4)), 3, 2, int(rng.integers(1, 4))))


def random_activation(name):
    def make(rng):
        shape = (3, int(rng.integers(1, 6))) if rng.integers(2) else (2, 3, 2, 3)
        return Activation(name), random_input(rng, shape)
    return make


RANDOM_LAYERS = {"conv2d": random_conv, "maxpool": random_pool, "dropout": random_dropout,
                 "flatten": random_flatten,
                 **{f"dense-{a}": random_dense(a) for a in ACTIVATIONS + [None]},
                 **{f"activation-{a}": random_activation(a) for a in ACTIVATIONS}}


def sweep(make, check=check_layer, seeds=SEEDS):
    """check(*make(rng)) for every seed; yields (seed, what was checked, result)."""
    for seed in seeds:
        minicnn.set_seed(seed)  # the layers' initial weights
        rng = np.random.default_rng(seed)
        layer, x = make(rng)
        yield seed, f"{layer.describe()} on x of shape {x.shape}", check(layer, x)


@pytest.mark.parametrize("kind", list(RANDOM_LAYERS))
def test_correct_layers_pass_for_every_seed(kind):
    worst = 0.0
    for seed, what, result in sweep(RANDOM_LAYERS[kind]):
        assert result.passed, f"seed {seed}: {what}: {result}"
        assert result.max_error < MARGIN, f"seed {seed}: {what}: too close: {result}"
        worst = max(worst, result.max_error)
    print(f"{kind}: worst error over {len(SEEDS)} seeds {worst:.1e}")


def test_dropout_sweep_drops_something():
    """The Dropout seeds above are only meaningful if masks really zero entries."""
    dropped = 0
    for seed in SEEDS:
        layer, x = random_dropout(np.random.default_rng(seed))
        dropped += int((minicnn.to_host(layer.forward(minicnn.to_device(x), True)) == 0).sum())
    assert dropped > 100


# ---------------------------------------------------------------- losses
def probabilities(rng, shape):
    """Rows of probabilities, none below ~1e-3: the truncation error of a central
    difference of log p grows like (h/p)², so much smaller ones need a smaller eps."""
    z = rng.standard_normal(shape)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def loss_targets(name, rng, n, k):
    """(y_pred, y_true) where the loss ``name`` is defined: probabilities for the
    cross-entropies and KL divergence, positive values for the logarithmic ones,
    +-1 targets for the hinges, a target away from 0 for the percentage error."""
    labels = rng.integers(0, k, n)
    if name == "sparse_categorical_crossentropy":
        return probabilities(rng, (n, k)), labels
    if name in ("categorical_crossentropy", "categorical_hinge"):
        return probabilities(rng, (n, k)), to_categorical(labels, k, dtype="float64")
    if name in ("kullback_leibler_divergence", "kld", "KLD"):
        return probabilities(rng, (n, k)), probabilities(rng, (n, k))
    if name == "binary_crossentropy":
        return rng.uniform(0.05, 0.95, (n, k)), rng.uniform(0, 1, (n, k)).round(rng.integers(2))
    if name in ("mean_squared_logarithmic_error", "msle", "MSLE", "poisson"):
        return rng.uniform(0.1, 3, (n, k)), rng.uniform(0, 3, (n, k))
    if name in ("hinge", "squared_hinge"):
        return rng.standard_normal((n, k)), rng.choice([-1.0, 1.0], (n, k))
    if name in ("mean_absolute_percentage_error", "mape", "MAPE"):
        return rng.standard_normal((n, k)), rng.choice([-1.0, 1.0], (n, k)) * rng.uniform(0.5, 2, (n, k))
    return rng.standard_normal((n, k)), rng.standard_normal((n, k))


def random_loss_case(name):
    """(loss, y_pred, y_true) for every loss minicnn has, fused ones included."""
    def make(rng):
        n, k = int(rng.integers(1, 6)), int(rng.integers(2, 6))
        labels = rng.integers(0, k, n)
        if name == "softmax_crossentropy":
            soft = probabilities(rng, (n, k)) if rng.integers(2) else to_categorical(labels, k)
            return losses.SoftmaxCrossEntropy(), rng.standard_normal((n, k)) * 2, soft
        if name == "softmax_crossentropy_sparse":
            return losses.SoftmaxCrossEntropy(sparse=True), rng.standard_normal((n, k)) * 2, labels
        if name == "sigmoid_crossentropy":
            return (losses.SigmoidCrossEntropy(), rng.standard_normal((n, k)) * 3,
                    rng.uniform(0, 1, (n, k)).round(rng.integers(2)))
        return (losses.get(name), *loss_targets(name, rng, n, k))
    return make


LOSS_NAMES = sorted(losses.LOSSES) + ["softmax_crossentropy", "softmax_crossentropy_sparse",
                                      "sigmoid_crossentropy"]


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_every_loss_passes_for_every_seed(name):
    worst = 0.0
    make = random_loss_case(name)
    for seed in SEEDS:
        loss, y_pred, y_true = make(np.random.default_rng(seed))
        result = check_loss(loss, y_pred, y_true)
        assert result.passed, f"seed {seed}: {name}: {result}"
        assert result.max_error < MARGIN, f"seed {seed}: {name}: too close: {result}"
        assert set(result.errors) == {"y_pred"}
        worst = max(worst, result.max_error)
    print(f"loss {name}: worst error over {len(SEEDS)} seeds {worst:.1e}")


# What each loss's model ends in: the fused pairs (softmax + categorical, sigmoid +
# binary cross-entropy), a softplus for the losses of positive values.
HEADS = {"categorical_crossentropy": "softmax", "sparse_categorical_crossentropy": "softmax",
         "kullback_leibler_divergence": "softmax", "binary_crossentropy": "sigmoid",
         "mean_squared_error": "tanh", "mean_squared_logarithmic_error": "softplus",
         "poisson": "softplus"}
MODEL_LOSSES = sorted({cls.name for cls in losses.LOSSES.values()})


def tiny_model(loss, rng):
    """A model that ends in what the loss expects, compiled with it."""
    model = Sequential([Dense(int(rng.integers(2, 5)), activation=rng.choice(["tanh", "sigmoid"]),
                              input_shape=(4,), bias_initializer=uniform_bias),
                        Dense(3, activation=HEADS.get(loss, "linear"),
                              bias_initializer=uniform_bias)])
    model.compile(optimizer="sgd", loss=loss)
    return model


@pytest.mark.parametrize("loss", MODEL_LOSSES)
def test_tiny_models_pass_with_every_loss(loss):
    worst = 0.0
    for seed in range(20):
        minicnn.set_seed(seed)
        rng = np.random.default_rng(seed)
        model = tiny_model(loss, rng)
        y = loss_targets(loss, rng, 4, 3)[1]
        result = check_model(model, rng.standard_normal((4, 4)), y, max_entries=None)
        assert result.passed, f"seed {seed}: {loss}: {result}"
        assert result.max_error < MARGIN, f"seed {seed}: {loss}: too close: {result}"
        worst = max(worst, result.max_error)
    print(f"model with {loss}: worst error over 20 seeds {worst:.1e}")


def test_small_cnns_pass_for_every_seed():
    """Conv2D + ReLU + MaxPooling2D + Dropout + Dense through the fused loss: kinks are
    everywhere in such a model, yet random inputs almost surely sit on none."""
    worst = 0.0
    for seed in range(10):
        minicnn.set_seed(seed)
        rng = np.random.default_rng(seed)
        model = Sequential([Conv2D(3, 3, padding="same", activation="relu", input_shape=(6, 6, 2),
                                   bias_initializer=uniform_bias),
                            MaxPooling2D(2), Dropout(0.3), Flatten(),
                            Dense(3, activation="softmax")])
        model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
        result = check_model(model, rng.standard_normal((3, 6, 6, 2)), rng.integers(0, 3, 3),
                             max_entries=10, seed=seed)
        assert result.passed, f"seed {seed}: {result}"
        worst = max(worst, result.max_error)
    assert worst < MARGIN
    print(f"small CNN: worst error over 10 seeds {worst:.1e}")


# ---------------------------------------------------------------- wrong backward passes
class DxOff:
    """dx 1% too large: the kind of slip a hand-derived formula makes."""

    def backward(self, grad, **kwargs):
        return super().backward(grad, **kwargs) * 1.01


class KernelOff:
    """The kernel gradient 1% too large; dx right."""

    def backward(self, grad, **kwargs):
        dx = super().backward(grad, **kwargs)
        self.grads["kernel"] = self.grads["kernel"] * 1.01
        return dx


class OneEntryOff:
    """One entry of the kernel gradient off by 1% of the largest one; all others right."""

    def backward(self, grad, **kwargs):
        dx = super().backward(grad, **kwargs)
        kernel = self.grads["kernel"].copy()
        kernel[(0,) * kernel.ndim] += 0.01 * abs(kernel).max()
        self.grads["kernel"] = kernel
        return dx


class DxOffDense(DxOff, Dense):
    pass


class DxOffConv2D(DxOff, Conv2D):
    pass


class KernelOffDense(KernelOff, Dense):
    pass


class KernelOffConv2D(KernelOff, Conv2D):
    pass


class OneEntryOffConv2D(OneEntryOff, Conv2D):
    pass


# Smooth activations and at least two units: no seed may give a gradient that is
# zero everywhere (all ReLUs off, a softmax over one unit), which no error can show in.
SMOOTH = ["linear", "sigmoid", "softmax", "tanh", None]


def wrong_dense(cls):
    def make(rng):
        config, shape = dense_config(rng, rng.choice(SMOOTH), fewest_units=2)
        return cls(**config), random_input(rng, shape)
    return make


def wrong_conv(cls):
    def make(rng):
        config, shape = conv_config(rng, SMOOTH, fewest_filters=2)
        return cls(**config), random_input(rng, shape)
    return make


WRONG = {  # (layer maker, the tensor that is wrong, where exactly, if one entry)
    "dense-dx-1%": (wrong_dense(DxOffDense), "x", None),
    "conv2d-dx-1%": (wrong_conv(DxOffConv2D), "x", None),
    "dense-kernel-1%": (wrong_dense(KernelOffDense), "kernel", None),
    "conv2d-kernel-1%": (wrong_conv(KernelOffConv2D), "kernel", None),
    "conv2d-one-kernel-entry": (wrong_conv(OneEntryOffConv2D), "kernel", "kernel[0, 0, 0, 0]"),
}


@pytest.mark.parametrize("kind", list(WRONG))
def test_wrong_backward_fails_for_every_seed(kind):
    make, bad, entry = WRONG[kind]
    smallest = np.inf
    for seed, what, result in sweep(make, seeds=FEWER_SEEDS):
        assert result.verdict == "FAILED", f"seed {seed}: {what}: {result}"
        assert result.max_error > 100 * DEFAULT_TOLERANCE, f"seed {seed}: {what}: {result}"
        assert result.where.startswith(entry or bad), f"seed {seed}: {what}: {result}"
        # the tensors that are right still pass: the check points at the culprit
        assert all(error <= MARGIN for name, error in result.errors.items() if name != bad), \
            f"seed {seed}: {what}: {result}"
        smallest = min(smallest, result.max_error)
    print(f"{kind}: smallest error over {len(FEWER_SEEDS)} seeds {smallest:.1e}")


def test_one_wrong_entry_is_named_exactly():
    minicnn.set_seed(0)
    x = np.random.default_rng(0).standard_normal((2, 5, 5, 2))
    result = check_layer(OneEntryOffConv2D(3, 3), x)
    assert result.verdict == "FAILED"
    assert result.where.startswith("kernel[0, 0, 0, 0] (analytic "), str(result)
    assert str(result).startswith("gradient check FAILED: worst relative error ")
    assert result.errors["x"] < MARGIN and result.errors["bias"] < MARGIN


class DoubledMaxPooling2D(MaxPooling2D):
    def backward(self, grad, **kwargs):
        return super().backward(grad, **kwargs) * 2


def test_wrong_backward_on_a_kink_still_fails():
    """A tie does not excuse a gradient its jump cannot explain: twice the winner's
    share is no one-sided slope of the pool."""
    result = check_layer(DoubledMaxPooling2D(2), np.zeros((1, 4, 4, 2)))
    assert result.verdict == "FAILED", str(result)
    assert result.max_error > 100 * DEFAULT_TOLERANCE


def test_wrong_backward_beside_a_kink_still_fails():
    """One input of a ReLU layer at 0 and dx 1% off: the kink is named, but the entries
    away from it make the verdict FAILED."""
    x = np.random.default_rng(3).standard_normal((3, 4))
    x[1, 2] = 0.0
    layer = DxOffDense(4, activation="relu", use_bias=False)
    result = check_layer(layer, x)
    assert result.verdict == "FAILED", str(result)
    assert result.where.startswith("x["), str(result)


def test_a_wrong_layer_in_a_model_fails_even_beside_kinks():
    """Sample 0 is all zero, so with the zero initial bias its hidden ReLUs all sit at 0:
    the hidden biases are on kinks. The head's dx is 1% off; the hidden kernel, which
    no nudge moves across a kink (sample 0 multiplies it by 0), shows it."""
    model = Sequential([Dense(3, activation="relu", input_shape=(4,), name="hidden"),
                        DxOffDense(2, activation="softmax", name="head")])
    model.compile(optimizer="sgd", loss="categorical_crossentropy")
    x = np.random.default_rng(0).standard_normal((3, 4))
    x[0] = 0.0
    result = check_model(model, x, to_categorical([0, 1, 1], 2, dtype="float64"),
                         max_entries=None)
    assert result.verdict == "FAILED", str(result)
    assert result.where.startswith("hidden/kernel"), str(result)


# ---------------------------------------------------------------- kinks
def test_max_pool_tie_is_inconclusive_and_named():
    result = check_layer(MaxPooling2D(2), np.zeros((2, 4, 4, 3)))
    assert result.verdict == "inconclusive" and result.passed is False, str(result)
    assert "FAILED" not in str(result)
    text = str(result)
    assert text.startswith("gradient check inconclusive: x[") and "sits on a max-pool tie" in text
    assert "the gradient is not defined there: perturb the input" in text
    assert result.kinks and all(kink.what == "a max-pool tie" for kink in result.kinks)
    kink = result.kinks[0]
    assert {kink.left_slope, kink.right_slope} >= {0.0}  # one side: the input loses the window
    assert kink.where.startswith("x[")


def test_relu_at_zero_in_an_activation_layer_is_named():
    x = np.random.default_rng(0).standard_normal((3, 4))
    x[1, 2] = 0.0
    result = check_layer(Activation("relu"), x)
    assert result.verdict == "inconclusive", str(result)
    assert [kink.where for kink in result.kinks] == ["x[1, 2]"]
    assert "x[1, 2] sits on a ReLU at 0" in str(result)
    assert "1 of the 12 entries checked sits on kinks, the others agree" in str(result)


@pytest.mark.parametrize("layer_factory,shape", [
    (lambda: Dense(3, activation="relu"), (2, 4)),
    (lambda: Conv2D(2, 3, activation="relu"), (2, 4, 4, 1)),
], ids=["dense", "conv2d"])
def test_relu_at_zero_in_a_layer_is_named(layer_factory, shape):
    """All-zero input and zero bias: every pre-activation sits at 0."""
    result = check_layer(layer_factory(), np.zeros(shape))
    assert result.verdict == "inconclusive", str(result)
    assert "sits on a ReLU at 0" in str(result)


def test_a_kink_in_a_model_is_named():
    model = Sequential([Dense(3, activation="relu", input_shape=(4,), name="hidden"),
                        Dense(2, activation="softmax", name="head")])
    model.compile(optimizer="sgd", loss="categorical_crossentropy")
    result = check_model(model, np.zeros((3, 4)), to_categorical([0, 1, 1], 2, dtype="float64"),
                         max_entries=None)
    assert result.verdict == "inconclusive", str(result)
    assert all(kink.where.startswith("hidden/bias[") for kink in result.kinks), str(result)
    assert "sits on a ReLU at 0" in str(result)


def quantized(rng, shape):
    """Inputs in {-1, 0, 1}: ties and zeros everywhere."""
    return rng.integers(-1, 2, shape).astype(np.float64)


KINKY = {
    "maxpool": lambda rng: (random_pool(rng)[0], quantized(rng, (2, 5, 5, 2))),
    "activation-relu": lambda rng: (Activation("relu"), quantized(rng, (3, 5))),
    "dense-relu": lambda rng: (Dense(3, activation="relu", use_bias=bool(rng.integers(2))),
                               np.zeros((2, 4))),
    "conv2d-relu": lambda rng: (Conv2D(2, int(rng.integers(1, 4)), activation="relu",
                                       padding=str(rng.choice(["valid", "same"]))),
                                quantized(rng, (2, 4, 4, 2)) * (rng.integers(2))),
}


@pytest.mark.parametrize("kind", list(KINKY))
def test_a_correct_layer_on_kinks_is_never_failed(kind):
    verdicts = set()
    for seed, what, result in sweep(KINKY[kind], seeds=FEWER_SEEDS):
        assert result.verdict != "FAILED", f"seed {seed}: {what}: {result}"
        verdicts.add(result.verdict)
    assert "inconclusive" in verdicts  # the inputs did hit kinks


# ---------------------------------------------------------------- the step and the API
def test_the_step_follows_the_array_scale():
    assert step_size(np.zeros(3)) == STEP
    assert step_size(np.full(3, 0.5)) == STEP
    assert step_size(np.full(3, -200.0)) == pytest.approx(200 * STEP)
    assert step_size(np.ones(3), eps=1e-4) == 1e-4


def test_an_explicit_eps_is_honoured():
    x = np.random.default_rng(0).standard_normal((3, 4))
    coarse = check_layer(Activation("tanh"), x, eps=1e-2)  # O(h²) truncation shows
    fine = check_layer(Activation("tanh"), x)
    assert coarse.max_error > 100 * fine.max_error
    assert fine.passed, str(fine)


@pytest.mark.parametrize("eps", [0, -1e-6, float("nan"), "1e-6", True])
def test_a_bad_eps_is_refused(eps):
    with pytest.raises(ValueError, match=r"check_layer\(Dense\): eps must be a positive number, "
                                         r"or None to choose the step from each array's scale, "
                                         r"got "):
        check_layer(Dense(2), np.ones((2, 3)), eps=eps)


def test_check_loss_refuses_float32_predictions():
    with pytest.raises(ValueError, match=r"check_loss\(mean_squared_error\): gradient checks "
                                         r"need float64 arrays, but y_pred is float32"):
        check_loss(losses.MeanSquaredError(), np.ones((2, 3), np.float32), np.ones((2, 3)))


def test_a_passing_result_reads_as_before():
    result = check_layer(Dense(2), np.random.default_rng(0).standard_normal((3, 4)))
    text = str(result)
    assert result.verdict == "passed" and result.kinks == [] and result.entries == 12 + 8 + 2
    assert text.startswith(f"gradient check passed: worst relative error {result.max_error:.2e} "
                           f"at {result.where} (tolerance 1e-05; x: ")
    assert text.endswith(f"bias: {result.errors['bias']:.2e})")
