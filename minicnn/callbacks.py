"""Callbacks: code that ``fit`` runs at the start and end of training, epochs and batches.

Keras 2's shape: subclass ``Callback`` and override any of

    on_train_begin(logs)          on_train_end(logs)
    on_epoch_begin(epoch, logs)   on_epoch_end(epoch, logs)
    on_batch_begin(batch, logs)   on_batch_end(batch, logs)

``self.model`` is the model being trained; setting ``self.model.stop_training
= True`` ends ``fit`` after the current epoch. A plain function
``f(epoch, logs)`` also works: it is called at the end of every epoch.
``fit`` checks every callback before the first step, so a wrong one never
costs an epoch of training.

Keras 2.2.4's own callbacks, with its arguments, defaults and semantics:
``History`` (what ``fit`` returns), ``BaseLogger``, ``ProgbarLogger``,
``EarlyStopping``, ``ModelCheckpoint`` (``.npz``), ``LearningRateScheduler``,
``ReduceLROnPlateau`` (both set ``optimizer.lr``), ``TerminateOnNaN``,
``LambdaCallback`` and ``CSVLogger``; tf.keras's ``BackupAndRestore`` (fit's
checkpoints as a callback); ``TensorBoard`` writes TensorBoard's event files
through the optional tensorboardX package; ``ExponentialMovingAverage`` keeps
an average of the weights (tf.keras's optimizer ``use_ema``), the fast
recipes' "lookahead".

A callback with a state that a resumed run needs (PyTorch's names) defines

    state_dict() -> {str: array (any backend) or JSON value}
    load_state_dict(state)

and ``fit(checkpoint=...)`` (or ``BackupAndRestore``) keeps that state in every
checkpoint and hands it back when it resumes, after ``on_train_begin``, to the
callback of the same class at the same place among that class's callbacks;
see ``minicnn.training.checkpoint``. ``ExponentialMovingAverage``,
``EarlyStopping``, ``ReduceLROnPlateau`` and ``ModelCheckpoint`` have one.
"""
from __future__ import annotations

import contextlib
import csv
import inspect
import itertools
import math
import numbers
import os
import warnings
from typing import Any, Callable, Iterable

import numpy as np

from minicnn import backend
from minicnn.progbar import Progbar
from minicnn.serialization import refuse_hdf5

HOOKS = ("on_train_begin", "on_train_end", "on_epoch_begin", "on_epoch_end",
         "on_batch_begin", "on_batch_end")


class Callback:
    """Keras's base class: every hook does nothing until overridden."""

    def __init__(self) -> None:
        self.model: Any = None
        self.params: dict = {}

    def set_model(self, model: Any) -> None:
        self.model = model

    def set_params(self, params: dict) -> None:
        self.params = params

    def on_train_begin(self, logs: dict | None = None) -> None: ...
    def on_train_end(self, logs: dict | None = None) -> None: ...
    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None: ...
    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None: ...
    def on_batch_begin(self, batch: int, logs: dict | None = None) -> None: ...
    def on_batch_end(self, batch: int, logs: dict | None = None) -> None: ...


class _EpochFunction(Callback):
    """A plain function f(epoch, logs), run at the end of every epoch."""

    def __init__(self, function: Callable[[int, dict], Any]) -> None:
        super().__init__()
        self.function = function

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.function(epoch, logs)


class CallbackList:
    """The callbacks of one ``fit``, checked up front and called in order."""

    def __init__(self, callbacks: Iterable[Any] | None, model: Any, params: dict) -> None:
        if callbacks is not None and not isinstance(callbacks, (list, tuple)):
            raise TypeError(f"fit: callbacks must be a list, got {type(callbacks).__name__}")
        self.callbacks = []
        for callback in callbacks or []:
            if any(callable(getattr(callback, hook, None)) for hook in HOOKS):
                self.callbacks.append(callback)
            elif callable(callback):
                self.callbacks.append(_EpochFunction(callback))
            else:
                raise TypeError(f"fit: callback {callback!r} is neither a function "
                                "f(epoch, logs) nor an object with Keras's hooks "
                                f"({', '.join(HOOKS)})")
        for callback in self.callbacks:
            if callable(getattr(callback, "set_model", None)):
                callback.set_model(model)
            else:
                callback.model = model
            if callable(getattr(callback, "set_params", None)):
                callback.set_params(params)

    def wants(self, hook: str) -> bool:
        """Does any callback define ``hook``? (batch hooks cost a host read per step)"""
        return any(callable(getattr(c, hook, None)) and
                   (getattr(type(c), hook, None) is not getattr(Callback, hook, None)
                    or hook in vars(c))  # LambdaCallback's functions live on the instance
                   for c in self.callbacks)

    def call(self, hook: str, *args: Any) -> None:
        for callback in self.callbacks:
            method = getattr(callback, hook, None)
            if callable(method):
                method(*args)


