"""Keras 2.2.4's callbacks: EarlyStopping, ModelCheckpoint, LearningRateScheduler,
ReduceLROnPlateau, TerminateOnNaN, LambdaCallback and CSVLogger.

Monitored values in real training are too noisy to predict, so most tests drive
a callback's hooks by hand with made-up logs on a small real model; a few run
``fit`` to check the callback is wired into the loop."""
from __future__ import annotations

import csv
import os

import numpy as np
import pytest

from minicnn.callbacks import (CSVLogger, EarlyStopping, LambdaCallback, LearningRateScheduler,
                               ModelCheckpoint, ReduceLROnPlateau, TerminateOnNaN)
from minicnn.layers import Dense
from minicnn.models import Sequential
from minicnn.optimizers import SGD


def tiny_model(lr=0.01):
    model = Sequential([Dense(3, activation="softmax", input_shape=(4,))])
    model.compile(SGD(lr=lr), "categorical_crossentropy", metrics=["accuracy"])
    return model


def data(n=8):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 4)).astype(np.float32)
    y = np.eye(3, dtype=np.float32)[rng.integers(0, 3, n)]
    return x, y


def drive(callback, model, values, monitor="val_loss"):
    """Run callback's epoch hooks over ``values``, stopping where fit would; the
    number of epochs run."""
    callback.set_model(model)
    model.stop_training = False
    callback.on_train_begin({})
    for epoch, value in enumerate(values):
        callback.on_epoch_begin(epoch, {})
        callback.on_epoch_end(epoch, {"loss": 1.0, monitor: value})
        if model.stop_training:
            break
    callback.on_train_end({})
    return epoch + 1


# ------------------------------------------------------------ EarlyStopping
@pytest.mark.parametrize("patience, values, epochs", [
    (0, [1.0, 0.9, 0.95, 0.5], 3),       # stops after the first epoch that does not improve
    (2, [1.0, 0.9, 0.95, 0.92, 0.5], 4),  # two in a row without improvement
    (2, [1.0, 0.9, 0.95, 0.8, 0.85, 0.7], 6),  # an improvement resets the wait
])
def test_early_stopping_patience(patience, values, epochs):
    stopper = EarlyStopping(patience=patience)
    assert drive(stopper, tiny_model(), values) == epochs
    assert stopper.stopped_epoch == (epochs - 1 if epochs < len(values) else 0)


def test_early_stopping_patience_0_and_1_agree():
    # Keras counts the failing epoch before comparing with patience (wait >= patience)
    for patience in (0, 1):
        assert drive(EarlyStopping(patience=patience), tiny_model(), [1.0, 1.0, 0.5]) == 2


def test_early_stopping_min_delta_and_mode():
    # 0.95 improves on 1.0 by 0.05 <= min_delta 0.1: no improvement
    assert drive(EarlyStopping(min_delta=0.1), tiny_model(), [1.0, 0.95, 0.5]) == 2
    assert drive(EarlyStopping(min_delta=0.01), tiny_model(), [1.0, 0.95, 0.5, 0.6]) == 4
    # auto picks max for a name containing 'acc'; mode overrides it
    assert drive(EarlyStopping(monitor="val_acc"), tiny_model(), [0.5, 0.6, 0.55, 0.9],
                 "val_acc") == 3
    assert drive(EarlyStopping(monitor="val_acc", mode="min"), tiny_model(), [0.5, 0.6, 0.4],
                 "val_acc") == 2
    assert drive(EarlyStopping(mode="max"), tiny_model(), [1.0, 0.9]) == 2
    with pytest.warns(RuntimeWarning, match="mode sideways is unknown"):
        stopper = EarlyStopping(mode="sideways")
    assert drive(stopper, tiny_model(), [1.0, 0.9, 1.1]) == 3  # auto: min for val_loss


