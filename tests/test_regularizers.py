"""Keras 2.2.4's regularizers: the penalty and its gradient, how layers take them, the
penalty in the reported loss, float64 gradient checks of models with each kind, and
the shortcuts of the plan that an activity regularizer turns off."""
from __future__ import annotations

import numpy as np
import pytest

import minicnn
from minicnn import initializers, regularizers
from minicnn.gradcheck import DEFAULT_TOLERANCE, check_model
from minicnn.layers import (BatchNormalization, Conv2D, Dense, Flatten, Layer, MaxPooling2D,
                            PReLU)
from minicnn.models import Sequential
from minicnn.optimizers import SGD
from minicnn.utils import to_categorical

from conftest import assert_close

RANDOM_BIAS = initializers.RandomUniform(-0.5, 0.5)  # no weight sits on the kink of |w| at 0


def penalty_reference(x, l1, l2):
    flat = np.asarray(x, dtype=np.float64).ravel().tolist()
    return sum(l1 * abs(v) + l2 * v * v for v in flat)


# ---------------------------------------------------------------- the regularizers
def test_value_and_gradient_against_a_loop(backend):
    x = np.array([[1.5, -2.0, 0.0], [0.25, 3.0, -0.5]])
    for reg, l1, l2 in ((regularizers.l1(), 0.01, 0.0), (regularizers.l2(), 0.0, 0.01),
                        (regularizers.l1_l2(), 0.01, 0.01), (regularizers.L1L2(0.3, 0.2), 0.3, 0.2),
                        (regularizers.L1L2(), 0.0, 0.0)):
        xd = minicnn.to_device(x, dtype="float64")
        assert_close(float(reg(xd)), penalty_reference(x, l1, l2))
        grad = minicnn.to_host(reg.gradient(xd))
        expected = [[l1 * (v > 0) - l1 * (v < 0) + 2 * l2 * v for v in row] for row in x.tolist()]
        assert_close(grad, np.array(expected))


def test_get_and_serialize_as_keras():
    assert regularizers.get(None) is None
    assert regularizers.get("l2").get_config() == {"l1": 0.0, "l2": 0.01}
    assert regularizers.get("l1_l2").get_config() == {"l1": 0.01, "l2": 0.01}
    assert regularizers.get("L1L2").get_config() == {"l1": 0.0, "l2": 0.0}
    reg = regularizers.L1L2(l1=0.5)
    assert regularizers.get(reg) is reg
    config = regularizers.serialize(reg)
    assert config == {"class_name": "L1L2", "config": {"l1": 0.5, "l2": 0.0}}
    assert regularizers.get(config).get_config() == reg.get_config()
    assert regularizers.get({"class_name": "l2", "config": {"l": 0.1}}).l2 == 0.1
    assert regularizers.serialize(None) is None


@pytest.mark.parametrize("make,pattern", [
    (lambda: regularizers.get("l3"), r"unknown regularizer 'l3': expected one of l1, l2"),
    (lambda: regularizers.get(0.01), r"could not interpret regularizer 0.01"),
    (lambda: regularizers.get({"class_name": "L1L2"}), r"a regularizer config must be"),
    (lambda: regularizers.get({"class_name": "L1L2", "config": {"l3": 1}}),
     r"bad config for L1L2"),
    (lambda: regularizers.get(lambda w: (w ** 2).sum()), r"has no gradient; a custom penalty"),
    (lambda: regularizers.L1L2(l1=-0.1), r"L1L2: l1 must be a finite number >= 0, got -0.1"),
    (lambda: regularizers.l2(float("nan")), r"L1L2: l2 must be a finite number"),
    (lambda: Dense(2, kernel_regularizer="l5"), r"Dense kernel_regularizer: unknown regularizer"),
    (lambda: Conv2D(2, 3, activity_regularizer=[0.1]), r"Conv2D activity_regularizer: could not"),
])
def test_bad_values_are_refused_by_name(make, pattern):
    with pytest.raises(ValueError, match=pattern):
        make()