# ------------------------------------------------------------ what Keras's fit adds itself
class History(Callback):
    """Each epoch's logs (Keras 2.2.4): ``epoch`` (the epoch numbers, from 0) and
    ``history`` ({name: [one value per epoch]}), e.g. ``history.history["val_acc"][-1]``.

    ``fit`` returns its own History (also set as ``model.history`` when fit
    starts), fed after every other callback so what they add to the logs (a
    scheduler's ``lr``) is recorded. One passed in ``callbacks=`` records as
    Keras's does: it starts over at ``on_train_begin``. minicnn's extras:
    ``val_accuracy`` and the like name the same list as ``val_acc`` (Keras 2.3+
    spells accuracy out); ``as_dict()`` leaves those aliases out and
    ``restore()`` refills from it (what a checkpoint stores); ``resumed_epochs``
    counts the epochs that came from a checkpoint, not from this fit; and
    ``traces`` holds ``fit(trace_gradients=N)``'s rows, one per layer per
    traced step.
    """

    def __init__(self) -> None:
        super().__init__()
        self.epoch: list[int] = []
        self.history: dict[str, list[float]] = {}
        self.resumed_epochs = 0
        self.traces: list[dict] = []

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.epoch, self.history, self.resumed_epochs = [], {}, 0

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch.append(epoch)
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(value)
            if key.endswith("acc"):
                self.history[key + "uracy"] = self.history[key]

    def as_dict(self) -> dict[str, list[float]]:
        """The logs without the accuracy aliases (what a checkpoint stores)."""
        return {k: v for k, v in self.history.items()  # binary_accuracy etc. are metrics
                if not (k.endswith("accuracy") and self.history.get(k[:-5]) is v)}

    def restore(self, logs: dict[str, list[float]]) -> None:
        """Refill from ``as_dict()`` output, e.g. when resuming from a checkpoint. The
        lists may differ in length (validation_freq): "loss" has one value per epoch."""
        epochs = max((len(values) for values in logs.values()), default=0)
        self.epoch = list(range(epochs))
        for key, values in logs.items():
            self.history[key] = list(values)
            if key.endswith("acc"):
                self.history[key + "uracy"] = self.history[key]
        self.resumed_epochs = epochs


class BaseLogger(Callback):
    """Average the batch logs into the epoch's logs (Keras 2.2.4).

    Each batch's values count with its ``size``, so an epoch's value is the
    sample-weighted mean over its batches; a name in ``stateful_metrics``
    already holds its running value and is taken as the last batch left it.
    At the epoch's end the averages of the names in ``params["metrics"]``
    replace those in the logs. Keras adds one to every ``fit``; minicnn's fit
    averages its epoch logs itself (the same numbers), so this one is only
    needed where code drives the hooks itself or expects the class.
    """

    def __init__(self, stateful_metrics: Iterable[str] | None = None) -> None:
        super().__init__()
        self.stateful_metrics = set(stateful_metrics or ())
        self.seen = 0
        self.totals: dict[str, float] = {}

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.seen = 0
        self.totals = {}

    def on_batch_end(self, batch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        size = logs.get("size", 0)
        self.seen += size
        for key, value in logs.items():
            if key in self.stateful_metrics:
                self.totals[key] = value
            else:
                self.totals[key] = self.totals.get(key, 0) + value * size

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is None:
            return
        for key in self.params.get("metrics", []):
            if key in self.totals:  # shown to the callbacks that come after this one
                logs[key] = (self.totals[key] if key in self.stateful_metrics
                             else self.totals[key] / self.seen)


class ProgbarLogger(Callback):
    """Print ``Epoch i/n`` and Keras's progress bar for every epoch (Keras 2.2.4).

    ``count_mode``: the bar counts ``'samples'`` or ``'steps'`` (batches); a
    generator has no sample count, so there it counts steps either way. While
    an epoch runs the bar shows each metric's average over the batches so far
    (weighted as the bar counts, as Keras's Progbar does; a name in
    ``stateful_metrics`` as the batch left it), and at its end the epoch's logs,
    validation included. The bar is ``minicnn.progbar.Progbar``: at
    ``verbose=1`` it redraws one line in place, or writes one line per epoch
    when stdout is not a terminal; ``verbose=2`` writes that line only.

    Differences from Keras: fit's own bar stays off while a ProgbarLogger is
    among the callbacks (Keras would draw two), and at ``fit(verbose=0)`` it
    draws as at verbose 1 (Keras 2.2.4 fails there: it was asked for, so it
    shows). Batch hooks read each batch's logs back from the device, a cost
    fit's own bar avoids by reading only when it redraws.
    """

    def __init__(self, count_mode: str = "samples",
                 stateful_metrics: Iterable[str] | None = None) -> None:
        super().__init__()
        if count_mode not in ("samples", "steps"):
            raise ValueError(f"ProgbarLogger: unknown count_mode {count_mode!r}; "
                             "use 'samples' or 'steps'")
        self.use_steps = count_mode == "steps"
        self.stateful_metrics = set(stateful_metrics or ())
        self.progbar: Progbar | None = None
        self.target = self.seen = 0
        self.sums: dict[str, list[float]] = {}  # name: [weighted sum, weight], or [value, 1]

    def _epoch_target(self) -> int:
        samples, steps = self.params.get("samples"), self.params.get("steps")
        if steps is None and samples is not None:
            steps = -(-samples // self.params.get("batch_size", samples or 1))
        return steps if self.use_steps or samples is None else samples

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        print(f"Epoch {epoch + 1}/{self.params.get('epochs', epoch + 1)}", flush=True)
        self.target, self.seen, self.sums = self._epoch_target(), 0, {}
        self.progbar = Progbar(self.target, verbose=self.params.get("verbose") or 1)

    def _values(self) -> dict[str, float]:
        return {key: total / max(weight, 1) for key, (total, weight) in self.sums.items()}

    def on_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self.progbar is None:  # a batch hook called without on_epoch_begin
            self.on_epoch_begin(0)
        logs = logs or {}
        step = 1 if self.use_steps or self.params.get("samples") is None else logs.get("size", 0)
        self.seen += step
        for key in self.params.get("metrics", []):
            if key in self.stateful_metrics and key in logs:
                self.sums[key] = [logs[key], 1]
            elif key in logs:
                total, weight = self.sums.get(key, [0.0, 0])
                self.sums[key] = [total + logs[key] * step, weight + step]
        if self.seen < self.target:  # the last batch is drawn by on_epoch_end
            self.progbar.update(self.seen, self._values())

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.progbar is None:
            self.on_epoch_begin(epoch)
        logs = logs or {}
        values = {key: logs[key] for key in self.params.get("metrics", []) if key in logs}
        self.progbar.update(self.seen, values or self._values(), final=True)
        self.progbar = None


class BackupAndRestore(Callback):
    """Keep the run in ``backup_dir`` so a stopped ``fit`` continues (tf.keras's name).

    ``fit`` writes a checkpoint (the file ``checkpoint.npz`` in ``backup_dir``:
    weights, optimizer state, random generators, history, callback states; see
    ``minicnn.training.checkpoint``) before the first epoch and at the end of
    every epoch. When ``fit`` starts and that file exists, it restores it and
    goes on from the saved epoch up to ``epochs`` in total, so a run killed
    (Ctrl-C, an exception, a lost machine) and started again with the same
    callback ends as if it had never stopped. When training ends normally the
    backup is deleted, as in tf.keras; minicnn removes its own file and the
    folder only if that leaves it empty (tf.keras deletes the whole folder).
    It is ``fit(checkpoint=backup_dir/checkpoint.npz, resume=True)`` plus the
    clean-up, so the two cannot be given together. Data-parallel, give it to
    every rank, as tf.keras users do: of the ranks that name one folder, the
    lowest writes the file, resumes from it (giving the others what they need)
    and removes it.
    """

    FILENAME = "checkpoint.npz"

    def __init__(self, backup_dir: str | os.PathLike) -> None:
        super().__init__()
        path = os.fspath(backup_dir) if isinstance(backup_dir, (str, os.PathLike)) else None
        if not isinstance(path, str) or not path:
            raise ValueError(f"BackupAndRestore: backup_dir must be a folder path, "
                             f"got {backup_dir!r}")
        self.backup_dir = path
        self.checkpoint_path = os.path.join(path, self.FILENAME)  # fit saves and resumes here
        # fit sets False on a data-parallel rank whose folder a lower rank writes to
        self.writes = True

    def on_train_end(self, logs: dict | None = None) -> None:
        # Training finished: nothing is left to resume.
        if not self.writes:
            return
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.checkpoint_path)
        with contextlib.suppress(OSError):  # a folder with other files in it stays
            os.rmdir(self.backup_dir)


# ------------------------------------------------------------ Keras 2.2.4's callbacks
def _count(value: Any, owner: str, name: str) -> int:
    """A non-negative int (patience, period, cooldown), else a ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"{owner}: {name} must be an int >= 0, got {value!r}")
    return int(value)


def _improves_upwards(monitor: str, mode: str, owner: str, extra_max: tuple = ()) -> bool:
    """Keras's mode: 'max' (bigger is better), 'min', or 'auto' (max when the name
    holds 'acc'); an unknown mode warns and falls back to auto, as in Keras."""
    if mode not in ("auto", "min", "max"):
        warnings.warn(f"{owner} mode {mode} is unknown, fallback to auto mode.", RuntimeWarning)
        mode = "auto"
    if mode == "auto":
        return "acc" in monitor or monitor.startswith(extra_max)
    return mode == "max"


def _monitored(logs: dict | None, monitor: str, message: str) -> float | None:
    """``logs[monitor]``, or None after Keras's warning naming the metrics there are."""
    value = (logs or {}).get(monitor)
    if value is None:
        warnings.warn(f"{message} conditioned on metric `{monitor}` which is not available. "
                      f"Available metrics are: {','.join(logs or {})}", RuntimeWarning)
    return value


