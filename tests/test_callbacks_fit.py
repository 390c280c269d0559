"""The callbacks Keras's fit adds by itself (History, BaseLogger, ProgbarLogger) and
tf.keras's BackupAndRestore (fit's checkpoints as a callback).

BaseLogger's and ProgbarLogger's arithmetic is checked by driving their hooks
by hand with made-up batch logs and naive averages written here; fit runs check
they are wired into the loop. BackupAndRestore is checked the way a user meets
it: a run stopped after some epochs, fit run again with the same callback, and
the result compared with a run that never stopped."""
from __future__ import annotations

import io
import os
import re
import signal
import sys

import numpy as np
import pytest

import minicnn
from minicnn.callbacks import (BackupAndRestore, BaseLogger, Callback, History,
                               LambdaCallback, LearningRateScheduler, ProgbarLogger)
from minicnn.training import checkpoint as ckpt
from minicnn.training.interrupts import TrainingInterrupted

from conftest import assert_close
from test_callbacks import data as tiny_data
from test_callbacks import tiny_model
from test_checkpoint import data, small_model, weights


# ------------------------------------------------------------ History
def test_history_is_a_callback_that_records_each_epoch_as_keras_does():
    x, y = tiny_data()
    model = tiny_model()
    mine = History()
    returned = model.fit(x, y, epochs=3, batch_size=4, verbose=0, validation_data=(x, y),
                         callbacks=[mine])
    assert isinstance(mine, Callback) and mine is not returned and model.history is returned
    assert mine.epoch == returned.epoch == [0, 1, 2]
    assert mine.history == returned.history
    assert set(mine.history) == {"loss", "acc", "accuracy", "val_loss", "val_acc", "val_accuracy"}
    assert mine.model is model and mine.params["epochs"] == 3
    assert returned.model is model and returned.params["samples"] == 8  # as Keras's own


def test_a_history_in_callbacks_starts_over_with_each_fit():
    x, y = tiny_data()
    model = tiny_model()
    mine = History()
    model.fit(x, y, epochs=2, batch_size=4, verbose=0, callbacks=[mine])
    model.fit(x, y, epochs=4, initial_epoch=2, batch_size=4, verbose=0, callbacks=[mine])
    assert mine.epoch == [2, 3] and len(mine.history["loss"]) == 2
    assert mine.history["loss"] == model.history.history["loss"]


def test_fits_own_history_is_fed_after_the_other_callbacks():
    # Keras's order: a History listed before the scheduler records the logs before
    # the scheduler adds "lr"; fit's own, fed last, has it.
    x, y = tiny_data()
    mine = History()
    returned = tiny_model().fit(x, y, epochs=2, batch_size=4, verbose=0, callbacks=[
        mine, LearningRateScheduler(lambda epoch: 0.1)])
    assert "lr" not in mine.history and returned.history["lr"] == [0.1, 0.1]


def test_history_by_hand_aliases_dict_and_restore():
    history = History()
    history.on_train_begin()
    history.on_epoch_end(0, {"loss": 1.0, "acc": 0.5, "binary_accuracy": 0.25})
    history.on_epoch_end(1, {"loss": 0.5, "acc": 0.75, "binary_accuracy": 0.5})
    assert history.epoch == [0, 1]
    assert history.history["accuracy"] is history.history["acc"] == [0.5, 0.75]
    assert history.as_dict() == {"loss": [1.0, 0.5], "acc": [0.5, 0.75],
                                 "binary_accuracy": [0.25, 0.5]}
    again = History()
    again.restore(history.as_dict())
    assert again.history == history.history and again.epoch == [0, 1]
    assert again.resumed_epochs == 2
    again.on_train_begin()
    assert again.history == {} and again.epoch == [] and again.resumed_epochs == 0


# ------------------------------------------------------------ BaseLogger
BATCHES = [  # (size, loss, acc, a stateful running value)
    (3, 2.0, 1 / 3, 10.0),
    (5, 1.0, 0.6, 11.0),
    (2, 4.0, 0.5, 12.5),
]


def test_base_logger_averages_the_batches_weighted_by_their_size():
    logger = BaseLogger(stateful_metrics=["state"])
    logger.set_params({"metrics": ["loss", "acc", "state", "val_loss"]})
    for epoch in range(2):  # the second epoch starts from zero again
        logger.on_epoch_begin(epoch)
        for batch, (size, loss, acc, state) in enumerate(BATCHES):
            logger.on_batch_end(batch, {"batch": batch, "size": size, "loss": loss,
                                        "acc": acc, "state": state})
        logs = {"loss": -1.0, "val_loss": 0.7}
        logger.on_epoch_end(epoch, logs)
        seen = sum(b[0] for b in BATCHES)
        expected_loss = sum(size * loss for size, loss, _, _ in BATCHES) / seen
        expected_acc = sum(size * acc for size, _, acc, _ in BATCHES) / seen
        assert logs["loss"] == pytest.approx(expected_loss, rel=1e-12)
        assert logs["acc"] == pytest.approx(expected_acc, rel=1e-12)
        assert logs["state"] == 12.5            # stateful: the last value, not averaged
        assert logs["val_loss"] == 0.7          # no batch brought it: left alone
        assert "batch" not in logs and "size" not in logs  # only params["metrics"]