def test_configs_record_the_regularizers():
    """get_config has them as Keras serializes them, and from_config reads them back; the
    architecture a weights file records (config) leaves them out."""
    dense = Dense(2, kernel_regularizer="l2", activity_regularizer=regularizers.l1(0.5))
    config = dense.get_config()
    assert config["kernel_regularizer"] == {"class_name": "L1L2",
                                            "config": {"l1": 0.0, "l2": 0.01}}
    assert config["bias_regularizer"] is None
    assert config["activity_regularizer"]["config"] == {"l1": 0.5, "l2": 0.0}
    again = Dense.from_config(config)
    assert again.kernel_regularizer.get_config() == {"l1": 0.0, "l2": 0.01}
    assert again.activity_regularizer.get_config() == {"l1": 0.5, "l2": 0.0}
    assert "kernel_regularizer" not in dense.config()
    assert Conv2D(2, 3, bias_regularizer="l1").get_config()["bias_regularizer"]["config"] == \
        {"l1": 0.01, "l2": 0.0}
    bn = BatchNormalization(gamma_regularizer="l2").get_config()
    assert bn["gamma_regularizer"]["config"]["l2"] == 0.01 and bn["beta_regularizer"] is None
    assert PReLU(alpha_regularizer="l1").get_config()["alpha_regularizer"]["config"]["l1"] == 0.01


def test_a_saved_model_keeps_its_regularizers(tmp_path):
    from minicnn.models import load_model
    model = Sequential([Dense(3, input_shape=(4,), kernel_regularizer=regularizers.l1_l2(0.1, 0.2),
                              activity_regularizer="l2")])
    model.compile(SGD(), "mse", metrics=["mae"])
    model.save(tmp_path / "m.npz")
    loaded = load_model(tmp_path / "m.npz")
    assert loaded.layers[0].kernel_regularizer.get_config() == {"l1": 0.1, "l2": 0.2}
    assert loaded.layers[0].activity_regularizer.get_config() == {"l1": 0.0, "l2": 0.01}
    assert loaded.metrics_names == ["loss", "mean_absolute_error"]
    x, y = np.ones((2, 4)), np.zeros((2, 3))
    assert_close(loaded.evaluate(x, y), model.evaluate(x, y))


# ---------------------------------------------------------------- in the loss
def dense_data(n=6, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 4)), to_categorical(rng.integers(0, 3, n), 3)


def test_weight_penalties_are_part_of_the_reported_loss(backend):
    x, y = dense_data()
    minicnn.set_seed(3)
    model = Sequential([Dense(5, activation="tanh", input_shape=(4,),
                              kernel_regularizer=regularizers.l1_l2(0.02, 0.03),
                              bias_regularizer="l2", bias_initializer=RANDOM_BIAS),
                        Dense(3, activation="softmax")])
    model.compile(SGD(lr=0.0), "categorical_crossentropy")
    p = model.predict(x).astype(np.float64)
    data_loss = np.mean(-np.log(p[y > 0]))
    kernel, bias = model.layers[0].get_weights()
    penalty = penalty_reference(kernel, 0.02, 0.03) + penalty_reference(bias, 0, 0.01)
    assert_close(model.evaluate(x, y, batch_size=4), data_loss + penalty, rtol=1e-5)
    assert_close(model.test_on_batch(x, y), data_loss + penalty, rtol=1e-5)
    # lr = 0 leaves the weights alone: the epoch's training loss is the same number
    history = model.fit(x, y, batch_size=6, epochs=1, verbose=0)
    assert_close(history.history["loss"][0], data_loss + penalty, rtol=1e-5)


def test_activity_penalty_is_summed_over_the_batch_as_in_keras_2_2_4(backend):
    """Keras 2.2.4 adds R(output) of the whole batch, not divided by its size; fit and
    evaluate average the batch losses, weighted by the batch sizes."""
    x, y = dense_data(8)
    model = Sequential([Dense(5, activation="relu", input_shape=(4,),
                              activity_regularizer=regularizers.L1L2(0.1, 0.05)),
                        Dense(3, activation="softmax")])
    model.compile(SGD(), "categorical_crossentropy")
    p = model.predict(x).astype(np.float64)
    kernel, bias = model.layers[0].get_weights()
    hidden = np.maximum(x @ kernel + bias, 0)  # the output after the activation
    data_loss = -np.log(p[y > 0])
    batches = [np.mean(data_loss[s]) + penalty_reference(hidden[s], 0.1, 0.05)
               for s in (slice(0, 4), slice(4, 8))]
    assert_close(model.evaluate(x, y, batch_size=4), np.mean(batches), rtol=1e-5)