def _take_state(owner: str, state: dict, numbers_: tuple[str, ...], arrays: str = "") -> dict:
    """Check a ``state_dict()`` before anything changes: every key of ``numbers_`` is
    there and a number (inf included); keys starting with ``arrays + '/'`` are arrays."""
    unknown = [k for k in state if k not in numbers_ and not (arrays and k.startswith(arrays + "/"))]
    missing = [k for k in numbers_ if k not in state]
    if unknown or missing:
        raise ValueError(f"{owner}: load_state_dict: the state has keys {sorted(state)}; "
                         f"expected {list(numbers_)}" + (f" and {arrays}/<i>" if arrays else ""))
    for key in numbers_:
        value = state[key]
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ValueError(f"{owner}: load_state_dict: {key} must be a number, got {value!r}")
    return state


class EarlyStopping(Callback):
    """Stop training when ``monitor`` has stopped improving (Keras 2.2.4).

    An epoch improves when the value beats the best so far by more than
    ``min_delta``; once ``patience`` epochs have passed without one, counting
    the current one (Keras's wait >= patience, so patience 0 and 1 both stop
    after the first), training stops. With ``baseline`` the best starts there,
    so training also stops when the model never beats it.
    ``restore_best_weights`` puts back the weights of the best epoch when it
    stops (taken with ``model.get_weights()``; nothing is restored if no epoch
    improved, where Keras 2.2.4 would fail on ``set_weights(None)``).
    """

    def __init__(self, monitor: str = "val_loss", min_delta: float = 0, patience: int = 0,
                 verbose: int = 0, mode: str = "auto", baseline: float | None = None,
                 restore_best_weights: bool = False) -> None:
        super().__init__()
        self.monitor = monitor
        self.baseline = baseline
        self.patience = _count(patience, "EarlyStopping", "patience")
        self.verbose = verbose
        self.wait = 0
        self.stopped_epoch = 0
        self.restore_best_weights = restore_best_weights
        self.best_weights: list | None = None
        self.upwards = _improves_upwards(monitor, mode, "EarlyStopping")
        # Keras keeps min_delta signed by direction: current - min_delta must beat best.
        self.min_delta = abs(min_delta) if self.upwards else -abs(min_delta)
        self.best = -math.inf if self.upwards else math.inf

    def monitor_op(self, a: float, b: float) -> bool:
        return a > b if self.upwards else a < b

    def on_train_begin(self, logs: dict | None = None) -> None:
        # Reset, so one instance can serve several fits (as in Keras).
        self.wait = 0
        self.stopped_epoch = 0
        self.best_weights = None
        if self.baseline is not None:
            self.best = self.baseline
        else:
            self.best = -math.inf if self.upwards else math.inf

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        current = _monitored(logs, self.monitor, "Early stopping")
        if current is None:
            return
        if self.monitor_op(current - self.min_delta, self.best):
            self.best = current
            self.wait = 0
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
        else:
            self.wait += 1
            if self.wait >= self.patience:
                self.stopped_epoch = epoch
                self.model.stop_training = True
                if self.restore_best_weights and self.best_weights is not None:
                    if self.verbose > 0:
                        print("Restoring model weights from the end of the best epoch")
                    self.model.set_weights(self.best_weights)

    def on_train_end(self, logs: dict | None = None) -> None:
        if self.stopped_epoch > 0 and self.verbose > 0:
            print(f"Epoch {self.stopped_epoch + 1:05d}: early stopping")

    def state_dict(self) -> dict[str, Any]:
        """The waiting so far, for fit's checkpoints: ``best``, ``wait``, ``stopped_epoch``
        and (with ``restore_best_weights``) the best epoch's weights, ``best_weights/<i>``."""
        state: dict[str, Any] = {"best": float(self.best), "wait": int(self.wait),
                                 "stopped_epoch": int(self.stopped_epoch)}
        for i, weight in enumerate(self.best_weights or []):
            state[f"best_weights/{i}"] = weight
        return state

    def load_state_dict(self, state: dict) -> None:
        """Go on waiting where ``state_dict()`` left off (its weights checked against the model's)."""
        _take_state("EarlyStopping", state, ("best", "wait", "stopped_epoch"), "best_weights")
        saved = [state.get(f"best_weights/{i}") for i in range(len(state) - 3)]
        shapes = [tuple(np.shape(w)) for w in self.model.get_weights()]
        if saved and (any(w is None for w in saved)
                      or [tuple(np.shape(w)) for w in saved] != shapes):
            raise ValueError(f"EarlyStopping: load_state_dict: the state's best weights "
                             f"{sorted(k for k in state if k.startswith('best_weights/'))} do not "
                             f"match the model's {len(shapes)} weights of shapes {shapes}")
        self.best, self.wait = float(state["best"]), int(state["wait"])
        self.stopped_epoch = int(state["stopped_epoch"])
        self.best_weights = [np.array(backend.to_host(w)) for w in saved] or None


