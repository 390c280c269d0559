"""Callback states and frozen weights in checkpoints and model files: a run resumed in a
new model with new callbacks ends as the uninterrupted one (ExponentialMovingAverage's
average included), and the weights frozen with set_trainable stay frozen."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

import minicnn
from minicnn.callbacks import Callback, ExponentialMovingAverage
from minicnn.layers import BatchNormalization, Conv2D, Dense, Flatten
from minicnn.models import Sequential, load_model
from minicnn.optimizers import SGD
from minicnn.serialization import WeightsFileError
from minicnn.training import checkpoint as ckpt

from conftest import assert_close

STEPS = 5  # 20 samples in batches of 4


def small_model(seed: int = 0, freeze: bool = True) -> Sequential:
    minicnn.set_seed(seed)
    model = Sequential([Conv2D(3, 3, input_shape=(6, 5, 2), activation="relu"),
                        BatchNormalization(momentum=0.6), Flatten(), Dense(4)])
    model.compile(optimizer=SGD(lr=0.05, momentum=0.8, nesterov=True),
                  loss="mean_squared_error")
    if freeze:
        model.layers[0].set_trainable("bias", False)
    return model


def data(n: int = 20):
    rng = np.random.default_rng(0)
    return (rng.standard_normal((n, 6, 5, 2)).astype(np.float32),
            rng.standard_normal((n, 4)).astype(np.float32))


def ema() -> ExponentialMovingAverage:
    # Updates every 2nd step, pulled back every 3rd: at an epoch's end (5 steps) the
    # average and the weights differ, so a resume must bring the average back.
    return ExponentialMovingAverage(lambda t: 0.9 * (1 - t / 40), update_frequency=2,
                                    overwrite_frequency=3)


def fit(model, callbacks, epochs, path, resume=False):
    x, y = data()
    return model.fit(x, y, batch_size=4, epochs=epochs, verbose=0, callbacks=callbacks,
                     checkpoint=path, resume=resume)


def host_weights(model) -> list[np.ndarray]:
    return [minicnn.to_host(w).copy() for layer in model.layers for w in layer.params.values()]


def test_ema_average_resumes_exactly(tmp_path, backend):
    full, full_ema = small_model(), ema()
    fit(full, [full_ema], 3, tmp_path / "full.npz")

    path = tmp_path / "run.npz"
    fit(small_model(), [ema()], 1, path)  # the run stops after epoch 1
    with np.load(path) as f:  # (the checkpoint's average is not the weights: see ema())
        meta = json.loads(str(f["__checkpoint__"]))
        assert meta["callbacks"] == [{"class": "ExponentialMovingAverage", "state": {}}]
        assert not np.array_equal(f["callbacks/0/3/kernel"], f["weights/dense_1/kernel"])
    # A new process: a new model (other names, other initial weights), new callbacks.
    resumed, resumed_ema = small_model(seed=5), ema()
    history = fit(resumed, [resumed_ema], 3, path, resume=True)
    assert history.resumed_epochs == 1 and resumed.optimizer.iterations == 3 * STEPS
    for got, want in zip(host_weights(resumed), host_weights(full)):
        assert_close(got, want)
    got, want = resumed_ema.state_dict(), full_ema.state_dict()
    assert set(got) == set(want) and "0/bias" in got and "1/moving_mean" in got
    for key in want:
        assert_close(got[key], want[key], err_msg=key)


def test_a_frozen_weight_stays_frozen_after_resume(tmp_path):
    full = small_model()
    fit(full, [], 2, tmp_path / "full.npz")
    path = tmp_path / "run.npz"
    first = small_model()
    fit(first, [], 1, path)
    with np.load(path) as f:
        assert json.loads(str(f["__checkpoint__"]))["frozen"] == {first.layers[0].name: ["bias"]}
    resumed = small_model(seed=5, freeze=False)  # the checkpoint freezes it
    fit(resumed, [], 2, path, resume=True)
    assert resumed.layers[0].frozen_params() == ["bias"]
    assert "bias" not in resumed.layers[0].trained_params()
    for got, want in zip(host_weights(resumed), host_weights(full)):
        assert_close(got, want)


def test_the_checkpoints_record_wins_over_the_models_freezing(tmp_path):
    path = tmp_path / "run.npz"
    fit(small_model(freeze=False), [], 1, path)
    model = small_model()  # frozen bias, trainable in the checkpoint
    model.layers[3].set_trainable("kernel", False)
    ckpt.load(path, model)
    assert [layer.frozen_params() for layer in model.layers] == [[], [], [], []]


class Counter(Callback):
    """A callback with a JSON value and an array in its state."""

    def __init__(self, step: int = 1) -> None:
        super().__init__()
        self.step, self.batches, self.total = step, 0, np.zeros(2)

    def on_batch_end(self, batch, logs=None):
        self.batches += self.step
        self.total = self.total + [self.step, 2 * self.step]

    def state_dict(self):
        return {"batches": self.batches, "total": self.total}

    def load_state_dict(self, state):
        self.batches, self.total = state["batches"], state["total"]


def test_states_go_to_the_callbacks_of_their_class_in_order(tmp_path):
    path = tmp_path / "run.npz"
    fit(small_model(), [Counter(1), ema(), Counter(10)], 1, path)
    one, average, ten = Counter(1), ema(), Counter(10)
    fit(small_model(), [one, average, ten], 2, path, resume=True)
    assert (one.batches, ten.batches) == (2 * STEPS, 20 * STEPS)
    np.testing.assert_array_equal(ten.total, [10 * 2 * STEPS, 20 * 2 * STEPS])
    assert set(average.state_dict()) == {"0/kernel", "0/bias", "1/beta", "1/gamma",
                                         "1/moving_mean", "1/moving_variance", "3/kernel",
                                         "3/bias"}


def test_a_state_no_callback_takes_is_named(tmp_path):
    path = tmp_path / "run.npz"
    fit(small_model(), [ema(), Counter()], 1, path)
    model = small_model()
    before = host_weights(model)
    with pytest.raises(ckpt.CheckpointError, match=r"run.npz holds the state of callback "
                       r"ExponentialMovingAverage \(number 1 of that class\), but fit was "
                       r"given 0 ExponentialMovingAverage"):
        fit(model, [Counter()], 2, path, resume=True)
    for got, want in zip(host_weights(model), before):  # nothing changed
        np.testing.assert_array_equal(got, want)


def test_a_callback_without_a_saved_state_starts_afresh_with_a_warning(tmp_path):
    path = tmp_path / "run.npz"
    fit(small_model(), [], 1, path)
    counter = Counter()
    with pytest.warns(UserWarning, match="holds no state for the callback Counter"):
        fit(small_model(), [counter], 2, path, resume=True)
    assert counter.batches == STEPS


def test_a_state_that_is_not_arrays_and_json_is_named(tmp_path):
    class Bad(Counter):
        def state_dict(self):
            return {"when": object()}

    with pytest.raises(TypeError, match=r"Bad.state_dict\(\)\['when'\] is a object; a state "
                                        "holds arrays and JSON values"):
        fit(small_model(), [Bad()], 1, tmp_path / "run.npz")


def test_ema_state_that_fits_no_weight_is_named():
    model = small_model()
    average = ema()
    fit(model, [average], 1, None)
    state = average.state_dict()
    state["3/kernel"] = np.zeros((2, 2), np.float32)
    with pytest.raises(ValueError, match=r"average '3/kernel' \(shape \(2, 2\)\) fits no weight"):
        average.load_state_dict(state)
    del state["3/kernel"]
    with pytest.raises(ValueError, match="the state has no average of dense_.*/kernel"):
        average.load_state_dict(state)


def test_version_1_checkpoints_still_load(tmp_path):
    path = tmp_path / "run.npz"
    fit(small_model(), [ema()], 1, path)
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files if not k.startswith("callbacks/")}
    meta = json.loads(str(arrays["__checkpoint__"]))
    meta["version"] = 1
    del meta["frozen"], meta["callbacks"]
    arrays["__checkpoint__"] = np.array(json.dumps(meta))
    np.savez(path, **arrays)
    model = small_model(freeze=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        state = ckpt.load(path, model)
    assert state.epoch == 1 and model.layers[0].frozen_params() == []  # nothing recorded
    with pytest.warns(UserWarning, match="no state for the callback ExponentialMovingAverage"):
        fit(small_model(), [ema()], 2, path, resume=True)


def test_damaged_frozen_record_is_named(tmp_path):
    path = tmp_path / "run.npz"
    fit(small_model(), [], 1, path)
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    meta = json.loads(str(arrays["__checkpoint__"]))
    meta["frozen"] = {"conv2d_1": ["nothing"]}
    arrays["__checkpoint__"] = np.array(json.dumps(meta))
    np.savez(path, **arrays)
    with pytest.raises(WeightsFileError, match="records conv2d_1/nothing as frozen, but the "
                                               "model has no such weight"):
        ckpt.load(path, small_model())


def test_frozen_weights_survive_save_and_load_model(tmp_path):
    model = small_model()
    model.layers[3].set_trainable("kernel", False)
    path = tmp_path / "model.npz"
    model.save(path)
    loaded = load_model(path)
    assert [layer.frozen_params() for layer in loaded.layers] == [["bias"], [], [], ["kernel"]]
    before = host_weights(loaded)
    x, y = data()
    loaded.fit(x, y, batch_size=4, epochs=1, verbose=0)
    after = host_weights(loaded)
    np.testing.assert_array_equal(after[1], before[1])    # conv bias, frozen
    np.testing.assert_array_equal(after[-2], before[-2])  # dense kernel, frozen
    assert not np.array_equal(after[0], before[0])         # conv kernel, trained


def test_model_files_without_a_frozen_record_load_as_before(tmp_path):
    path = tmp_path / "model.npz"
    small_model().save(path)
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    meta = json.loads(str(arrays["__model__"]))
    assert meta["frozen"] == {meta["layer_names"][0]: ["bias"]}
    del meta["frozen"]
    arrays["__model__"] = np.array(json.dumps(meta))
    np.savez(path, **arrays)
    assert [layer.frozen_params() for layer in load_model(path).layers] == [[], [], [], []]