# ---------------------------------------------------------------- gradients
def assert_model_passes(model, x, y):
    result = check_model(model, x, y, max_entries=None)
    assert result.passed, str(result)
    assert result.max_error < DEFAULT_TOLERANCE / 10, str(result)


@pytest.mark.parametrize("kind", ["kernel", "bias", "activity", "all"])
def test_dense_regularizers_pass_the_gradient_check(kind):
    minicnn.set_floatx("float64")
    for seed in range(5):
        minicnn.set_seed(seed)
        x, y = dense_data(5, seed)
        chosen = {"kernel_regularizer": regularizers.l1_l2(0.05, 0.1),
                  "bias_regularizer": regularizers.l1_l2(0.2, 0.3),
                  "activity_regularizer": regularizers.l1_l2(0.01, 0.02)}
        if kind != "all":
            chosen = {f"{kind}_regularizer": chosen[f"{kind}_regularizer"]}
        model = Sequential([Dense(4, activation="tanh", input_shape=(4,),
                                  bias_initializer=RANDOM_BIAS, **chosen),
                            Dense(3, activation="softmax", bias_initializer=RANDOM_BIAS,
                                  **chosen)])
        model.compile(SGD(), "categorical_crossentropy")
        assert_model_passes(model, x, y)


def test_conv_regularizers_pass_the_gradient_check():
    """An activity regularizer on a Conv2D with ReLU before max-pooling: the ReLU stays
    with its layer (the penalty reads relu(z)), and the gradients still check out."""
    minicnn.set_floatx("float64")
    for seed in range(3):
        minicnn.set_seed(seed)
        rng = np.random.default_rng(seed)
        model = Sequential([
            Conv2D(3, 3, activation="relu", input_shape=(6, 6, 2), bias_initializer=RANDOM_BIAS,
                   kernel_regularizer="l2", bias_regularizer=regularizers.l1(0.1),
                   activity_regularizer=regularizers.l1_l2(0.01, 0.01)),
            MaxPooling2D(2), Flatten(),
            Dense(3, activation="softmax", activity_regularizer=regularizers.l2(0.1))])
        model.compile(SGD(), "categorical_crossentropy")
        assert model.relu_moves() == frozenset()
        assert model.loss_function() is model.loss  # no softmax folded into the loss
        assert_model_passes(model, rng.standard_normal((3, 6, 6, 2)),
                            to_categorical(rng.integers(0, 3, 3), 3))


def test_batchnorm_prelu_and_custom_layer_regularizers_pass_the_gradient_check():
    class Scale(Layer):
        """y = x * s with a regularized weight s, through add_weight(regularizer=...)."""

        def build(self, input_shape):
            self.add_weight("s", (input_shape[-1],), initializer=RANDOM_BIAS,
                            regularizer=regularizers.l1_l2(0.1, 0.2))
            super().build(input_shape)

        def forward(self, x, training=False):
            self.x = x
            return x * self.params["s"]

        def backward(self, dy):
            self.grads["s"] = (dy * self.x).sum(axis=0)
            return dy * self.params["s"]

    minicnn.set_floatx("float64")
    for seed in range(3):
        minicnn.set_seed(seed)
        x, y = dense_data(6, seed)
        model = Sequential([
            Dense(4, input_shape=(4,), use_bias=False),  # (BN cancels a bias: gradient 0)
            BatchNormalization(gamma_regularizer=regularizers.l2(0.3),
                               beta_regularizer=regularizers.l1(0.2),
                               beta_initializer=RANDOM_BIAS),
            PReLU(alpha_initializer=RANDOM_BIAS, alpha_regularizer=regularizers.l1_l2(0.1, 0.1)),
            Scale(),
            Dense(3, activation="softmax")])
        model.compile(SGD(), "categorical_crossentropy")
        assert set(model.layers[3].regularizers) == {"s"}
        assert_model_passes(model, x, y)


def test_a_penalty_changes_a_training_step_by_its_gradient():
    """One SGD step with lr: the regularized kernel moves by an extra -lr * dR/dW."""
    x, y = dense_data()
    steps = []
    for reg in (None, regularizers.l2(0.5)):
        minicnn.set_seed(0)
        model = Sequential([Dense(3, activation="softmax", input_shape=(4,),
                                  kernel_regularizer=reg)])
        model.compile(SGD(lr=0.1), "categorical_crossentropy")
        before = model.layers[0].get_weights()[0]
        model.train_on_batch(x, y)
        steps.append(model.layers[0].get_weights()[0] - before)
    assert_close(steps[1] - steps[0], -0.1 * 2 * 0.5 * before, rtol=1e-4)