def test_base_logger_in_fit_gives_the_epoch_average_of_the_batch_logs():
    x, y = tiny_data(10)
    seen = []
    spy = LambdaCallback(on_epoch_begin=lambda epoch, logs: seen.clear(),
                         on_batch_end=lambda batch, logs: seen.append(dict(logs)))
    history = tiny_model().fit(x, y, epochs=2, batch_size=4, verbose=0,
                               callbacks=[spy, BaseLogger()])
    assert [b["size"] for b in seen] == [4, 4, 2]
    total = sum(b["size"] for b in seen)
    for key in ("loss", "acc"):
        expected = sum(b[key] * b["size"] for b in seen) / total
        assert_close(history.history[key][-1], expected, rtol=1e-5)


# ------------------------------------------------------------ ProgbarLogger
BAR = re.compile(r"^\s*(\d+)/(\d+) \[[=>. ]*\]")


def bar_lines(text: str) -> list[str]:
    return [line for line in re.split(r"[\r\n]", text) if BAR.match(line)]


def test_progbar_logger_count_mode_is_checked():
    with pytest.raises(ValueError, match=r"ProgbarLogger: unknown count_mode 'batches'"):
        ProgbarLogger(count_mode="batches")


@pytest.mark.parametrize("verbose", [0, 1, 2])
def test_progbar_logger_in_fit_draws_one_bar_per_epoch(capsys, verbose):
    # stdout is not a terminal here, so the bar writes one line per epoch; fit's own
    # bar stays off, so a ProgbarLogger at verbose 1 or 2 does not double it, and at
    # verbose 0 it still draws (it was asked for).
    x, y = tiny_data()
    history = tiny_model().fit(x, y, epochs=2, batch_size=4, verbose=verbose,
                               validation_data=(x, y), callbacks=[ProgbarLogger()])
    out = capsys.readouterr().out
    assert out.count("Epoch 1/2") == 1 and out.count("Epoch 2/2") == 1
    lines = bar_lines(out)
    assert len(lines) == 2 and all(line.startswith("8/8 [") for line in lines)
    for epoch, line in enumerate(lines):  # the epoch's logs, validation included
        for key in ("loss", "acc", "val_loss", "val_acc"):
            shown = float(re.search(rf" - {key}: ([0-9.]+)", line).group(1))
            assert shown == pytest.approx(history.history[key][epoch], abs=5e-5), key


def test_progbar_logger_counts_steps_when_asked(capsys):
    x, y = tiny_data()
    tiny_model().fit(x, y, epochs=1, batch_size=3, verbose=0,
                     callbacks=[ProgbarLogger(count_mode="steps")])
    assert [line.split(" [")[0] for line in bar_lines(capsys.readouterr().out)] == ["3/3"]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progbar_logger_shows_running_averages_while_the_epoch_runs(monkeypatch):
    stream = Terminal()
    monkeypatch.setattr(sys, "stdout", stream)
    logger = ProgbarLogger(stateful_metrics=["state"])
    logger.set_params({"samples": 10, "batch_size": 3, "epochs": 1, "verbose": 1,
                       "metrics": ["loss", "state"]})
    logger.on_train_begin()
    logger.on_epoch_begin(0)
    logger.progbar.interval = 0.0  # draw on every batch
    drawn = []
    for batch, (size, loss, _, state) in enumerate(BATCHES[:2]):
        logger.on_batch_end(batch, {"batch": batch, "size": size, "loss": loss, "state": state})
        drawn.append(stream.getvalue().rsplit("\r", 1)[-1])
    assert drawn[0].startswith(" 3/10 [") and "loss: 2.0000" in drawn[0]
    running = (3 * 2.0 + 5 * 1.0) / 8
    assert drawn[1].startswith(" 8/10 [") and f"loss: {running:.4f}" in drawn[1]
    assert "state: 11.0000" in drawn[1]  # stateful: as the batch left it
    logger.on_batch_end(2, {"batch": 2, "size": 2, "loss": 4.0, "state": 12.5})
    assert stream.getvalue().count("\r") == 2  # the last batch is left to the epoch's end
    logger.on_epoch_end(0, {"loss": 1.7, "state": 12.5})
    final = stream.getvalue().rsplit("\r", 1)[-1]
    assert final.startswith("10/10 [") and final.endswith("loss: 1.7000 - state: 12.5000\n")


