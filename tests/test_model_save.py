"""The whole-model file: model.save writes one .npz (architecture, weights, compile
arguments, optimizer state), load_model reads it back so that training goes on exactly
as if the model had never been saved; damaged, foreign and HDF5 files are refused with
the file's name; ModelCheckpoint(save_weights_only=False) writes such files."""
from __future__ import annotations

import io
import json
import os
import warnings

import numpy as np
import pytest

import minicnn
from conftest import assert_close
from minicnn import optimizers
from minicnn.callbacks import ModelCheckpoint
from minicnn.layers import (BatchNormalization, Conv2D, Dense, Dropout, Flatten, Layer,
                            MaxPooling2D)
from minicnn.models import Sequential, load_model
from minicnn.serialization import WeightsFileError
from minicnn.utils import to_categorical


def cnn(optimizer="sgd") -> Sequential:
    model = Sequential([Conv2D(4, 3, activation="relu", input_shape=(6, 6, 2)),
                        BatchNormalization(), MaxPooling2D(), Flatten(), Dropout(0.3, seed=5),
                        Dense(3, activation="softmax")])
    model.compile(optimizer=optimizer, loss="categorical_crossentropy", metrics=["accuracy"])
    return model


def data(n=16, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 6, 6, 2), dtype=np.float32), to_categorical(np.arange(n) % 3, 3)


def host_state(optimizer) -> dict:
    state = optimizer.get_state()
    return {"iterations": state["iterations"],
            **{(slot, layer, name): minicnn.to_host(value) for slot in optimizer.slots
               for layer, weights in state[slot].items() for name, value in weights.items()}}


@pytest.mark.parametrize("make_optimizer", [
    lambda: optimizers.SGD(lr=0.05, momentum=0.9, nesterov=True, decay=0.01),
    lambda: optimizers.Adam(lr=0.01, amsgrad=True),
    lambda: optimizers.RMSprop(lr=0.005)], ids=["sgd", "adam", "rmsprop"])
def test_load_model_then_fit_goes_on_as_if_never_saved(make_optimizer, backend, tmp_path):
    x, y = data()
    minicnn.set_seed(1)
    straight = cnn(make_optimizer())
    straight.fit(x, y, batch_size=4, epochs=2, verbose=0, shuffle=False)
    minicnn.set_seed(1)
    first = cnn(make_optimizer())
    first.fit(x, y, batch_size=4, epochs=1, verbose=0, shuffle=False)
    path = tmp_path / "model.npz"
    first.save(path)
    minicnn.set_seed(77)  # other generators: the file must carry what the run needs
    loaded = load_model(path)
    assert loaded.optimizer is not first.optimizer
    assert loaded.optimizer.get_config() == first.optimizer.get_config()
    assert loaded.optimizer.iterations == first.optimizer.iterations == 4
    loaded.fit(x, y, batch_size=4, epochs=1, verbose=0, shuffle=False)
    assert loaded.optimizer.iterations == straight.optimizer.iterations == 8
    for a, b in zip(loaded.get_weights(), straight.get_weights()):
        assert_close(a, b)
    ours, theirs = host_state(loaded.optimizer), host_state(straight.optimizer)
    assert ours.keys() == theirs.keys() and len(ours) > 1
    for key in theirs:
        assert_close(ours[key], theirs[key], err_msg=str(key))


def test_a_loaded_model_is_the_saved_one(tmp_path):
    x, y = data()
    model = cnn(optimizers.Adam(lr=0.003, clipnorm=1.0))
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    model.save(tmp_path / "m.npz")
    loaded = load_model(tmp_path / "m.npz")
    assert loaded.to_json() == model.to_json()
    assert [layer.name for layer in loaded.layers] == [layer.name for layer in model.layers]
    assert loaded.loss.name == "categorical_crossentropy" and loaded.metrics == ["acc"]
    assert isinstance(loaded.optimizer, optimizers.Adam)
    assert loaded.optimizer.get_config() == model.optimizer.get_config()
    for a, b in zip(loaded.get_weights(), model.get_weights()):  # a file round trip: exact
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    assert loaded.evaluate(x, y) == model.evaluate(x, y)
    assert os.listdir(tmp_path) == ["m.npz"]  # no temporary file left behind