def test_activity_regularizer_keeps_the_batch_whole_at_inference():
    """Inference on the host runs large batches in slices; the activity penalty of the
    batch must be the penalty of all of it."""
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((70, 4)), to_categorical(rng.integers(0, 3, 70), 3)
    model = Sequential([Dense(5, activation="tanh", input_shape=(4,),
                              activity_regularizer=regularizers.l1(0.01)),
                        Dense(3, activation="softmax")])
    model.compile(SGD(), "categorical_crossentropy")
    kernel, bias = model.layers[0].get_weights()
    p = model.predict(x).astype(np.float64)
    expected = np.mean(-np.log(p[y > 0])) + 0.01 * np.abs(np.tanh(x @ kernel + bias)).sum()
    assert_close(model.evaluate(x, y, batch_size=70), expected, rtol=1e-5)


def test_weights_load_across_models_with_and_without_regularizers(tmp_path):
    """A regularizer shapes training, not the architecture a weights file records."""
    def build(reg):
        minicnn.set_seed(0 if reg else 1)
        model = Sequential([Dense(3, input_shape=(4,), kernel_regularizer=reg,
                                  activity_regularizer=reg)])
        model.compile(SGD(), "mse")
        return model

    trained = build(regularizers.l2(0.1))
    trained.save_weights(tmp_path / "w.npz")
    plain = build(None)
    plain.load_weights(tmp_path / "w.npz")
    for a, b in zip(trained.get_weights(), plain.get_weights()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="another architecture"):
        Sequential([Dense(2, input_shape=(4,))]).load_weights(tmp_path / "w.npz")


class Clipped(regularizers.Regularizer):
    """A penalty of the user's own with an argument: R(w) = c * sum w^4, dR/dw = 4 c w^3."""

    def __init__(self, c=0.5):
        self.c = c

    def __call__(self, x):
        return self.c * (x ** 4).sum()

    def gradient(self, x):
        return 4 * self.c * x ** 3

    def get_config(self):
        return {"c": self.c}


def test_a_custom_regularizer_saves_and_loads_through_custom_objects(tmp_path):
    model = Sequential([Dense(3, input_shape=(4,), kernel_regularizer=Clipped(0.25),
                              bias_regularizer="l2", activity_regularizer=Clipped(0.125))])
    model.compile(SGD(lr=0.1), "mse")
    x, y = dense_data(6)
    model.fit(x, y, batch_size=3, epochs=1, verbose=0)
    model.save(tmp_path / "m.npz")
    with pytest.raises(ValueError, match=r"unknown regularizer 'Clipped'.*custom_objects="
                                         r"\{'Clipped': Clipped\}"):
        minicnn.models.load_model(tmp_path / "m.npz")
    loaded = minicnn.models.load_model(tmp_path / "m.npz", custom_objects={"Clipped": Clipped})
    dense = loaded.layers[0]
    assert isinstance(dense.kernel_regularizer, Clipped) and dense.kernel_regularizer.c == 0.25
    assert isinstance(dense.activity_regularizer, Clipped)
    assert dense.activity_regularizer.c == 0.125
    assert dense.bias_regularizer.get_config() == {"l1": 0.0, "l2": 0.01}
    assert_close(loaded.evaluate(x, y), model.evaluate(x, y))  # the penalties count again
    # a function from custom_objects that makes one works too, as in Keras
    again = minicnn.models.model_from_json(model.to_json(),
                                           custom_objects={"Clipped": lambda c: Clipped(2 * c)})
    assert again.layers[0].kernel_regularizer.c == 0.5
    with pytest.raises(ValueError, match=r"custom_objects\['Clipped'\] made a float"):
        minicnn.models.model_from_json(model.to_json(), custom_objects={"Clipped": lambda c: c})


def test_get_takes_custom_objects():
    made = regularizers.get({"class_name": "Clipped", "config": {"c": 3.0}}, "here",
                            custom_objects={"Clipped": Clipped})
    assert isinstance(made, Clipped) and made.c == 3.0
    assert isinstance(regularizers.get("Clipped", custom_objects={"Clipped": Clipped}), Clipped)