class ModelCheckpoint(Callback):
    """Save the weights after every ``period`` epochs (Keras 2.2.4).

    ``filepath`` may hold ``{epoch}`` (counted from 1, as Keras) and any key of
    the epoch's logs: ``"weights.{epoch:02d}-{val_loss:.2f}.npz"``. With
    ``save_best_only`` a file is written only when ``monitor`` improves on its
    best. ``save_weights_only=False`` (Keras's default) writes the whole model
    (``model.save``: architecture, weights, compile arguments and optimizer
    state, read back by ``minicnn.models.load_model``); True writes the weights
    only (``model.save_weights``). Either way the file is an ``.npz`` archive.
    """

    def __init__(self, filepath: str | os.PathLike, monitor: str = "val_loss", verbose: int = 0,
                 save_best_only: bool = False, save_weights_only: bool = False,
                 mode: str = "auto", period: int = 1) -> None:
        super().__init__()
        self.filepath = os.fspath(filepath)
        refuse_hdf5(self.filepath, "ModelCheckpoint")
        self.monitor = monitor
        self.verbose = verbose
        self.save_best_only = save_best_only
        self.save_weights_only = save_weights_only
        self.period = _count(period, "ModelCheckpoint", "period")
        self.epochs_since_last_save = 0
        self.upwards = _improves_upwards(monitor, mode, "ModelCheckpoint", ("fmeasure",))
        self.best = -math.inf if self.upwards else math.inf

    def monitor_op(self, a: float, b: float) -> bool:
        return a > b if self.upwards else a < b

    def format_path(self, epoch: int, logs: dict) -> str:
        try:
            return self.filepath.format(epoch=epoch + 1, **logs)
        except KeyError as exc:
            raise KeyError(f"ModelCheckpoint: filepath {self.filepath!r} names {exc}, which "
                           f"this epoch's logs lack; they hold epoch, "
                           f"{', '.join(logs)}") from None

    def _save(self, filepath: str) -> None:
        if self.save_weights_only:
            self.model.save_weights(filepath)
        else:
            self.model.save(filepath, overwrite=True)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        self.epochs_since_last_save += 1
        if self.epochs_since_last_save < self.period:
            return
        self.epochs_since_last_save = 0
        filepath = self.format_path(epoch, logs)
        if not self.save_best_only:
            if self.verbose > 0:
                print(f"\nEpoch {epoch + 1:05d}: saving model to {filepath}")
            self._save(filepath)
            return
        current = logs.get(self.monitor)
        if current is None:
            warnings.warn(f"Can save best model only with {self.monitor} available, skipping.",
                          RuntimeWarning)
        elif self.monitor_op(current, self.best):
            if self.verbose > 0:
                print(f"\nEpoch {epoch + 1:05d}: {self.monitor} improved from {self.best:0.5f} "
                      f"to {current:0.5f}, saving model to {filepath}")
            self.best = current
            self._save(filepath)
        elif self.verbose > 0:
            print(f"\nEpoch {epoch + 1:05d}: {self.monitor} did not improve from "
                  f"{self.best:0.5f}")

    def state_dict(self) -> dict[str, Any]:
        """``best`` and ``epochs_since_last_save``, for fit's checkpoints: a resumed run
        overwrites its best file only with a better epoch, and keeps to ``period``."""
        return {"best": float(self.best), "epochs_since_last_save": int(self.epochs_since_last_save)}

    def load_state_dict(self, state: dict) -> None:
        _take_state("ModelCheckpoint", state, ("best", "epochs_since_last_save"))
        self.best = float(state["best"])
        self.epochs_since_last_save = int(state["epochs_since_last_save"])


