"""Keras's waiting callbacks across a resumed run: EarlyStopping, ReduceLROnPlateau and
ModelCheckpoint(save_best_only) keep their counters and bests in fit's checkpoints, and
the learning rate ReduceLROnPlateau lowered comes back, so a run stopped after an epoch
and resumed ends as the uninterrupted one. Each test also resumes with the state taken
out of the checkpoint, to show that the comparison catches a callback that starts afresh."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import minicnn
from minicnn.callbacks import EarlyStopping, ModelCheckpoint, ReduceLROnPlateau
from minicnn.layers import Dense, Flatten
from minicnn.models import Sequential
from minicnn.optimizers import SGD

from conftest import assert_close


def small_model(seed: int = 0) -> Sequential:
    minicnn.set_seed(seed)
    model = Sequential([Flatten(input_shape=(3, 2)), Dense(5, activation="relu"), Dense(2)])
    model.compile(optimizer=SGD(lr=0.05, momentum=0.5), loss="mean_squared_error")
    return model


def fit(model, callbacks, epochs, path, resume=False):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 3, 2)).astype(np.float32)
    y = rng.standard_normal((16, 2)).astype(np.float32)
    return model.fit(x, y, batch_size=4, epochs=epochs, verbose=0, shuffle=False,
                     callbacks=callbacks, checkpoint=path, resume=resume)


def weights(model) -> list[np.ndarray]:
    return [np.array(w) for w in model.get_weights()]


def without_callback_states(path) -> None:
    """Take the callback states out of the checkpoint: the callbacks then start afresh
    (with a warning), as they did before they had a state."""
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files if not k.startswith("callbacks/")}
    meta = json.loads(str(arrays["__checkpoint__"]))
    meta["callbacks"] = []
    arrays["__checkpoint__"] = np.array(json.dumps(meta))
    np.savez(path, **arrays)


def afresh(model, callbacks, epochs, path):
    without_callback_states(path)
    with pytest.warns(UserWarning, match="holds no state for the callback"):
        return fit(model, callbacks, epochs, path, resume=True)


def saved_state(path, name: str) -> dict:
    with np.load(path) as f:
        meta = json.loads(str(f["__checkpoint__"]))
    return next(r["state"] for r in meta["callbacks"] if r["class"] == name)


# The training loss goes down by far less than min_delta here, so after the first
# epoch nothing counts as an improvement and the counters run.

def plateau():
    return ReduceLROnPlateau(monitor="loss", factor=0.5, patience=2, min_delta=10.0, cooldown=2)


def test_reduce_lr_on_plateau_resumes_its_counters_and_the_lowered_rate(tmp_path):
    # epoch 1 improves on inf; 2 and 3 do not: halved after 3, then a cooldown of 2 (the
    # counter goes down before the comparison, so 4 is skipped); 5 and 6 wait: halved after 6
    rates = [0.05] * 3 + [0.025] * 3 + [0.0125]
    full = small_model()
    assert fit(full, [plateau()], 7, tmp_path / "full.npz").history["lr"] == \
        pytest.approx(rates)

    path = tmp_path / "run.npz"
    fit(small_model(), [plateau()], 4, path)  # stopped after epoch 4, in the cooldown
    shutil.copy(path, tmp_path / "again.npz")
    state = saved_state(path, "ReduceLROnPlateau")
    assert (state["wait"], state["cooldown_counter"]) == (0, 1)
    resumed = small_model(seed=3)  # compiled with lr 0.05 again
    history = fit(resumed, [plateau()], 7, path, resume=True)
    assert history.history["lr"] == pytest.approx(rates)
    assert resumed.optimizer.lr == pytest.approx(0.0125)
    for got, want in zip(weights(resumed), weights(full)):
        assert_close(got, want)

    history = afresh(small_model(seed=3), [plateau()], 7, tmp_path / "again.npz")
    assert history.history["lr"] != pytest.approx(rates)  # the check above can fail


def test_checkpoint_keeps_a_rate_set_by_hand(tmp_path):
    path = tmp_path / "run.npz"
    model = small_model()
    model.optimizer.lr = 0.0125
    fit(model, [], 1, path)
    resumed = small_model()
    fit(resumed, [], 1, path, resume=True)  # nothing left to train: only the load
    assert resumed.optimizer.lr == 0.0125


def early():
    return EarlyStopping(monitor="loss", min_delta=10.0, patience=3, restore_best_weights=True)


def test_early_stopping_resumes_its_wait_and_best_weights(tmp_path):
    full = small_model()
    fit(full, [early()], 10, tmp_path / "full.npz")
    assert len(full.history.history["loss"]) == 4  # best at epoch 1, waited 2, 3, 4

    path = tmp_path / "run.npz"
    first = small_model()
    fit(first, [early()], 2, path)
    shutil.copy(path, tmp_path / "again.npz")
    state = saved_state(path, "EarlyStopping")
    assert state["wait"] == 1 and state["stopped_epoch"] == 0
    with np.load(path) as f:
        assert sum(k.startswith("callbacks/0/best_weights/") for k in f.files) == 4

    resumed, callback = small_model(seed=3), early()
    history = fit(resumed, [callback], 10, path, resume=True)
    assert len(history.history["loss"]) == 4 and callback.stopped_epoch == 3
    for got, want in zip(weights(resumed), weights(full)):  # epoch 1's weights, restored
        assert_close(got, want)

    history = afresh(small_model(seed=3), [early()], 10, tmp_path / "again.npz")
    assert len(history.history["loss"]) == 6  # epoch 3 beats a fresh best: stops after 6


def test_early_stopping_state_that_fits_no_model_is_named(tmp_path):
    model = small_model()
    callback = early()
    fit(model, [callback], 1, None)
    state = callback.state_dict()
    assert set(state) == {"best", "wait", "stopped_epoch", "best_weights/0", "best_weights/1",
                          "best_weights/2", "best_weights/3"}
    del state["best_weights/3"]
    with pytest.raises(ValueError, match=r"EarlyStopping: load_state_dict: the state's best "
                                         r"weights .* do not match the model's 4 weights"):
        callback.load_state_dict(state)
    with pytest.raises(ValueError, match=r"EarlyStopping: load_state_dict: wait must be a "
                                         r"number, got 'x'"):
        callback.load_state_dict({**callback.state_dict(), "wait": "x"})
    with pytest.raises(ValueError, match=r"ReduceLROnPlateau: load_state_dict: the state has "
                                         r"keys \['best'\]; expected"):
        plateau().load_state_dict({"best": 1.0})


def best_file(tmp_path):
    # mode 'max' on a falling loss: only epoch 1 is ever "best"
    return ModelCheckpoint(str(tmp_path / "best.npz"), monitor="loss", mode="max", save_best_only=True,
               save_weights_only=True)


def test_model_checkpoint_keeps_its_best_across_a_resume(tmp_path):
    (tmp_path / "a").mkdir()
    fit(small_model(), [best_file(tmp_path / "a")], 4, None)
    want = small_model()
    want.load_weights(str(tmp_path / "a" / "best.npz"))

    (tmp_path / "b").mkdir()
    path = tmp_path / "b" / "run.npz"
    fit(small_model(), [best_file(tmp_path / "b")], 2, path)
    fit(small_model(seed=3), [best_file(tmp_path / "b")], 4, path, resume=True)
    got = small_model(seed=4)
    got.load_weights(str(tmp_path / "b" / "best.npz"))
    for a, b in zip(weights(got), weights(want)):
        assert_close(a, b)

    fit(small_model(), [best_file(tmp_path / "b")], 2, path)
    afresh(small_model(seed=3), [best_file(tmp_path / "b")], 4, path)
    got.load_weights(str(tmp_path / "b" / "best.npz"))  # epoch 3's: overwritten afresh
    assert not all(np.allclose(a, b) for a, b in zip(weights(got), weights(want)))


def test_model_checkpoint_period_counts_across_a_resume(tmp_path):
    path = tmp_path / "run.npz"
    saver = ModelCheckpoint(str(tmp_path / "w{epoch}.npz"), period=2, save_weights_only=True)
    fit(small_model(), [saver], 3, path)
    assert saved_state(path, "ModelCheckpoint")["epochs_since_last_save"] == 1
    saver = ModelCheckpoint(str(tmp_path / "w{epoch}.npz"), period=2, save_weights_only=True)
    fit(small_model(seed=3), [saver], 6, path, resume=True)
    assert sorted(p.name for p in tmp_path.glob("w*.npz")) == ["w2.npz", "w4.npz", "w6.npz"]