def test_early_stopping_baseline():
    # never beats the baseline: stops after the first epoch (patience 0)
    assert drive(EarlyStopping(baseline=0.5), tiny_model(), [0.9, 0.8, 0.7]) == 1
    assert drive(EarlyStopping(baseline=0.5, patience=2), tiny_model(), [0.9, 0.4, 0.3]) == 3
    stopper = EarlyStopping(baseline=0.5, patience=2)
    assert drive(stopper, tiny_model(), [0.9, 0.8, 0.3]) == 2
    stopper.baseline = None  # on_train_begin resets the state for a reused instance
    assert drive(stopper, tiny_model(), [0.9, 0.8, 0.3]) == 3 and stopper.best == 0.3


def test_early_stopping_restores_the_best_epochs_weights():
    model = tiny_model()
    stopper = EarlyStopping(patience=1, restore_best_weights=True)
    stopper.set_model(model)
    model.stop_training = False
    stopper.on_train_begin({})
    snapshots = []
    for epoch, value in enumerate([1.0, 0.5, 0.7, 0.8]):
        model.set_weights([w + 1.0 for w in model.get_weights()])  # "training" changes them
        snapshots.append(model.get_weights())
        stopper.on_epoch_end(epoch, {"val_loss": value})
        if model.stop_training:
            break
    assert epoch == 2
    for restored, best in zip(model.get_weights(), snapshots[1]):  # copies: exact
        np.testing.assert_array_equal(restored, best)
    assert not np.array_equal(model.get_weights()[0], snapshots[2][0])


def test_early_stopping_without_restore_keeps_the_last_weights():
    model = tiny_model()
    stopper = EarlyStopping(restore_best_weights=False)
    before = model.get_weights()
    assert drive(stopper, model, [1.0, 2.0]) == 2
    np.testing.assert_array_equal(model.get_weights()[0], before[0])
    assert stopper.best_weights is None


def test_early_stopping_warns_about_a_missing_monitor():
    model = tiny_model()
    stopper = EarlyStopping(monitor="val_acc")
    stopper.set_model(model)
    stopper.on_train_begin({})
    with pytest.warns(RuntimeWarning, match="`val_acc` which is not available. "
                                            "Available metrics are: loss,acc"):
        stopper.on_epoch_end(0, {"loss": 1.0, "acc": 0.5})
    assert not model.stop_training


def test_early_stopping_in_fit():
    x, y = data()
    model = tiny_model(lr=0.0)  # lr 0: val_loss never changes, so never improves
    history = model.fit(x, y, epochs=6, batch_size=4, verbose=0, validation_data=(x, y),
                        callbacks=[EarlyStopping(patience=2)])
    assert len(history.history["loss"]) == 3


def test_early_stopping_checks_patience():
    with pytest.raises(ValueError, match="EarlyStopping: patience must be an int >= 0, got -1"):
        EarlyStopping(patience=-1)


# ------------------------------------------------------------ ModelCheckpoint
def test_model_checkpoint_formats_file_names(tmp_path):
    x, y = data()
    model = tiny_model()
    pattern = str(tmp_path / "weights.{epoch:02d}-{val_loss:.2f}.npz")
    history = model.fit(x, y, epochs=3, batch_size=4, verbose=0, validation_data=(x, y),
                        callbacks=[ModelCheckpoint(pattern, save_weights_only=True)])
    expected = {f"weights.{e + 1:02d}-{v:.2f}.npz"
                for e, v in enumerate(history.history["val_loss"])}
    assert set(os.listdir(tmp_path)) == expected
    last = sorted(expected)[-1]
    other = tiny_model()
    other.load_weights(tmp_path / last)
    for a, b in zip(other.get_weights(), model.get_weights()):  # a file round trip: exact
        np.testing.assert_array_equal(a, b)