def _takes_two_arguments(function: Callable) -> bool:
    """Can ``function`` be called as f(epoch, lr)? (Keras tries that first)"""
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):  # no signature (some builtins): assume the new form
        return True
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 2 or any(p.kind == p.VAR_POSITIONAL for p in parameters)


class LearningRateScheduler(Callback):
    """Set the optimizer's learning rate before every epoch (Keras 2.2.4).

    ``schedule(epoch, lr)`` (epoch counted from 0, lr the current rate) or the
    older ``schedule(epoch)`` returns the new rate, a float. Keras tries the
    two-argument call first and falls back on a TypeError; minicnn reads the
    function's signature to choose, so a TypeError raised inside the schedule is
    not mistaken for the old form. The rate is the optimizer's ``lr`` (its
    ``decay``, if any, still applies on top).
    """

    def __init__(self, schedule: Callable, verbose: int = 0) -> None:
        super().__init__()
        if not callable(schedule):
            raise TypeError(f"LearningRateScheduler: schedule must be a function "
                            f"schedule(epoch, lr) or schedule(epoch), got {schedule!r}")
        self.schedule = schedule
        self.verbose = verbose

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        optimizer = getattr(self.model, "optimizer", None)
        if not hasattr(optimizer, "lr"):
            raise ValueError('Optimizer must have a "lr" attribute.')
        lr = float(optimizer.lr)
        if _takes_two_arguments(self.schedule):
            lr = self.schedule(epoch, lr)
        else:
            lr = self.schedule(epoch)
        if not isinstance(lr, numbers.Real) or isinstance(lr, numbers.Integral):  # as Keras
            raise ValueError(f'LearningRateScheduler: the output of the "schedule" function '
                             f"should be float, got {lr!r} for epoch {epoch}")
        optimizer.lr = float(lr)
        if self.verbose > 0:
            print(f"\nEpoch {epoch + 1:05d}: LearningRateScheduler setting learning "
                  f"rate to {optimizer.lr}.")

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None:
            logs["lr"] = self.model.optimizer.lr


class ReduceLROnPlateau(Callback):
    """Multiply the learning rate by ``factor`` when ``monitor`` stalls (Keras 2.2.4).

    After ``patience`` epochs without an improvement of more than ``min_delta``
    the rate becomes max(lr * factor, min_lr) (a rate already at or below
    min_lr is left alone). ``cooldown`` then holds the waiting off; as in Keras
    the counter goes down before the comparison, so cooldown=c skips c - 1
    epochs entirely.
    """

    def __init__(self, monitor: str = "val_loss", factor: float = 0.1, patience: int = 10,
                 verbose: int = 0, mode: str = "auto", min_delta: float = 1e-4,
                 cooldown: int = 0, min_lr: float = 0) -> None:
        super().__init__()
        if factor >= 1.0:
            raise ValueError("ReduceLROnPlateau does not support a factor >= 1.0.")
        self.monitor = monitor
        self.factor = factor
        self.min_lr = min_lr
        self.min_delta = min_delta
        self.patience = _count(patience, "ReduceLROnPlateau", "patience")
        self.verbose = verbose
        self.cooldown = _count(cooldown, "ReduceLROnPlateau", "cooldown")
        self.mode = mode
        self.upwards = _improves_upwards(monitor, mode, "Learning Rate Plateau Reducing")
        self._reset()

    def _reset(self) -> None:
        self.best = -math.inf if self.upwards else math.inf
        self.cooldown_counter = 0
        self.wait = 0

    def monitor_op(self, a: float, b: float) -> bool:
        return a > b + self.min_delta if self.upwards else a < b - self.min_delta

    def in_cooldown(self) -> bool:
        return self.cooldown_counter > 0

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._reset()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        optimizer = self.model.optimizer
        if logs is not None:
            logs["lr"] = optimizer.lr
        current = _monitored(logs, self.monitor, "Reduce LR on plateau")
        if current is None:
            return
        if self.in_cooldown():
            self.cooldown_counter -= 1
            self.wait = 0
        if self.monitor_op(current, self.best):
            self.best = current
            self.wait = 0
        elif not self.in_cooldown():
            self.wait += 1
            if self.wait >= self.patience:
                old_lr = float(optimizer.lr)
                if old_lr > self.min_lr:
                    optimizer.lr = max(old_lr * self.factor, self.min_lr)
                    if self.verbose > 0:
                        print(f"\nEpoch {epoch + 1:05d}: ReduceLROnPlateau reducing "
                              f"learning rate to {optimizer.lr}.")
                    self.cooldown_counter = self.cooldown
                    self.wait = 0

    def state_dict(self) -> dict[str, Any]:
        """``best``, ``wait`` and ``cooldown_counter``, for fit's checkpoints (the learning
        rate itself is the optimizer's, which the checkpoint keeps)."""
        return {"best": float(self.best), "wait": int(self.wait),
                "cooldown_counter": int(self.cooldown_counter)}

    def load_state_dict(self, state: dict) -> None:
        _take_state("ReduceLROnPlateau", state, ("best", "wait", "cooldown_counter"))
        self.best, self.wait = float(state["best"]), int(state["wait"])
        self.cooldown_counter = int(state["cooldown_counter"])