def test_progbar_logger_counts_steps_for_a_generator():
    logger = ProgbarLogger()  # count_mode 'samples', but a generator has no sample count
    logger.set_params({"steps": 6, "epochs": 1, "verbose": 2, "metrics": ["loss"]})
    assert logger._epoch_target() == 6
    logger.set_params({"samples": 10, "batch_size": 4, "epochs": 1, "verbose": 2,
                       "metrics": ["loss"]})
    assert logger._epoch_target() == 10
    logger.use_steps = True
    assert logger._epoch_target() == 3


# ------------------------------------------------------------ BackupAndRestore
class Crash(Callback):
    """Fails at the end of one epoch, as a lost machine would."""

    def __init__(self, epoch: int) -> None:
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise RuntimeError("the machine went away")


def run(seed, epochs=4, callbacks=()):
    minicnn.set_seed(seed)
    model = small_model()
    x, y = data()
    history = model.fit(x, y, batch_size=8, epochs=epochs, verbose=0, validation_data=(x, y),
                        callbacks=list(callbacks))
    return model, history


def assert_same_run(model, history, full, full_history):
    assert history.epoch == full_history.epoch == [0, 1, 2, 3]
    assert set(history.history) == set(full_history.history)
    for key, values in full_history.history.items():
        assert_close(history.history[key], values, err_msg=key)
    for key, value in weights(full).items():
        assert_close(weights(model)[key], value, err_msg=key)
    assert model.optimizer.iterations == full.optimizer.iterations == 4 * 5


def test_backup_and_restore_continues_a_crashed_run_and_cleans_up(tmp_path):
    full, full_history = run(7)
    backup = BackupAndRestore(tmp_path / "backup")
    with pytest.raises(RuntimeError, match="the machine went away"):
        run(7, callbacks=[backup, Crash(epoch=1)])  # dies at the end of the 2nd epoch
    assert os.path.exists(backup.checkpoint_path)
    # The crash came before epoch 2's save: the backup holds 1 epoch.
    assert ckpt.load(backup.checkpoint_path, small_model()).epoch == 1
    # Run again in a "new process": another seed, so only the backup can give the same run.
    model, history = run(99, callbacks=[backup])
    assert history.resumed_epochs == 1
    assert_same_run(model, history, full, full_history)
    assert not os.path.exists(backup.checkpoint_path) and not os.path.exists(backup.backup_dir)


def test_backup_and_restore_after_ctrl_c(tmp_path, capsys):
    full, full_history = run(7)
    backup = BackupAndRestore(str(tmp_path / "backup"))
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        ctrl_c = LambdaCallback(on_batch_end=lambda batch, logs: os.kill(
            os.getpid(), signal.SIGINT) if batch == 2 and len(seen) == 2 else None,
            on_epoch_end=lambda epoch, logs: seen.append(epoch))
        seen: list[int] = []
        with pytest.raises(TrainingInterrupted, match=r"SIGINT received in epoch 3 after step "
                           r"3/5.*2 epoch\(s\).*run fit again with the same BackupAndRestore"):
            run(7, callbacks=[backup, ctrl_c])
    finally:
        signal.signal(signal.SIGINT, previous)
    model, history = run(5, callbacks=[BackupAndRestore(tmp_path / "backup")])
    assert history.resumed_epochs == 2
    assert_same_run(model, history, full, full_history)
    assert not os.path.exists(tmp_path / "backup")


def test_backup_without_a_backup_trains_from_the_start_and_keeps_other_files(tmp_path):
    folder = tmp_path / "backup"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    saved = []

    class Spy(Callback):
        def on_epoch_end(self, epoch, logs=None):  # the backup of the epoch before
            saved.append(ckpt.load(folder / "checkpoint.npz", small_model()).epoch)

    full, full_history = run(7)
    model, history = run(7, callbacks=[BackupAndRestore(folder), Spy()])
    assert saved == [0, 1, 2, 3] and history.resumed_epochs == 0
    assert_same_run(model, history, full, full_history)
    assert sorted(os.listdir(folder)) == ["notes.txt"]  # only its own file is removed


@pytest.mark.parametrize("backup_dir", [3, "", None])
def test_backup_dir_must_be_a_path(backup_dir):
    with pytest.raises(ValueError, match=r"BackupAndRestore: backup_dir must be a folder path"):
        BackupAndRestore(backup_dir)


def test_backup_and_a_checkpoint_path_are_refused_together(tmp_path):
    x, y = data()
    model = small_model()
    with pytest.raises(ValueError, match=r"fit: give one place to keep the run"):
        model.fit(x, y, epochs=1, verbose=0, checkpoint=tmp_path / "run.npz",
                  callbacks=[BackupAndRestore(tmp_path / "b")])
    with pytest.raises(ValueError, match=r"got 2 BackupAndRestore"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[BackupAndRestore(tmp_path / "b"),
                                                        BackupAndRestore(tmp_path / "c")])
    assert os.listdir(tmp_path) == [] and model.optimizer.iterations == 0  # nothing ran