def test_the_file_holds_what_its_format_says(tmp_path):
    model = cnn(optimizers.SGD(lr=0.1, momentum=0.5))
    x, y = data()
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    model.save(tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz", allow_pickle=False) as stored:
        meta = json.loads(str(stored["__model__"]))
        keys = set(stored.files)
    assert meta["format"] == "minicnn-model" and meta["version"] == 1
    assert meta["backend"] == "minicnn" and meta["keras_version"] == "2.2.4"
    assert meta["model_config"] == json.loads(model.to_json())
    assert meta["input_shape"] == [6, 6, 2]
    assert meta["training_config"] == {
        "loss": "categorical_crossentropy", "metrics": ["acc"],
        "optimizer_config": {"class_name": "SGD", "config": model.optimizer.get_config()}}
    assert meta["optimizer_iterations"] == 2
    assert set(meta["rng"]) == {"dropout_1"}
    weights = {f"weights/{layer.name}/{p}" for layer in model.layers for p in layer.params}
    velocities = {f"optimizer/{layer.name}/{p}" for layer in model.layers
                  for p in layer.trained_params()}
    assert keys == {"__model__"} | weights | velocities


def test_without_the_optimizer_or_without_compiling(tmp_path):
    x, y = data()
    model = cnn()
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    model.save(tmp_path / "bare.npz", include_optimizer=False)
    with pytest.warns(UserWarning, match="holds no training configuration"):
        bare = load_model(tmp_path / "bare.npz")
    assert bare.optimizer is None and bare.loss is None
    np.testing.assert_array_equal(bare.predict(x), model.predict(x))
    model.save(tmp_path / "full.npz")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        uncompiled = load_model(tmp_path / "full.npz", compile=False)
    assert uncompiled.optimizer is None
    np.testing.assert_array_equal(uncompiled.predict(x), model.predict(x))
    never = Sequential([Dense(2, input_shape=(3,))])  # never compiled
    never.save(tmp_path / "never.npz")
    with pytest.warns(UserWarning, match="no training configuration"):
        assert load_model(tmp_path / "never.npz").count_params() == 8


def test_a_model_built_by_fit_is_rebuilt_at_its_input_shape(tmp_path):
    model = Sequential([Conv2D(2, 3, activation="relu"), Flatten(), Dense(3, activation="softmax")])
    model.compile("adam", "categorical_crossentropy")
    x, y = data(8)
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    model.save(tmp_path / "m.npz")
    loaded = load_model(tmp_path / "m.npz")
    assert loaded.input_shape == (None, 6, 6, 2)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))


def test_save_refusals_write_nothing(tmp_path):
    with pytest.raises(RuntimeError, match="save: the model is not built yet"):
        Sequential([Dense(2)]).save(tmp_path / "m.npz")
    model = cnn()
    for name in ("model.h5", "model.hdf5", "M.keras"):
        stem = name.split(".")[0]
        with pytest.raises(ValueError, match=rf"save: '.*{name}' names an HDF5 file.*"
                                             rf"use a name ending in \.npz, such as "
                                             rf"'{stem}\.npz'"):
            model.save(tmp_path / name)
    assert os.listdir(tmp_path) == []
    model.save(tmp_path / "m.npz")
    before = (tmp_path / "m.npz").read_bytes()
    model.layers[0].params["kernel"] += 1
    with pytest.raises(FileExistsError, match=r"save: .*m\.npz exists and overwrite=False"):
        model.save(tmp_path / "m.npz", overwrite=False)
    assert (tmp_path / "m.npz").read_bytes() == before
    model.save(tmp_path / "m.npz")  # overwrite=True, Keras's default
    assert (tmp_path / "m.npz").read_bytes() != before


def write_npz(path, **arrays) -> None:
    np.savez(path, **arrays)