class TerminateOnNaN(Callback):
    """Stop training when a batch's loss is NaN or infinite (Keras 2.2.4)."""

    def on_batch_end(self, batch: int, logs: dict | None = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            print(f"Batch {batch}: Invalid loss, terminating training")
            self.model.stop_training = True


class LambdaCallback(Callback):
    """A callback made of plain functions (Keras 2.2.4): ``on_epoch_begin(epoch,
    logs)``, ``on_epoch_end(epoch, logs)``, ``on_batch_begin(batch, logs)``,
    ``on_batch_end(batch, logs)``, ``on_train_begin(logs)``, ``on_train_end(logs)``.
    Only the hooks given are set, so no batch function means no per-batch cost."""

    def __init__(self, on_epoch_begin: Callable | None = None,
                 on_epoch_end: Callable | None = None, on_batch_begin: Callable | None = None,
                 on_batch_end: Callable | None = None, on_train_begin: Callable | None = None,
                 on_train_end: Callable | None = None, **kwargs: Any) -> None:
        super().__init__()
        self.__dict__.update(kwargs)  # Keras keeps extra keywords as attributes
        given = {"on_epoch_begin": on_epoch_begin, "on_epoch_end": on_epoch_end,
                 "on_batch_begin": on_batch_begin, "on_batch_end": on_batch_end,
                 "on_train_begin": on_train_begin, "on_train_end": on_train_end}
        for hook, function in given.items():
            if function is None:
                continue
            if not callable(function):
                raise TypeError(f"LambdaCallback: {hook} must be a function, got {function!r}")
            setattr(self, hook, function)


class CSVLogger(Callback):
    """Write each epoch's logs to a CSV file (Keras 2.2.4): a header ``epoch`` and
    the sorted log keys, then one row per epoch (epoch counted from 0, as Keras).
    Rows are written and flushed one by one, as Keras does, so the file holds
    every finished epoch even if training stops early; ``append=True`` adds to an
    existing file (its header only if the file is empty). An epoch ended by
    ``stop_training`` writes NA for the keys it lacks (a batch-level stop skips
    validation)."""

    def __init__(self, filename: str | os.PathLike, separator: str = ",",
                 append: bool = False) -> None:
        super().__init__()
        self.sep = separator
        self.filename = os.fspath(filename)
        self.append = append
        self.writer: csv.DictWriter | None = None
        self.keys: list[str] | None = None
        self.append_header = True
        self.csv_file: Any = None

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.writer, self.keys, self.append_header = None, None, True
        if self.append and os.path.exists(self.filename):
            with open(self.filename, "r") as f:
                self.append_header = not f.readline()
        self.csv_file = open(self.filename, "a" if self.append else "w", newline="\n")

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        if self.keys is None:
            self.keys = sorted(logs)
        if self.model is not None and getattr(self.model, "stop_training", False):
            logs = {key: logs.get(key, "NA") for key in self.keys}
        if self.writer is None:
            dialect = type("CustomDialect", (csv.excel,), {"delimiter": self.sep})
            self.writer = csv.DictWriter(self.csv_file, fieldnames=["epoch"] + self.keys,
                                         dialect=dialect)
            if self.append_header:
                self.writer.writeheader()
        self.writer.writerow({"epoch": epoch, **{key: logs[key] for key in self.keys}})
        self.csv_file.flush()

    def on_train_end(self, logs: dict | None = None) -> None:
        if self.csv_file is not None:
            self.csv_file.close()
        self.csv_file, self.writer = None, None


# ------------------------------------------------------------ TensorBoard
TRACE_STATISTICS = ("act_mean", "act_std", "dead_relu", "grad_norm", "update_ratio")
_WRITERS = itertools.count()  # event files this process has opened


class TensorBoard(Callback):
    """Write TensorBoard's event files (Keras 2.2.4's arguments), through tensorboardX.

    What goes into ``log_dir`` (view it with ``tensorboard --logdir DIR``):

    * the logs as scalars under their own names (``loss``, ``acc``, ``val_loss``,
      ``val_acc``, ``lr`` when a scheduler put it there): once per epoch at step
      ``epoch``; with ``update_freq='batch'`` (or an int: every that many
      samples) the batch logs too, and then every scalar's step is the number of
      samples seen, as in Keras;
    * every ``histogram_freq`` epochs (epochs 0, f, 2f, ...; step ``epoch``): a
      histogram of each weight, ``conv2d_1/kernel_0``, and with ``write_grads``
      of its gradient from the epoch's last step, ``conv2d_1/kernel_0_grad``;
    * ``write_images``: each 4-D kernel as one image grid (a row per input
      channel, a column per filter, one kh x kw cell each, one black pixel
      between cells) and each Dense kernel as an image (wider than tall),
      mid-gray for 0, black and white for -max|W| and +max|W|; every
      ``histogram_freq`` epochs, or every epoch when that is 0;
    * ``fit(trace_gradients=N)``'s statistics (``minicnn.training.tracing``) as
      scalars ``grad_norm/conv2d_1``, ``update_ratio/...``, ``act_mean/...``,
      ``act_std/...``, ``dead_relu/...``, at the training step they were taken;
    * ``write_graph``: TensorBoard's graph view needs a TensorFlow graph, which
      minicnn does not have; the ``model.summary()`` table is written as text
      instead (the TEXT tab; tensorboardX tags it ``model_summary/text_summary``).

    Differences from Keras: histograms are of the weights themselves, so no
    validation data is needed and ``batch_size`` (Keras's batch for running the
    validation data through its summary ops) is only checked; no activation
    histograms; embeddings are not supported (``embeddings_freq > 0`` and the
    other ``embeddings_*`` arguments are refused). Each fit writes its own
    event file (named with the time, the host, the process and a count, so two
    runs in one second do not overwrite each other), flushed at the end of every
    epoch and closed at the end of training.
    """

    def __init__(self, log_dir: str | os.PathLike = "./logs", histogram_freq: int = 0,
                 batch_size: int = 32, write_graph: bool = True, write_grads: bool = False,
                 write_images: bool = False, embeddings_freq: int = 0,
                 embeddings_layer_names: Any = None, embeddings_metadata: Any = None,
                 embeddings_data: Any = None, update_freq: str | int = "epoch") -> None:
        super().__init__()
        try:
            import tensorboardX
        except ImportError:
            raise ImportError('TensorBoard needs the tensorboardX package: pip install '
                              '"minicnn[tensorboard]" (or pip install tensorboardX)') from None
        self._summary_writer = tensorboardX.SummaryWriter
        if embeddings_freq or any(value is not None for value in (
                embeddings_layer_names, embeddings_metadata, embeddings_data)):
            raise ValueError("TensorBoard: embeddings are not supported in minicnn: leave "
                             "embeddings_freq=0 and embeddings_layer_names, "
                             "embeddings_metadata, embeddings_data at None")
        self.log_dir = os.fspath(log_dir)
        self.histogram_freq = _count(histogram_freq, "TensorBoard", "histogram_freq")
        if (isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral)
                or batch_size < 1):
            raise ValueError(f"TensorBoard: batch_size must be a positive int, got {batch_size!r}")
        self.batch_size = int(batch_size)
        if update_freq == "batch":
            update_freq = 1  # as Keras: write after every batch
        elif update_freq != "epoch" and (isinstance(update_freq, bool) or not isinstance(
                update_freq, numbers.Integral) or update_freq < 1):
            raise ValueError("TensorBoard: update_freq must be 'batch', 'epoch' or a positive "
                             f"number of samples, got {update_freq!r}")
        self.update_freq = update_freq
        self.write_graph, self.write_grads = bool(write_graph), bool(write_grads)
        self.write_images = bool(write_images)
        self.embeddings_freq = 0
        self.writer: Any = None
        self.samples_seen = self.samples_seen_at_last_write = 0
        self._traces_written = 0
        if self.update_freq != "epoch":
            # Only then a batch hook: fit reads the batch's logs back from the
            # device for batch hooks, a cost an epoch-only log should not pay.
            self.on_batch_end = self._on_batch_end

    def on_train_begin(self, logs: dict | None = None) -> None:
        if self.writer is None:
            # tensorboardX names the file by the second and the host only: the
            # process and a count keep two writers of one second apart.
            self.writer = self._summary_writer(
                logdir=self.log_dir, filename_suffix=f".{os.getpid()}.{next(_WRITERS)}")
        self._traces_written = 0  # fit starts a new history, and its trace rows with it
        if self.write_graph and self.model is not None:
            lines: list[str] = []
            self.model.summary(print_fn=lines.append)
            # Indented lines are preformatted in the TEXT tab's Markdown: columns stay aligned.
            self.writer.add_text("model_summary", "\n".join("    " + line for line in lines), 0)

    def _write_logs(self, logs: dict, index: int) -> None:
        for name, value in logs.items():
            if name in ("batch", "size") or isinstance(value, bool) or not isinstance(
                    value, numbers.Real):
                continue
            self.writer.add_scalar(name, float(value), index)

    def _on_batch_end(self, batch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        self.samples_seen += int(logs.get("size", 0))
        if self.samples_seen - self.samples_seen_at_last_write >= self.update_freq:
            self._write_logs(logs, self.samples_seen)
            self.samples_seen_at_last_write = self.samples_seen

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.writer is None:  # an epoch hook called without on_train_begin
            self.on_train_begin()
        self._write_logs(logs or {}, epoch if self.update_freq == "epoch" else self.samples_seen)
        histograms = self.histogram_freq and epoch % self.histogram_freq == 0
        if histograms:
            self._write_histograms(epoch)
        if self.write_images and (histograms or not self.histogram_freq):
            self._write_images(epoch)
        self._write_traces()
        self.writer.flush()

    def _layers_weights(self):
        """(layer, weight name, Keras's tag) for each weight of each built layer."""
        for layer in getattr(self.model, "layers", []):
            for name in layer.params:
                yield layer, name, f"{layer.name}/{name}_0"  # Keras: 'conv2d_1/kernel:0'

    def _write_histograms(self, epoch: int) -> None:
        for layer, name, tag in self._layers_weights():
            self.writer.add_histogram(tag, _host(layer.params[name]), epoch)
            grad = layer.grads.get(name) if self.write_grads else None
            if grad is not None:
                self.writer.add_histogram(tag + "_grad", _host(grad), epoch)

    def _write_images(self, epoch: int) -> None:
        for layer, name, tag in self._layers_weights():
            if name == "kernel" and layer.params[name].ndim in (2, 4):
                image = kernel_image(_host(layer.params[name]))
                self.writer.add_image(tag, image, epoch, dataformats="HW")

    def _write_traces(self) -> None:
        """The new rows of fit(trace_gradients=N), at their global training step."""
        history = getattr(self.model, "history", None)
        rows = getattr(history, "traces", None) or []
        steps = self.params.get("steps")  # a generator's run has steps, no samples
        if steps is None:
            steps = -(-self.params.get("samples", 0) // self.params.get("batch_size", 1))
        for row in rows[self._traces_written:]:
            step = (row["epoch"] - 1) * steps + row["step"]
            for key in TRACE_STATISTICS:
                value = row.get(key)
                if value is not None and math.isfinite(value):
                    self.writer.add_scalar(f"{key}/{row['layer']}", value, step)
        self._traces_written = len(rows)

    def on_train_end(self, logs: dict | None = None) -> None:
        if self.writer is not None:
            self.writer.close()
        self.writer = None


def _host(array: Any) -> np.ndarray:
    """A NumPy copy of a weight or gradient on any backend (histograms are made on the host)."""
    return np.asarray(backend.to_host(array), dtype=np.float64)


def kernel_image(kernel: np.ndarray) -> np.ndarray:
    """A weight as a uint8 picture: 128 + 127 * w / max|w|.

    A Dense kernel (in, out) becomes an image, transposed when taller than wide
    (as Keras does); a convolution kernel (kh, kw, c_in, filters) a grid with a
    row per input channel and a column per filter, each cell kh x kw, with one
    black pixel between cells.
    """
    w = np.asarray(kernel, dtype=np.float64)
    scale = float(np.abs(w).max()) or 1.0
    gray = np.rint(128 + 127 * w / scale).astype(np.uint8)
    if gray.ndim == 2:
        return gray.T if gray.shape[0] > gray.shape[1] else gray
    kh, kw, c_in, filters = gray.shape
    grid = np.zeros((c_in * (kh + 1) - 1, filters * (kw + 1) - 1), dtype=np.uint8)
    for c in range(c_in):
        for f in range(filters):
            grid[c * (kh + 1):c * (kh + 1) + kh, f * (kw + 1):f * (kw + 1) + kw] = gray[:, :, c, f]
    return grid


class ExponentialMovingAverage(Callback):
    """An exponential moving average of the weights, pulled back into the model (tf.keras's
    optimizer ``use_ema`` / ``ema_momentum`` / ``ema_overwrite_frequency``, as a callback;
    with equal frequencies it is the "lookahead" of fast CIFAR-10 recipes).

    At the start of training the average e is a copy of every weight w. After every
    ``update_frequency``-th update (t = ``optimizer.iterations``, counted over all
    of the optimizer's updates) each pair moves

        e = m e + (1 - m) w,   m = momentum, or momentum(t) when it is a function

    and after every ``overwrite_frequency``-th update (None: never during training)
    w = e. At the end of training w = e. ``include_non_trainable`` (the default)
    averages the weights no optimizer touches too: BatchNormalization's moving
    mean and variance, frozen layers.

    The average is part of ``fit``'s checkpoints (``state_dict()``: a host copy of
    each average, keyed ``<layer position>/<weight>``, so a model rebuilt with other
    layer names takes it; ``load_state_dict``), so a resumed run goes on exactly.
    """

    def __init__(self, momentum: float | Callable[[int], float] = 0.99,
                 update_frequency: int = 1, overwrite_frequency: int | None = None,
                 include_non_trainable: bool = True) -> None:
        super().__init__()
        owner = "ExponentialMovingAverage"
        if not callable(momentum):
            momentum = self._momentum(momentum)
        self.momentum = momentum
        self.update_frequency = _count(update_frequency, owner, "update_frequency")
        if self.update_frequency < 1:
            raise ValueError(f"{owner}: update_frequency must be >= 1, got {update_frequency!r}")
        if overwrite_frequency is not None:
            overwrite_frequency = _count(overwrite_frequency, owner, "overwrite_frequency")
            if overwrite_frequency < 1:
                raise ValueError(f"{owner}: overwrite_frequency must be >= 1 or None, "
                                 f"got {overwrite_frequency!r}")
        self.overwrite_frequency = overwrite_frequency
        self.include_non_trainable = bool(include_non_trainable)
        self.averages: dict[tuple[str, str], Any] = {}

    @staticmethod
    def _momentum(value: Any, step: int | None = None) -> float:
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and 0.0 <= value <= 1.0
        if not ok:
            at = "" if step is None else f"(momentum({step}))"
            raise ValueError(f"ExponentialMovingAverage: momentum{at} must be a number in "
                             f"[0, 1], got {value!r}")
        return float(value)

    def _weights(self) -> list[tuple[tuple[str, str], Any]]:
        pairs = []
        for layer in self.model.layers:
            names = layer.params if self.include_non_trainable else layer.trained_params()
            pairs += [((layer.name, name), layer.params[name]) for name in names]
        return pairs

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.averages = {key: w.copy() for key, w in self._weights()}

    def state_dict(self) -> dict[str, np.ndarray]:
        """Host copies of the averages, keyed ``<layer position>/<weight>``."""
        position = {layer.name: i for i, layer in enumerate(self.model.layers)}
        return {f"{position[layer]}/{name}": np.array(backend.to_host(e))
                for (layer, name), e in self.averages.items()}

    def load_state_dict(self, state: dict) -> None:
        """Take the averages of ``state_dict()``, every key and shape checked first."""
        owner, layers = "ExponentialMovingAverage", self.model.layers
        averages = {}
        for key, value in state.items():
            index, _, name = key.partition("/")
            layer = layers[int(index)] if index.isdigit() and int(index) < len(layers) else None
            weight = layer.params.get(name) if layer is not None else None
            shape = getattr(value, "shape", None)
            if weight is None or shape != tuple(weight.shape):
                raise ValueError(f"{owner}: load_state_dict: the state's average {key!r} "
                                 f"(shape {shape}) fits no weight of the model (keys are "
                                 "<layer position>/<weight name>)")
            averages[(layer.name, name)] = backend.to_device(value, dtype=weight.dtype).copy()
        missing = [f"{layer}/{name}" for (layer, name), _ in self._weights()
                   if (layer, name) not in averages]
        if missing:
            raise ValueError(f"{owner}: load_state_dict: the state has no average of "
                             f"{missing[0]} (is include_non_trainable the same as when it "
                             "was saved?)")
        self.averages = averages

    def on_batch_end(self, batch: int, logs: dict | None = None) -> None:
        t = int(self.model.optimizer.iterations)
        if t % self.update_frequency == 0:
            m = self._momentum(self.momentum(t), t) if callable(self.momentum) else self.momentum
            for key, w in self._weights():
                e = self.averages[key]
                e *= m  # in place: e = m e + (1 - m) w
                e += (1.0 - m) * w
        if self.overwrite_frequency is not None and t % self.overwrite_frequency == 0:
            self.copy_to_model()

    def on_train_end(self, logs: dict | None = None) -> None:
        self.copy_to_model()

    def copy_to_model(self) -> None:
        """w = e for every averaged weight, in place (the optimizer's slots stay keyed to w)."""
        for key, w in self._weights():
            w[...] = self.averages[key]
