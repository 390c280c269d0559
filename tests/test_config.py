"""Architectures as data, the Keras 2.2.4 way: every layer's get_config holds all its
constructor arguments under Keras's names as JSON data and from_config rebuilds it;
initializers and optimizers serialize to Keras's {"class_name", "config"} dicts; a
model goes to JSON (to_json) and back (model_from_json), custom layers through
custom_objects; the weights file still checks only what defines the weights."""
from __future__ import annotations

import json

import numpy as np
import pytest

import minicnn
from minicnn import activations, initializers, optimizers, serialization
from minicnn.layers import (ELU, Activation, AveragePooling2D, BatchNormalization, Conv2D,
                            Cropping2D, Dense, Dropout, Flatten, GlobalAveragePooling2D,
                            GlobalMaxPooling2D, Layer, LeakyReLU, MaxPooling2D, PReLU, Rescaling,
                            Reshape, ZeroPadding2D)
from minicnn.models import Sequential, model_from_json

BASE = {"name", "trainable", "dtype"}
BIAS_LAYER = {"activation", "use_bias", "kernel_initializer", "bias_initializer",
              "kernel_regularizer", "bias_regularizer", "activity_regularizer",
              "kernel_constraint", "bias_constraint"}
POOL = {"pool_size", "strides", "padding", "data_format"}

# One layer of every class, each argument away from its default where it has one, and
# the keys Keras 2.2.4's get_config writes for that class (keras/layers/*.py).
LAYERS = [
    (lambda: Conv2D(5, (3, 2), strides=(2, 1), padding="same", activation="tanh", use_bias=False,
                    kernel_initializer="he_normal",
                    bias_initializer=initializers.Constant(0.25), input_shape=(9, 8, 3),
                    name="conv", trainable=False),
     {"filters", "kernel_size", "strides", "padding", "data_format", "dilation_rate",
      "batch_input_shape"} | BIAS_LAYER),
    (lambda: Dense(7, activation="sigmoid", use_bias=True,
                   kernel_initializer=initializers.RandomNormal(0.1, 0.2, seed=5),
                   bias_initializer="ones", input_dim=6),
     {"units", "batch_input_shape"} | BIAS_LAYER),
    (lambda: Activation("selu"), {"activation"}),
    (lambda: LeakyReLU(0.05), {"alpha"}),
    (lambda: ELU(0.5), {"alpha"}),
    (lambda: PReLU(alpha_initializer=initializers.RandomUniform(0.1, 0.3, seed=2),
                   shared_axes=[1, 2]),
     {"alpha_initializer", "alpha_regularizer", "alpha_constraint", "shared_axes"}),
    (lambda: MaxPooling2D((3, 2), strides=(1, 2), padding="same"), POOL),
    (lambda: AveragePooling2D(3, strides=2, padding="same"), POOL),
    (lambda: GlobalAveragePooling2D(data_format="channels_last"), {"data_format"}),
    (lambda: GlobalMaxPooling2D(), {"data_format"}),
    (lambda: Dropout(0.4, seed=11), {"rate", "noise_shape", "seed"}),
    (lambda: Flatten(), {"data_format"}),
    (lambda: BatchNormalization(axis=2, momentum=0.8, epsilon=0.01, center=False, scale=True,
                                gamma_initializer=initializers.Constant(2.0),
                                moving_variance_initializer="zeros"),
     {"axis", "momentum", "epsilon", "center", "scale", "beta_initializer", "gamma_initializer",
      "moving_mean_initializer", "moving_variance_initializer", "beta_regularizer",
      "gamma_regularizer", "beta_constraint", "gamma_constraint"}),
    (lambda: ZeroPadding2D(((1, 2), (0, 3))), {"padding", "data_format"}),
    (lambda: Cropping2D((1, 2)), {"cropping", "data_format"}),
    (lambda: Reshape((4, -1)), {"target_shape"}),
    (lambda: Rescaling(1 / 9, offset=-0.5), {"scale", "offset"}),
]
INPUTS = {"Conv2D": (9, 8, 3), "Dense": (6,), "BatchNormalization": (4, 5, 3)}


def test_the_table_covers_every_built_in_layer():
    assert {make().kind for make, _ in LAYERS} == set(serialization.layer_classes())


def tuples_in(value) -> bool:
    if isinstance(value, tuple):
        return True
    if isinstance(value, dict):
        return any(tuples_in(v) for v in value.values())
    return isinstance(value, list) and any(tuples_in(v) for v in value)