def test_damaged_foreign_and_hdf5_files_are_refused_naming_the_file(tmp_path):
    model = cnn()
    good = tmp_path / "good.npz"
    model.save(good)
    with pytest.raises(ValueError, match=r"load_model: '.*m\.h5' names an HDF5 file.*\.npz"):
        load_model(tmp_path / "m.h5")
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(WeightsFileError, match=r"load_model: .*truncated\.npz is not a readable "
                                               r"minicnn model file"):
        load_model(truncated)
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(WeightsFileError, match=r"text\.npz is not a readable minicnn model"):
        load_model(tmp_path / "text.npz")
    write_npz(tmp_path / "plain.npz", a=np.zeros(3))
    with pytest.raises(WeightsFileError, match=r"plain\.npz is not a minicnn model file \(no "
                                               r"__model__ entry\)$"):
        load_model(tmp_path / "plain.npz")
    model.save_weights(tmp_path / "weights.npz")
    with pytest.raises(WeightsFileError, match=r"weights\.npz is not a minicnn model file.*a "
                                               r"weights file.*model\.load_weights"):
        load_model(tmp_path / "weights.npz")
    x, y = data(8)
    model.fit(x, y, batch_size=4, epochs=1, verbose=0, checkpoint=tmp_path / "run.npz")
    with pytest.raises(WeightsFileError, match=r"run\.npz is not a minicnn model file.*a "
                                               r"checkpoint.*resume=True"):
        load_model(tmp_path / "run.npz")
    # An object array needs pickle to read: refused, nothing from the file runs.
    write_npz(tmp_path / "pickled.npz", __model__=np.array([{"format": "minicnn-model"}],
                                                           dtype=object))
    with pytest.raises(WeightsFileError, match=r"pickled\.npz is not a readable minicnn model "
                                               r"file.*allow_pickle"):
        load_model(tmp_path / "pickled.npz")
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        load_model(tmp_path / "missing.npz")


def altered(tmp_path, good, change) -> str:
    """A copy of the model file ``good`` with its metadata passed through ``change``."""
    with np.load(good, allow_pickle=False) as stored:
        arrays = {key: stored[key] for key in stored.files}
    meta = json.loads(str(arrays["__model__"]))
    change(meta, arrays)
    arrays["__model__"] = np.array(json.dumps(meta) if isinstance(meta, dict) else meta)
    path = tmp_path / "altered.npz"
    np.savez(path, **arrays)
    return str(path)


@pytest.mark.parametrize("change, pattern", [
    (lambda m, a: m.update(version=2), r"has format 'minicnn-model' version 2; this minicnn "
                                       r"reads 'minicnn-model' version 1"),
    (lambda m, a: m.pop("layer_names"), r"has damaged metadata \(__model__ lacks layer_names\)"),
    (lambda m, a: m.update(model_config=[]), r"damaged metadata \(model_config is not"),
    (lambda m, a: m["training_config"].pop("loss"), r"__model__ training_config lacks loss"),
    (lambda m, a: a.pop("weights/dense_1/kernel"), r"Dense 'dense_1' kernel expects shape "
                                                   r"\(16, 3\), .*altered\.npz holds nothing"),
    (lambda m, a: a.update({"optimizer/dense_1/kernel": np.zeros((2, 2))}),
     r"altered\.npz holds an optimizer buffer optimizer/dense_1/kernel of shape \(2, 2\) "
     r"that fits no parameter"),
    (lambda m, a: m["model_config"]["config"]["layers"][0].update(class_name="Conv9D"),
     r"load_model: unknown layer class 'Conv9D'.*custom_objects.*\(in .*altered\.npz\)"),
    (lambda m, a: m["training_config"].update(loss="hinges"),
     r"load_model: .*altered\.npz: the saved compile arguments do not work here: unknown "
     r"loss 'hinges'.*custom_objects"),
], ids=["version", "fields", "model_config", "training_config", "weight", "optimizer",
        "layer", "loss"])
def test_damaged_metadata_is_named(tmp_path, change, pattern):
    model = cnn(optimizers.SGD(momentum=0.9))
    x, y = data(8)
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    good = tmp_path / "good.npz"
    model.save(good)
    with pytest.raises(ValueError, match=pattern):
        load_model(altered(tmp_path, good, change))


def test_metadata_that_is_not_a_json_object_is_refused(tmp_path):
    model = cnn()
    model.save(tmp_path / "good.npz")
    path = altered(tmp_path, tmp_path / "good.npz", lambda m, a: None)
    arrays = dict(np.load(path, allow_pickle=False))
    arrays["__model__"] = np.array("[1, 2]")
    np.savez(path, **arrays)
    with pytest.raises(WeightsFileError, match=r"altered\.npz has damaged metadata \(__model__ "
                                               r"is \[1, 2\], not a JSON object\)"):
        load_model(path)