def test_model_checkpoint_save_best_only_and_period(tmp_path):
    model = tiny_model()
    checkpoint = ModelCheckpoint(str(tmp_path / "w{epoch}.npz"), save_best_only=True,
                                 save_weights_only=True)
    drive(checkpoint, model, [1.0, 0.5, 0.7, 0.4, 0.4])
    assert sorted(os.listdir(tmp_path)) == ["w1.npz", "w2.npz", "w4.npz"]
    accuracy = ModelCheckpoint(str(tmp_path / "acc{epoch}.npz"), monitor="val_acc",
                               save_best_only=True, save_weights_only=True)
    drive(accuracy, model, [0.5, 0.4, 0.6], "val_acc")  # auto: bigger is better for acc
    assert sorted(f for f in os.listdir(tmp_path) if f.startswith("acc")) == \
        ["acc1.npz", "acc3.npz"]
    every = ModelCheckpoint(str(tmp_path / "p{epoch}.npz"), period=2, save_weights_only=True)
    drive(every, model, [1.0] * 5)
    assert sorted(f for f in os.listdir(tmp_path) if f.startswith("p")) == ["p2.npz", "p4.npz"]


def test_model_checkpoint_refusals(tmp_path):
    with pytest.raises(ValueError, match="ModelCheckpoint: .*names an HDF5 file"):
        ModelCheckpoint(str(tmp_path / "m.h5"), save_weights_only=True)
    checkpoint = ModelCheckpoint(str(tmp_path / "m{val_acc}.npz"), save_weights_only=True)
    checkpoint.set_model(tiny_model())
    with pytest.raises(KeyError, match="names 'val_acc', which this epoch's logs lack; "
                                       "they hold epoch, loss"):
        checkpoint.on_epoch_end(0, {"loss": 1.0})
    missing = ModelCheckpoint(str(tmp_path / "b.npz"), save_best_only=True,
                              save_weights_only=True)
    missing.set_model(tiny_model())
    with pytest.warns(RuntimeWarning, match="Can save best model only with val_loss"):
        missing.on_epoch_end(0, {"loss": 1.0})
    assert not (tmp_path / "b.npz").exists()


# ------------------------------------------------------------ LearningRateScheduler
def test_scheduler_sets_the_optimizers_rate_in_fit():
    x, y = data()
    model = tiny_model(lr=0.1)
    seen = []
    spy = LambdaCallback(on_epoch_begin=lambda epoch, logs: seen.append(
        model.optimizer.current_learning_rate))
    model.fit(x, y, epochs=3, batch_size=4, verbose=0,
              callbacks=[LearningRateScheduler(lambda epoch: 0.5 ** epoch), spy])
    assert seen == [1.0, 0.5, 0.25]
    assert model.optimizer.lr == 0.25 and model.optimizer.learning_rate == 0.25


def test_history_records_what_callbacks_add_to_the_logs():
    # Keras's History runs after the other callbacks, so the scheduler's "lr" is kept.
    x, y = data()
    history = tiny_model().fit(x, y, epochs=3, batch_size=4, verbose=0,
                               callbacks=[LearningRateScheduler(lambda epoch: 0.5 ** epoch)])
    assert history.history["lr"] == [1.0, 0.5, 0.25]


def test_scheduler_two_argument_form_and_logs():
    model = tiny_model(lr=0.1)
    scheduler = LearningRateScheduler(lambda epoch, lr: lr * 0.5)
    scheduler.set_model(model)
    for epoch in range(3):
        scheduler.on_epoch_begin(epoch, {})
    assert model.optimizer.lr == pytest.approx(0.0125)
    logs = {}
    scheduler.on_epoch_end(2, logs)
    assert logs["lr"] == pytest.approx(0.0125)
    # np.float32 is a float to Keras too
    LearningRateScheduler(lambda epoch: np.float32(0.5)).set_model(model)


def test_scheduler_refuses_a_non_float():
    model = tiny_model()
    scheduler = LearningRateScheduler(lambda epoch: 1)
    scheduler.set_model(model)
    with pytest.raises(ValueError, match='"schedule" function should be float, got 1 for epoch 0'):
        scheduler.on_epoch_begin(0, {})
    scheduler = LearningRateScheduler(lambda epoch: -0.5)
    scheduler.set_model(model)
    with pytest.raises(ValueError, match="SGD: lr must be a finite number >= 0, got -0.5"):
        scheduler.on_epoch_begin(0, {})
    with pytest.raises(TypeError, match="schedule must be a function"):
        LearningRateScheduler(0.1)