@pytest.mark.parametrize("make, keys", LAYERS, ids=lambda v: "" if isinstance(v, set) else None)
def test_get_config_has_keras_keys_as_json_and_from_config_rebuilds_the_layer(make, keys):
    layer = make()
    config = layer.get_config()
    assert set(config) == BASE | keys
    assert config["dtype"] == minicnn.floatx()
    assert not tuples_in(config)
    assert json.loads(json.dumps(config)) == config  # plain JSON data
    again = type(layer).from_config(json.loads(json.dumps(config)))
    assert type(again) is type(layer)
    assert again.get_config() == config
    assert again.config() == layer.config() or again.config() == json.loads(
        json.dumps(layer.config()))


@pytest.mark.parametrize("make", [m for m, _ in LAYERS if m().kind in INPUTS],
                         ids=lambda m: m().kind)
def test_a_rebuilt_layer_draws_the_same_weights(make):
    """The initializers survive the round trip: built from the same seed, the same weights
    (the same computation in the same order, so exactly equal)."""
    layer = make()
    again = type(layer).from_config(layer.get_config())
    shape = (None, *INPUTS[layer.kind])
    minicnn.set_seed(4)
    layer.maybe_build(shape)
    minicnn.set_seed(4)
    again.maybe_build(shape)
    assert list(layer.params) == list(again.params)
    for a, b in zip(layer.get_weights(), again.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_conv2d_and_dense_config_values():
    conv = LAYERS[0][0]()
    config = conv.get_config()
    assert config["kernel_size"] == [3, 2] and config["strides"] == [2, 1]
    assert config["batch_input_shape"] == [None, 9, 8, 3]
    assert config["dilation_rate"] == [1, 1] and config["data_format"] == "channels_last"
    assert config["activation"] == "tanh" and config["trainable"] is False
    assert config["kernel_initializer"] == {  # what Keras writes for he_normal
        "class_name": "VarianceScaling",
        "config": {"scale": 2.0, "mode": "fan_in", "distribution": "normal", "seed": None}}
    assert config["bias_initializer"] == {"class_name": "Constant", "config": {"value": 0.25}}
    assert all(config[k] is None for k in ("kernel_regularizer", "bias_regularizer",
                                           "activity_regularizer", "kernel_constraint",
                                           "bias_constraint"))
    dense = Dense(3).get_config()
    assert dense["activation"] == "linear"
    assert dense["bias_initializer"] == {"class_name": "Zeros", "config": {}}
    assert PReLU().get_config()["shared_axes"] is None  # Keras's None for no shared axes


def test_an_activation_function_whose_name_loses_its_alpha_is_refused():
    layer = Dense(3, activation=activations.Elu(2.0))
    with pytest.raises(ValueError, match="elu with alpha=2.0 cannot be saved by name; use the "
                                         "layer LeakyReLU or ELU"):
        layer.get_config()
    assert Dense(3, activation=activations.Elu(1.0)).get_config()["activation"] == "elu"


# ------------------------------------------------------------ initializers
@pytest.mark.parametrize("name", sorted(initializers.INITIALIZERS))
def test_every_named_initializer_round_trips_through_its_keras_form(name):
    original = initializers.get(name)
    form = initializers.serialize(original)
    assert isinstance(form, dict) and set(form) == {"class_name", "config"}
    assert json.loads(json.dumps(form)) == form
    again = initializers.get(json.loads(json.dumps(form)))
    shape = (3, 3, 4, 5)
    np.testing.assert_array_equal(again(shape, np.random.default_rng(7)),
                                  original(shape, np.random.default_rng(7)))


def test_initializer_classes_keep_their_parameters():
    for init in (initializers.RandomNormal(0.5, 0.1, seed=3), initializers.Orthogonal(2.0, 1),
                 initializers.TruncatedNormal(stddev=0.3), initializers.Constant(-1.5),
                 initializers.RandomUniform(-2.0, 1.0, seed=9),
                 initializers.VarianceScaling(3.0, "fan_out", "uniform", 4)):
        form = initializers.serialize(init)
        assert form == {"class_name": type(init).__name__, "config": init.get_config()}
        again = initializers.deserialize(form)
        assert type(again) is type(init) and again.get_config() == init.get_config()
    assert initializers.serialize(initializers.glorot_uniform) == {
        "class_name": "VarianceScaling",
        "config": {"scale": 1.0, "mode": "fan_avg", "distribution": "uniform", "seed": None}}


def test_initializer_errors_and_custom_objects():
    with pytest.raises(ValueError, match=r"Dense kernel_initializer: unknown initializer class "
                                         r"'Spiky'.*custom_objects=\{'Spiky': Spiky\}"):
        Dense(2, kernel_initializer={"class_name": "Spiky", "config": {}})
    with pytest.raises(ValueError, match="RandomNormal does not take the config"):
        initializers.deserialize({"class_name": "RandomNormal", "config": {"sigma": 1}})
    with pytest.raises(ValueError, match="expected an initializer name or a dict"):
        initializers.deserialize(["RandomNormal"])
    with pytest.raises(ValueError, match="cannot name the initializer"):
        initializers.serialize(lambda shape, rng: np.zeros(shape))

    def halves(shape, rng):
        return np.full(shape, 0.5)
    assert initializers.serialize(halves) == "halves"
    assert initializers.deserialize("halves", {"halves": halves}) is halves


# ------------------------------------------------------------ optimizers
@pytest.mark.parametrize("optimizer", [
    optimizers.SGD(lr=0.2, momentum=0.9, nesterov=True, decay=0.01, clipnorm=1.0),
    optimizers.RMSprop(lr=0.01, rho=0.8), optimizers.Adagrad(epsilon=1e-5),
    optimizers.Adadelta(rho=0.9), optimizers.Adam(lr=0.003, amsgrad=True, clipvalue=0.5),
    optimizers.Adamax(beta_1=0.8), optimizers.Nadam(schedule_decay=0.005)],
    ids=lambda o: type(o).__name__)
def test_optimizers_round_trip_through_their_keras_form(optimizer):
    form = optimizers.serialize(optimizer)
    assert form == {"class_name": type(optimizer).__name__, "config": optimizer.get_config()}
    again = optimizers.get(json.loads(json.dumps(form)))
    assert type(again) is type(optimizer) and again.get_config() == optimizer.get_config()
    lower = optimizers.deserialize({"class_name": form["class_name"].lower(),
                                    "config": form["config"]})
    assert type(lower) is type(optimizer)  # Keras matches the class name without case


def test_optimizer_deserialize_errors():
    with pytest.raises(ValueError, match=r"unknown optimizer class 'LBFGS'.*custom_objects"):
        optimizers.deserialize({"class_name": "LBFGS", "config": {}})
    with pytest.raises(ValueError, match="SGD does not take the config"):
        optimizers.deserialize({"class_name": "SGD", "config": {"beta": 1}})
    with pytest.raises(ValueError, match="expected a dict"):
        optimizers.deserialize("sgd")


# ------------------------------------------------------------ models as JSON
def cnn() -> Sequential:
    return Sequential([Conv2D(4, 3, activation="relu", input_shape=(8, 8, 3),
                              kernel_initializer="he_uniform"),
                       BatchNormalization(), MaxPooling2D(), Dropout(0.25, seed=3), Flatten(),
                       Dense(5, activation="softmax")], name="small")


def test_to_json_has_keras_shape_and_model_from_json_rebuilds_the_model():
    model = cnn()
    document = json.loads(model.to_json())
    assert set(document) == {"class_name", "config", "keras_version", "backend"}
    assert document["class_name"] == "Sequential" and document["backend"] == "minicnn"
    assert document["keras_version"] == "2.2.4"
    assert document["config"]["name"] == "small"
    assert [entry["class_name"] for entry in document["config"]["layers"]] == [
        "Conv2D", "BatchNormalization", "MaxPooling2D", "Dropout", "Flatten", "Dense"]
    assert document["config"]["layers"][0]["config"] == model.layers[0].get_config()
    assert "build_input_shape" not in document["config"]  # the first layer records it
    again = model_from_json(model.to_json())
    assert again.to_json() == model.to_json()
    assert again.name == "small" and again.built and again.optimizer is None
    assert [layer.name for layer in again.layers] == [layer.name for layer in model.layers]
    again.set_weights(model.get_weights())
    x = np.random.default_rng(0).random((4, 8, 8, 3), dtype=np.float32)
    np.testing.assert_array_equal(again.predict(x), model.predict(x))  # same layers, same maths
    assert json.loads(model.to_json(indent=2)) == document


def test_a_model_built_by_build_records_its_input_shape():
    model = Sequential([Conv2D(2, 3), Flatten(), Dense(2)])
    assert "build_input_shape" not in model.get_config()
    model.build((None, 6, 6, 1))
    config = model.get_config()
    assert config["build_input_shape"] == [None, 6, 6, 1]
    again = Sequential.from_config(config)
    assert again.built and again.input_shape == (None, 6, 6, 1)
    assert again.count_params() == model.count_params()


def test_from_config_takes_keras_older_list_form():
    model = cnn()
    again = Sequential.from_config(model.get_config()["layers"])
    assert [layer.get_config() for layer in again.layers] == \
        [layer.get_config() for layer in model.layers]


def test_model_config_errors_name_the_problem():
    document = json.loads(cnn().to_json())
    document["config"]["layers"][2]["class_name"] = "MaxPool9D"
    with pytest.raises(ValueError, match=r"model_from_json: unknown layer class 'MaxPool9D'; if "
                                         r"it is your own layer, pass it as "
                                         r"custom_objects=\{'MaxPool9D': MaxPool9D\}"):
        model_from_json(json.dumps(document))
    with pytest.raises(ValueError, match="model_from_json: the text is not JSON"):
        model_from_json("{not json")
    with pytest.raises(ValueError, match="builds Sequential models only.*'Model'"):
        model_from_json(json.dumps({"class_name": "Model", "config": {}}))
    document = json.loads(cnn().to_json())
    document["config"]["layers"][0]["config"]["kernel_sise"] = 3
    with pytest.raises(ValueError, match="Conv2D cannot be made from its config: .*kernel_sise"):
        model_from_json(json.dumps(document))


class Scale(Layer):
    """y = x * gamma, with a constructor argument of its own (Keras's custom-layer style)."""

    def __init__(self, start: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.start = start

    def build(self, input_shape):
        self.add_weight("gamma", (input_shape[-1],), initializer=initializers.Constant(self.start))
        super().build(input_shape)

    def forward(self, x, training=False):
        self.x = x
        return x * self.params["gamma"]

    def backward(self, dy):
        self.grads["gamma"] = (dy * self.x).sum(axis=tuple(range(dy.ndim - 1)))
        return dy * self.params["gamma"]

    def get_config(self):
        return {**super().get_config(), "start": self.start}


class Cube(activations.ActivationFunction):
    name = "cube"

    def forward(self, z):
        self.z = z
        return z * z * z

    def backward(self, grad):
        return grad * 3 * self.z * self.z


def test_custom_layers_activations_and_initializers_come_from_custom_objects():
    def halves(shape, rng):
        return np.full(shape, 0.5)

    model = Sequential([Dense(4, input_shape=(3,), kernel_initializer=halves,
                              activation=Cube()), Scale(2.5)])
    text = model.to_json()
    layers = json.loads(text)["config"]["layers"]
    assert layers[1] == {"class_name": "Scale", "config": model.layers[1].get_config()}
    assert layers[0]["config"]["activation"] == "cube"
    assert layers[0]["config"]["kernel_initializer"] == "halves"
    with pytest.raises(ValueError, match=r"model_from_json: Dense: unknown activation 'cube'.*"
                                         r"custom_objects"):
        model_from_json(text)
    with pytest.raises(ValueError, match=r"model_from_json: Dense kernel_initializer: unknown "
                                         r"initializer 'halves'.*custom_objects"):
        model_from_json(text, custom_objects={"cube": Cube})
    with pytest.raises(ValueError, match=r"unknown layer class 'Scale'.*custom_objects"):
        model_from_json(text, custom_objects={"halves": halves, "cube": Cube})
    again = model_from_json(text, custom_objects={"Scale": Scale, "cube": Cube,
                                                  "halves": halves})
    assert again.to_json() == text
    assert again.layers[1].start == 2.5
    np.testing.assert_array_equal(again.layers[0].get_weights()[0], np.full((3, 4), 0.5))
    x = np.random.default_rng(1).random((2, 3), dtype=np.float32)
    np.testing.assert_array_equal(again.predict(x), model.predict(x))


# ------------------------------------------------------------ the weights file's check
def test_weight_files_check_only_what_defines_the_weights(tmp_path):
    """A new config key, or an argument that does not change what the weights mean (an
    initializer, trainable, the names), must not stop a weights file from loading."""
    model = cnn()
    path = tmp_path / "w.npz"
    model.save_weights(path)
    other = Sequential([Conv2D(4, 3, activation="relu", input_shape=(8, 8, 3),
                               kernel_initializer=initializers.Orthogonal(), trainable=False,
                               name="first"),
                        BatchNormalization(gamma_initializer="zeros"), MaxPooling2D(),
                        Dropout(0.25, seed=99), Flatten(), Dense(5, activation="softmax")])
    other.load_weights(path)
    for a, b in zip(other.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    different = Sequential([Conv2D(4, 3, activation="tanh", input_shape=(8, 8, 3)),
                            BatchNormalization(), MaxPooling2D(), Dropout(0.25), Flatten(),
                            Dense(5, activation="softmax")])
    with pytest.raises(ValueError, match="another architecture"):
        different.load_weights(path)