class Scale(Layer):
    """y = x * gamma per channel (a custom layer with an argument and a weight)."""

    def __init__(self, start=1.0, **kwargs):
        super().__init__(**kwargs)
        self.start = start

    def build(self, input_shape):
        self.add_weight("gamma", (input_shape[-1],), initializer=minicnn.initializers.Constant(
            self.start))
        super().build(input_shape)

    def forward(self, x, training=False):
        self.x = x
        return x * self.params["gamma"]

    def backward(self, dy):
        self.grads["gamma"] = (dy * self.x).sum(axis=tuple(range(dy.ndim - 1)))
        return dy * self.params["gamma"]

    def get_config(self):
        return {**super().get_config(), "start": self.start}


def test_custom_layers_load_with_custom_objects(tmp_path):
    model = Sequential([Conv2D(3, 3, input_shape=(6, 6, 2)), Scale(0.5), Flatten(),
                        Dense(3, activation="softmax")])
    model.compile(optimizers.Adam(lr=0.01), "categorical_crossentropy")
    x, y = data(8)
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    model.save(tmp_path / "custom.npz")
    with pytest.raises(ValueError, match=r"load_model: unknown layer class 'Scale'; if it is "
                                         r"your own layer, pass it as "
                                         r"custom_objects=\{'Scale': Scale\}"):
        load_model(tmp_path / "custom.npz")
    loaded = load_model(tmp_path / "custom.npz", custom_objects={"Scale": Scale})
    assert loaded.layers[1].start == 0.5
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    assert set(host_state(loaded.optimizer)) == set(host_state(model.optimizer))


def test_model_checkpoint_saves_whole_models(tmp_path):
    x, y = data()
    model = cnn(optimizers.SGD(lr=0.05, momentum=0.9))
    pattern = str(tmp_path / "model.{epoch:02d}.npz")
    saved = {}
    keep = minicnn.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: saved.update({epoch: model.get_weights()}))
    model.fit(x, y, batch_size=4, epochs=2, verbose=0, validation_data=(x, y),
              callbacks=[ModelCheckpoint(pattern), keep])  # Keras's default: whole models
    assert sorted(os.listdir(tmp_path)) == ["model.01.npz", "model.02.npz"]
    for epoch in (0, 1):
        loaded = load_model(tmp_path / f"model.{epoch + 1:02d}.npz")
        assert loaded.optimizer.iterations == 4 * (epoch + 1)
        for a, b in zip(loaded.get_weights(), saved[epoch]):
            np.testing.assert_array_equal(a, b)
    best = ModelCheckpoint(str(tmp_path / "best.npz"), save_best_only=True)
    model.fit(x, y, batch_size=4, epochs=3, initial_epoch=2, verbose=0, validation_data=(x, y),
              callbacks=[best])
    assert load_model(tmp_path / "best.npz").optimizer.iterations == 12  # 2 epochs + 1


def test_model_checkpoint_weights_only_still_writes_weight_files(tmp_path):
    model = cnn()
    x, y = data(8)
    model.fit(x, y, batch_size=4, epochs=1, verbose=0,
              callbacks=[ModelCheckpoint(str(tmp_path / "w.npz"), save_weights_only=True)])
    with np.load(tmp_path / "w.npz", allow_pickle=False) as stored:
        assert "__meta__" in stored.files and "__model__" not in stored.files


def test_saving_does_not_disturb_training(tmp_path):
    """save copies the optimizer's arrays to the host; the live ones keep training."""
    x, y = data()
    minicnn.set_seed(2)
    plain = cnn(optimizers.Adam(lr=0.01))
    plain.fit(x, y, batch_size=4, epochs=2, verbose=0, shuffle=False)
    minicnn.set_seed(2)
    saving = cnn(optimizers.Adam(lr=0.01))
    saving.fit(x, y, batch_size=4, epochs=2, verbose=0, shuffle=False,
               callbacks=[ModelCheckpoint(str(tmp_path / "m.npz"))])
    for a, b in zip(saving.get_weights(), plain.get_weights()):
        np.testing.assert_array_equal(a, b)  # the same run, step for step
    buffer = io.BytesIO((tmp_path / "m.npz").read_bytes())
    assert "__model__" in np.load(buffer, allow_pickle=False).files