def test_scheduler_does_not_hide_a_type_error_in_the_schedule():
    def schedule(epoch, lr):
        return lr + "oops"
    scheduler = LearningRateScheduler(schedule)
    scheduler.set_model(tiny_model())
    with pytest.raises(TypeError, match="unsupported operand"):
        scheduler.on_epoch_begin(0, {})


# ------------------------------------------------------------ ReduceLROnPlateau
def run_plateau(callback, model, values):
    callback.set_model(model)
    callback.on_train_begin({})
    rates = []
    for epoch, value in enumerate(values):
        callback.on_epoch_end(epoch, {"val_loss": value})
        rates.append(model.optimizer.lr)
    return rates


def test_reduce_lr_after_patience():
    model = tiny_model(lr=1.0)
    rates = run_plateau(ReduceLROnPlateau(factor=0.5, patience=2), model,
                        [1.0, 1.0, 1.0, 1.0, 1.0, 0.5])
    assert rates == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]


def test_reduce_lr_min_delta():
    # improvements of less than min_delta count as none
    rates = run_plateau(ReduceLROnPlateau(factor=0.5, patience=1, min_delta=0.1),
                        tiny_model(lr=1.0), [1.0, 0.95, 0.7])
    assert rates == [1.0, 0.5, 0.5]


def test_reduce_lr_cooldown_and_min_lr():
    rates = run_plateau(ReduceLROnPlateau(factor=0.5, patience=1, cooldown=2),
                        tiny_model(lr=1.0), [1.0] * 6)
    # Keras counts the cooldown down before it compares, so cooldown=2 leaves one
    # epoch fully skipped: reduce (epoch 1), skip (2), count again and reduce (3), ...
    assert rates == [1.0, 0.5, 0.5, 0.25, 0.25, 0.125]
    no_cooldown = run_plateau(ReduceLROnPlateau(factor=0.5, patience=1), tiny_model(lr=1.0),
                              [1.0] * 4)
    assert no_cooldown == [1.0, 0.5, 0.25, 0.125]
    rates = run_plateau(ReduceLROnPlateau(factor=0.1, patience=1, min_lr=0.05),
                        tiny_model(lr=1.0), [1.0] * 5)
    assert rates == pytest.approx([1.0, 0.1, 0.05, 0.05, 0.05])


def test_reduce_lr_mode_logs_and_errors():
    model = tiny_model(lr=1.0)
    callback = ReduceLROnPlateau(monitor="val_acc", factor=0.5, patience=1)
    callback.set_model(model)
    callback.on_train_begin({})
    for epoch, value in enumerate([0.5, 0.6, 0.6]):  # auto: bigger is better for acc
        logs = {"val_acc": value}
        callback.on_epoch_end(epoch, logs)
    assert model.optimizer.lr == 0.5 and logs["lr"] == 1.0  # logged before the change
    with pytest.warns(RuntimeWarning, match="Reduce LR on plateau conditioned on metric "
                                            "`val_acc`"):
        callback.on_epoch_end(3, {"loss": 1.0})
    with pytest.raises(ValueError, match="does not support a factor >= 1.0"):
        ReduceLROnPlateau(factor=1.0)


# ------------------------------------------------------------ the rest
def test_terminate_on_nan(capsys):
    model = tiny_model()
    callback = TerminateOnNaN()
    callback.set_model(model)
    model.stop_training = False
    callback.on_batch_end(0, {"loss": 1.0})
    assert not model.stop_training
    callback.on_batch_end(3, {"loss": float("nan")})
    assert model.stop_training
    assert "Batch 3: Invalid loss, terminating training" in capsys.readouterr().out
    model.stop_training = False
    callback.on_batch_end(4, {"loss": float("inf")})
    assert model.stop_training


