"""BatchNormalization: forward against a loop reference (training and inference),
the moving statistics against a hand computation, gradient checks, the weight
bookkeeping (summary, save/load) and one update per training step."""
from __future__ import annotations

import numpy as np
import pytest

import minicnn
from minicnn import backend as mbackend
from minicnn.gradcheck import check_layer, check_model
from minicnn.layers import BatchNormalization, Dense, Flatten
from minicnn.models import Sequential

from conftest import assert_close


def reference(x, gamma, beta, mean=None, variance=None, eps=1e-3):
    """Loops over channels and samples (last axis the channel); batch statistics
    (biased variance) unless mean and variance are given. Returns y, mean, variance."""
    x = np.asarray(x, dtype=np.float64)
    flat = x.reshape(-1, x.shape[-1])
    channels = flat.shape[1]
    if mean is None:
        mean, variance = np.zeros(channels), np.zeros(channels)
        for c in range(channels):
            values = [float(v) for v in flat[:, c]]
            mean[c] = sum(values) / len(values)
            variance[c] = sum((v - mean[c]) ** 2 for v in values) / len(values)
    y = np.empty_like(flat)
    for i in range(flat.shape[0]):
        for c in range(channels):
            y[i, c] = gamma[c] * (flat[i, c] - mean[c]) / np.sqrt(variance[c] + eps) + beta[c]
    return y.reshape(x.shape), mean, variance


def randomized(layer, shape, rng):
    """Build ``layer`` for ``shape`` and give every weight a non-default value."""
    layer.maybe_build((None, *shape[1:]))
    c = shape[-1]
    layer.set_weights([rng.uniform(0.5, 2.0, c), rng.uniform(-1, 1, c),
                       rng.uniform(-1, 1, c), rng.uniform(0.5, 2.0, c)])
    return layer.get_weights()


@pytest.mark.parametrize("shape", [(8, 3), (4, 5, 3, 2)])
def test_forward_matches_reference(backend, shape):
    rng = np.random.default_rng(1)
    layer = BatchNormalization()
    gamma, beta, moving_mean, moving_variance = randomized(layer, shape, rng)
    x = (rng.standard_normal(shape) * 2 + 1).astype(np.float32)
    expected_train, _, _ = reference(x, gamma, beta)
    expected_infer, _, _ = reference(x, gamma, beta, moving_mean, moving_variance)
    infer = mbackend.to_host(layer.run_forward(mbackend.to_device(x), training=False))
    train = mbackend.to_host(layer.run_forward(mbackend.to_device(x), training=True))
    assert_close(train, expected_train)
    assert_close(infer, expected_infer)
    assert not np.allclose(train, infer, atol=1e-2)  # the two modes do differ here


def test_moving_statistics_over_two_steps(backend):
    """moving = momentum * moving + (1 - momentum) * batch statistic, with the variance
    scaled by m / (m - (1 + eps)) as Keras 2.2.4 does."""
    minicnn.set_floatx("float64")
    rng = np.random.default_rng(2)
    layer = BatchNormalization(momentum=0.9, epsilon=1e-2)
    batches = [rng.standard_normal((6, 4)) * 3 + 2 for _ in range(2)]
    mean, variance = np.zeros(4), np.ones(4)
    for x in batches:
        layer.run_forward(mbackend.to_device(x), training=True)
        m = x.shape[0]
        batch_mean = [sum(x[:, c]) / m for c in range(4)]
        batch_var = [sum((x[:, c] - batch_mean[c]) ** 2) / m for c in range(4)]
        mean = 0.9 * mean + 0.1 * np.array(batch_mean)
        variance = 0.9 * variance + 0.1 * np.array(batch_var) * m / (m - 1.01)
    assert_close(mbackend.to_host(layer.params["moving_mean"]), mean)
    assert_close(mbackend.to_host(layer.params["moving_variance"]), variance)
    layer.run_forward(mbackend.to_device(batches[0]), training=False)  # inference: no update
    assert_close(mbackend.to_host(layer.params["moving_mean"]), mean)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("shape,axis", [((6, 4), -1), ((5, 3), 1), ((3, 4, 5, 2), -1),
                                        ((2, 3, 3, 4), 3), ((3, 4, 5, 2), 1)])
def test_gradients_training_mode(shape, axis, seed):
    minicnn.set_floatx("float64")
    rng = np.random.default_rng(seed)
    layer = BatchNormalization(axis=axis)
    layer.maybe_build((None, *shape[1:]))
    channels = shape[axis]
    layer.params["gamma"][...] = rng.uniform(-2, 2, channels)
    layer.params["beta"][...] = rng.uniform(-1, 1, channels)
    x = rng.standard_normal(shape) * rng.choice([0.5, 1.0, 3.0]) + rng.uniform(-1, 1)
    result = check_layer(layer, x, seed=seed)
    assert result.verdict == "passed", result