def test_a_float64_model_needs_float64_to_load(tmp_path):
    minicnn.set_floatx("float64")
    model = Sequential([Dense(2, input_shape=(3,))])
    model.save(tmp_path / "m.npz")
    minicnn.set_floatx("float32")
    with pytest.raises(ValueError, match=r"dtype 'float64' differs from minicnn's float type "
                                         r"'float32'.*set_floatx\('float64'\).*\(in .*m\.npz\)"):
        load_model(tmp_path / "m.npz", compile=False)
    minicnn.set_floatx("float64")
    loaded = load_model(tmp_path / "m.npz", compile=False)
    assert loaded.layers[0].params["kernel"].dtype == np.float64
    np.testing.assert_array_equal(loaded.get_weights()[0], model.get_weights()[0])


class HalfSquares(minicnn.losses.MeanSquaredError):
    """Half the mean squared error: a loss of the user's own, by name."""
    name = "half_squares"

    def forward(self, y_pred, y_true):
        return 0.5 * super().forward(y_pred, y_true)

    def backward(self):
        return 0.5 * super().backward()


def test_a_custom_loss_comes_from_custom_objects(tmp_path):
    model = Sequential([Dense(3, input_shape=(4,))])
    model.compile(optimizers.SGD(lr=0.1), loss=HalfSquares())
    x = np.random.default_rng(0).random((6, 4), dtype=np.float32)
    y = np.random.default_rng(1).random((6, 3), dtype=np.float32)
    model.fit(x, y, batch_size=3, epochs=1, verbose=0)
    model.save(tmp_path / "m.npz")
    with pytest.raises(ValueError, match=r"unknown loss 'half_squares'.*custom_objects"):
        load_model(tmp_path / "m.npz")
    loaded = load_model(tmp_path / "m.npz", custom_objects={"half_squares": HalfSquares})
    assert isinstance(loaded.loss, HalfSquares)
    assert loaded.evaluate(x, y) == model.evaluate(x, y)


class Quartic(minicnn.losses.Loss):
    """A loss of the user's own with no name: mean (y_pred - y_true)^4."""

    def values(self, y_pred, y_true):
        self.d = y_pred - y_true
        return (self.d ** 4).mean(axis=-1)

    def sample_gradient(self):
        return 4 * self.d ** 3 / self.d.shape[-1]


class DoubledSquares(minicnn.losses.MeanSquaredError):
    """A subclass of a built-in loss that keeps the built-in's name attribute."""

    def forward(self, y_pred, y_true, sample_weight=None):
        return 2 * super().forward(y_pred, y_true, sample_weight)

    def backward(self):
        return 2 * super().backward()


class Smoothed(minicnn.losses.CategoricalCrossentropy):
    """A subclass of a built-in loss made with arguments (saved as a config dict)."""


@pytest.mark.parametrize("loss_class,kwargs", [(Quartic, {}), (DoubledSquares, {}),
                                               (Smoothed, {"label_smoothing": 0.1})])
def test_a_custom_loss_without_a_name_of_its_own_saves_by_its_class_name(tmp_path, loss_class,
                                                                         kwargs):
    x = np.random.default_rng(0).random((6, 4), dtype=np.float32)
    y = np.random.default_rng(1).random((6, 3), dtype=np.float32)
    model = Sequential([Dense(3, input_shape=(4,), activation="sigmoid")])
    model.compile(optimizers.SGD(lr=0.1), loss=loss_class(**kwargs))
    # ModelCheckpoint saves the whole model by default (save_weights_only=False)
    model.fit(x, y, batch_size=3, epochs=2, verbose=0,
              callbacks=[ModelCheckpoint(str(tmp_path / "m.npz"))])
    name = loss_class.__name__
    with pytest.raises(ValueError, match=rf"'{name}'.*custom_objects"):
        load_model(tmp_path / "m.npz")
    loaded = load_model(tmp_path / "m.npz", custom_objects={name: loss_class})
    assert type(loaded.loss) is loss_class  # not the built-in whose name it inherits
    assert loaded.loss.get_config() == model.loss.get_config()
    assert_close(loaded.evaluate(x, y), model.evaluate(x, y))