def test_terminate_on_nan_stops_fit_after_the_batch():
    x, y = data()
    model = tiny_model()
    batches = []
    poison = LambdaCallback(on_batch_end=lambda batch, logs: (
        batches.append(batch), logs.update(loss=float("nan"))))
    history = model.fit(x, y, epochs=3, batch_size=2, verbose=0,
                        callbacks=[poison, TerminateOnNaN()])
    assert batches == [0] and len(history.history["loss"]) == 1


def test_lambda_callback_calls_its_functions_in_fit():
    x, y = data()
    model = tiny_model()
    calls = []
    callback = LambdaCallback(
        on_train_begin=lambda logs: calls.append("train_begin"),
        on_epoch_begin=lambda epoch, logs: calls.append(f"epoch_begin {epoch}"),
        on_batch_begin=lambda batch, logs: calls.append(f"batch_begin {batch}"),
        on_batch_end=lambda batch, logs: calls.append(f"batch_end {batch} {sorted(logs)}"),
        on_epoch_end=lambda epoch, logs: calls.append(f"epoch_end {epoch}"),
        on_train_end=lambda logs: calls.append("train_end"), note="kept")
    model.fit(x, y, epochs=2, batch_size=8, verbose=0, callbacks=[callback])
    batch_end = "batch_end 0 ['acc', 'batch', 'loss', 'size']"
    assert calls == ["train_begin", "epoch_begin 0", "batch_begin 0", batch_end, "epoch_end 0",
                     "epoch_begin 1", "batch_begin 0", batch_end, "epoch_end 1", "train_end"]
    assert callback.note == "kept"
    with pytest.raises(TypeError, match="LambdaCallback: on_epoch_end must be a function"):
        LambdaCallback(on_epoch_end=3)


def test_lambda_callback_without_batch_functions_skips_batch_hooks():
    from minicnn.callbacks import CallbackList
    epoch_only = CallbackList([LambdaCallback(on_epoch_end=lambda e, l: None)], None, {})
    assert not epoch_only.wants("on_batch_end") and epoch_only.wants("on_epoch_end")
    batch = CallbackList([LambdaCallback(on_batch_end=lambda b, l: None)], None, {})
    assert batch.wants("on_batch_end")


def test_csv_logger_writes_a_header_and_a_row_per_epoch(tmp_path):
    x, y = data()
    path = tmp_path / "log.csv"
    model = tiny_model()
    history = model.fit(x, y, epochs=3, batch_size=4, verbose=0, validation_data=(x, y),
                        callbacks=[CSVLogger(path)])
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["epoch", "acc", "loss", "val_acc", "val_loss"]
    assert [row[0] for row in rows[1:]] == ["0", "1", "2"]
    assert [float(row[2]) for row in rows[1:]] == history.history["loss"]  # repr: exact
    # append adds rows without a second header; a separator of choice
    model.fit(x, y, epochs=2, batch_size=4, verbose=0, callbacks=[CSVLogger(path, append=True)])
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert len(rows) == 6 and rows[4][0] == "0" and rows.count(rows[0]) == 1
    CSVLogger(tmp_path / "semi.csv", separator=";")  # construction does no I/O
    assert not (tmp_path / "semi.csv").exists()
    logger = CSVLogger(tmp_path / "semi.csv", separator=";")
    logger.set_model(model)
    model.stop_training = False
    logger.on_train_begin({})
    logger.on_epoch_end(0, {"loss": 1.5, "acc": 0.25})
    model.stop_training = True  # a stopped epoch may lack keys: NA, as Keras
    logger.on_epoch_end(1, {"loss": 1.0})
    logger.on_train_end({})
    assert (tmp_path / "semi.csv").read_text().splitlines() == \
        ["epoch;acc;loss", "0;0.25;1.5", "1;NA;1.0"]