@pytest.mark.parametrize("center,scale", [(False, True), (True, False), (False, False)])
def test_gradients_without_center_or_scale(center, scale):
    minicnn.set_floatx("float64")
    layer = BatchNormalization(center=center, scale=scale)
    x = np.random.default_rng(3).standard_normal((4, 3, 3, 2))
    result = check_layer(layer, x)
    assert result.verdict == "passed", result
    assert ("gamma" in layer.params) == scale and ("beta" in layer.params) == center


def test_gradients_inference_mode():
    """After an inference forward the statistics are constants: dx = gamma * dy / std."""
    minicnn.set_floatx("float64")
    rng = np.random.default_rng(4)
    layer = BatchNormalization()
    randomized(layer, (5, 3), rng)
    result = check_layer(layer, rng.standard_normal((5, 3)), training=False)
    assert result.verdict == "passed", result


def test_one_update_per_train_on_batch():
    minicnn.set_floatx("float64")
    rng = np.random.default_rng(5)
    model = Sequential([Dense(4, input_shape=(3,)), BatchNormalization(momentum=0.5),
                        Dense(2, activation="softmax")])
    model.compile("sgd", "categorical_crossentropy")
    x = rng.standard_normal((8, 3))
    y = np.eye(2)[rng.integers(0, 2, 8)]
    bn = model.layers[1]
    h = mbackend.to_host(model.layers[0].run_forward(x))  # the BN input, before the step
    model.train_on_batch(x, y)
    mean = 0.5 * 0 + 0.5 * h.mean(axis=0)
    assert_close(bn.params["moving_mean"], mean)
    assert_close(bn.params["moving_variance"], 0.5 + 0.5 * h.var(axis=0) * 8 / (8 - 1.001))
    before = bn.get_weights()
    model.predict(x)
    model.evaluate(x, y)
    for a, b in zip(before, bn.get_weights()):
        np.testing.assert_array_equal(a, b)  # inference never moves the statistics


def test_summary_counts_moving_statistics_as_non_trainable():
    model = Sequential([Flatten(input_shape=(4, 4, 3)), Dense(5), BatchNormalization()])
    lines = []
    model.summary(print_fn=lines.append)
    text = "\n".join(lines)
    assert "batch_normalization_1 (BatchNormalization)" in text
    assert f"Total params: {48 * 5 + 5 + 4 * 5:,}" in text
    assert "Non-trainable params: 10" in text
    bn = model.layers[-1]
    assert bn.count_params() == 20 and len(bn.non_trainable_weights) == 2
    assert bn.trained_params() == ["gamma", "beta"]


def test_save_load_round_trip_keeps_moving_statistics(tmp_path):
    rng = np.random.default_rng(6)
    model = Sequential([Dense(3, input_shape=(2,)), BatchNormalization()])
    model.compile("sgd", "mse")
    model.train_on_batch(rng.standard_normal((5, 2)), rng.standard_normal((5, 3)))
    model.save_weights(tmp_path / "w.npz")
    other = Sequential([Dense(3, input_shape=(2,)), BatchNormalization()])
    other.load_weights(tmp_path / "w.npz")
    for name in ("gamma", "beta", "moving_mean", "moving_variance"):
        np.testing.assert_array_equal(mbackend.to_host(other.layers[1].params[name]),
                                      mbackend.to_host(model.layers[1].params[name]))
    assert not np.allclose(mbackend.to_host(other.layers[1].params["moving_mean"]), 0)
    x = rng.standard_normal((4, 2))
    np.testing.assert_array_equal(other.predict(x), model.predict(x))


def test_clear_errors():
    with pytest.raises(ValueError, match="BatchNormalization gamma_regularizer: unknown "
                                         "regularizer 'l3'"):
        BatchNormalization(gamma_regularizer="l3")
    with pytest.raises(ValueError, match="momentum"):
        BatchNormalization(momentum=1.5)
    with pytest.raises(ValueError, match="axis"):
        BatchNormalization(axis=[1, 2])
    with pytest.raises(ValueError, match="axis=0 must name a non-batch axis"):
        BatchNormalization(axis=0).maybe_build((None, 3))
    with pytest.raises(ValueError, match="axis=2"):
        BatchNormalization(axis=2).maybe_build((None, 3))
    with pytest.raises(ValueError, match="at least 2 values per channel"):
        BatchNormalization().run_forward(np.ones((1, 3), np.float32), training=True)


def test_check_model_through_batchnorm():
    """check_model's many training-mode loss evaluations move the moving statistics,
    which a training forward never reads: the check still passes."""
    minicnn.set_floatx("float64")
    rng = np.random.default_rng(7)
    # No bias before the normalization: the mean takes it out, its gradient is exactly 0.
    model = Sequential([Flatten(input_shape=(3, 3, 2)), Dense(4, use_bias=False),
                        BatchNormalization(), Dense(3, activation="softmax")])
    model.compile("sgd", "categorical_crossentropy")
    x = rng.standard_normal((6, 3, 3, 2))
    y = np.eye(3)[rng.integers(0, 3, 6)]
    result = check_model(model, x, y)
    assert result.verdict == "passed", result
