"""``fit``'s loop: epochs of shuffled batches, validation, callbacks, checkpoints.

A ``Trainer`` holds one run's state (data, generator, progress bar, tracer,
checkpoint path, stop flag) so each part of the loop reads it from one place.
It works on any model with Sequential's step API and never imports it. The
batches come from a source of ``minicnn.training.batches``: arrays, or a
Python generator or Sequence.

In a data-parallel run (the optimizer averages over the ranks) the ranks
agree before the first epoch and pass the checkpoints together: every rank's
random streams (shuffling, dropout) go into the writer's checkpoint, and the
rank that resumes gives each rank its streams back, with its callbacks'
states and learning rate, so that a resumed run goes on as the uninterrupted
one would.

``validation_freq`` (Keras 2.2.5): validate after epoch e (counted from 1)
when e % freq == 0 for an int, or when e is in it for a list; the val_ logs
are only in the epochs that validated, so History's val_ lists are shorter.
"""
from __future__ import annotations

import contextlib
import os
import warnings
from typing import Any, Callable

import numpy as np

from minicnn import backend, distributed
from minicnn.backend import Array
from minicnn.training import checkpoint as checkpoint_io
from minicnn.training.batches import Arrays, Stream
from minicnn.callbacks import BackupAndRestore, CallbackList, History, ProgbarLogger
from minicnn.training.interrupts import TrainingDiverged, TrainingInterrupted, deferred_signals
from minicnn.progbar import Progbar
from minicnn.training.step import train_step
from minicnn.training.tracing import GradientTracer


Source = Arrays | Stream  # where the batches come from


def check_validation_freq(value: Any, where: str) -> int | tuple[int, ...]:
    """Keras's validation_freq: an int >= 1, or a list or tuple of epoch numbers (from 1)."""
    def whole(v: Any) -> bool:
        return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

    if whole(value) and value >= 1:
        return int(value)
    if isinstance(value, (list, tuple, range, set, frozenset)) and all(whole(v) for v in value):
        return tuple(sorted(int(v) for v in value))
    raise ValueError(f"{where}: validation_freq must be an int >= 1 (validate every that many "
                     f"epochs) or a list of epoch numbers counted from 1, got {value!r}")


def validates(freq: int | tuple[int, ...], epoch: int) -> bool:
    """Does epoch ``epoch`` (counted from 0) end with validation?"""
    return (epoch + 1) % freq == 0 if isinstance(freq, int) else epoch + 1 in freq


def finite_check_interval(model: Any, x: Array | None) -> int:
    """Steps between divergence checks: each one reads a value back to the host,
    free on the CPU but a stall on the GPU, so there it runs every 20 steps
    (and always on an epoch's last step, before a checkpoint is written)."""
    if model.check_finite_every:
        return model.check_finite_every
    return 20 if backend.is_device_array(x) else 1


class Trainer:
    """One ``fit`` run on checked data (see ``Sequential.fit`` for the arguments):
    training batches from ``data``, validation (if any) from ``validation``."""

    def __init__(self, model: Any, data: Source, *, epochs: int, verbose: int,
                 callbacks: list | None, validation: Source | None,
                 validation_freq: int | tuple[int, ...], shuffle: bool, initial_epoch: int,
                 checkpoint: str | os.PathLike | Callable | None, resume: bool,
                 trace_gradients: int) -> None:
        self.model, self.data, self.validation = model, data, validation
        self.epochs, self.verbose, self.shuffle = epochs, verbose, shuffle
        self.validation_freq = validation_freq
        self.initial_epoch, self.resume = initial_epoch, resume
        metrics = list(model.metrics_names)
        # Keras's params: batch_size and samples for arrays, steps for generators.
        params = {**data.params, "epochs": epochs,
                  "verbose": verbose, "do_validation": validation is not None,
                  "metrics": metrics + (["val_" + m for m in metrics] if validation is not None
                                        else [])}
        self.callbacks = CallbackList(callbacks, model, params)
        # A ProgbarLogger draws the bar instead of fit (Keras would draw both).
        self.own_bar = not any(isinstance(c, ProgbarLogger) for c in self.callbacks.callbacks)
        self.rng = backend.device_rng()
        self.ranks = distributed.size() if distributed.is_distributed(model.optimizer) else 1
        self.gathers = False  # data-parallel with a checkpoint file: see agree_on_files
        self.writes = True  # False on a rank whose checkpoint file a lower rank writes
        self.history = History()  # fed by hand after the other callbacks, never reset
        self.history.set_model(model)
        self.history.set_params(params)
        self.tracer = GradientTracer(trace_gradients) if trace_gradients else None
        self.history.traces = self.tracer.rows if self.tracer is not None else []
        backups = [c for c in self.callbacks.callbacks if isinstance(c, BackupAndRestore)]
        if len(backups) > 1 or (backups and checkpoint is not None):
            raise ValueError("fit: give one place to keep the run: checkpoint=PATH or one "
                             f"BackupAndRestore callback, got {len(backups)} BackupAndRestore "
                             f"and checkpoint={checkpoint!r}")
        self.backup = backups[0] if backups else None
        if self.backup is not None:  # fit does the saving and resuming; the callback cleans up
            checkpoint, self.resume = self.backup.checkpoint_path, True
        self.checkpoint = checkpoint
        self.path = None if checkpoint is None or callable(checkpoint) else os.fspath(checkpoint)
        if self.resume and self.path is None:
            raise ValueError("fit: resume=True needs checkpoint=PATH to resume from")
        # Callbacks with state_dict/load_state_dict keep their state in the checkpoint.
        self.stateful = [c for c in self.callbacks.callbacks if checkpoint_io.has_state(c)]
        self.steps = data.steps
        self.check_every = finite_check_interval(model, data.sample)
        self.stop = None  # the signal flag, while run() is under way

    def save(self, epochs_done: int, before_training: bool = False) -> None:
        """The checkpoint after ``epochs_done`` epochs: the file, or the callable (which
        is called after epochs only). Data-parallel, every rank comes here together."""
        rank_streams = distributed.comm().allgather(
            checkpoint_io.random_state(self.model, self.rng)) if self.gathers else None
        if callable(self.checkpoint):
            if not before_training:
                self.checkpoint(self.model, epochs_done, self.history)
        elif self.checkpoint is not None and self.writes:
            checkpoint_io.save(self.checkpoint, self.model, epochs_done, self.history, self.rng,
                               callbacks=self.stateful, rank_streams=rank_streams)

    def agree_on_files(self) -> None:
        """Data-parallel, every rank, before any reads its checkpoint: sets ``gathers``,
        does any rank write a checkpoint file (then every checkpoint gathers all ranks'
        streams)? And ``writes``: ranks that name one file (BackupAndRestore given to
        every rank, as tf.keras users do) leave it to the lowest of them, which alone
        writes it, resumes from it and removes it at the end; the others take what
        they need from that rank (agree_on_resume, BroadcastWeights)."""
        rank = distributed.rank()
        mine = None if self.path is None else os.path.realpath(self.path)
        paths = distributed.comm().allgather(mine)
        self.gathers = any(path is not None for path in paths)
        self.writes = mine is None or mine not in paths[:rank]

    def agree_on_resume(self, state: checkpoint_io.Checkpoint | None) -> int | None:
        """Data-parallel, every rank, before the first epoch: the epoch to go on from if
        a rank resumed (usually rank 0 alone, ``state`` its checkpoint), else None. The
        rank that resumed gives every rank its epoch and history, its own random
        streams, the callbacks' states and the learning rate, so that all ranks go on
        as in the uninterrupted run."""
        comm, rank = distributed.comm(), distributed.rank()
        offers = comm.allgather(state is not None)
        source = next((r for r, resumed in enumerate(offers) if resumed), None)
        if source is None:
            return None
        shared = None
        if rank == source:
            lr = self.model.optimizer.lr
            shared = {"epoch": state.epoch, "history": state.history,
                      "streams": state.rank_streams,
                      "callbacks": [(self.stateful.index(callback), type(callback).__name__,
                                     callback_state)
                                    for callback, callback_state in state.callback_states],
                      "lr": lr if isinstance(lr, (int, float)) else None}
        shared = comm.bcast(shared, root=source)
        streams = shared["streams"]
        if streams is not None and len(streams) == self.ranks:
            checkpoint_io.set_random_state(self.model, self.rng, streams[rank])
        elif streams is not None and rank == source:
            warnings.warn(f"fit: {self.path} holds the random streams of {len(streams)} "
                          f"ranks, this job has {self.ranks}; the other ranks start fresh "
                          "shuffling and dropout streams", stacklevel=5)
        if rank != source:
            self.history.restore(shared["history"])
            self.take_callback_states(shared["callbacks"], source)
            if shared["lr"] is not None and isinstance(self.model.optimizer.lr, (int, float)):
                self.model.optimizer.lr = shared["lr"]
        return shared["epoch"]

    def take_callback_states(self, states: list[tuple[int, str, dict]], source: int) -> None:
        """The resumed rank's callback states, each to this rank's callback at the same
        place among those with a state (the ranks give fit the same callbacks)."""
        for index, name, callback_state in states:
            if index < len(self.stateful) and type(self.stateful[index]).__name__ == name:
                self.stateful[index].load_state_dict(callback_state)
            else:
                warnings.warn(f"fit: rank {distributed.rank()} has no {name} callback where "
                              f"rank {source}, which resumed, has one; give every rank the "
                              "same callbacks", stacklevel=6)

    def run(self) -> History:
        model, history = self.model, self.history
        model.stop_training = False
        model.history = history  # as Keras: set as fit starts, so callbacks see it grow
        # Signals are caught from here on, so even one during the first save is handled.
        # The sources stop their read-ahead threads however the run ends.
        with deferred_signals() as self.stop, contextlib.ExitStack() as sources:
            sources.callback(self.data.close)
            if self.validation is not None:
                sources.callback(self.validation.close)
            epoch, state = self.initial_epoch, None
            if self.ranks > 1:
                self.agree_on_files()
            if self.backup is not None:  # it removes the file at the end if this rank writes it
                self.backup.writes = self.writes
            if self.resume and self.writes and os.path.exists(self.path):
                state = checkpoint_io.load(self.path, model, self.stateful)
                epoch = state.epoch
                history.restore(state.history)
                if state.fit_rng_state is not None:
                    backend.set_rng_state(self.rng, state.fit_rng_state)
                if self.verbose:
                    print(f"Resuming from {self.path}: {state.epoch} epoch(s) done", flush=True)
                self.callbacks.call("on_train_begin", {})
                # After on_train_begin, which resets many callbacks (an average to the weights).
                for callback, callback_state in state.callback_states:
                    callback.load_state_dict(callback_state)
            else:
                self.callbacks.call("on_train_begin", {})
            resumed = state is not None
            if self.ranks > 1:
                agreed = self.agree_on_resume(state)
                resumed, epoch = agreed is not None, epoch if agreed is None else agreed
            if not resumed and (self.path is not None or self.gathers):
                # So that a stop in the first epoch can resume too, with what
                # on_train_begin set up.
                self.save(epoch, before_training=True)

            for epoch in range(epoch, self.epochs):
                self.callbacks.call("on_epoch_begin", epoch, {})
                logs = self.run_epoch(epoch)
                # Callbacks first, as Keras runs its History last: what they add to the
                # logs (a scheduler's "lr") is recorded and checkpointed too.
                self.callbacks.call("on_epoch_end", epoch, logs)
                history.on_epoch_end(epoch, logs)
                self.save(epoch + 1)
                if self.stop:  # the signal came during validation or the save
                    raise TrainingInterrupted(self.interrupt_message(epoch + 1, 0))
                if model.stop_training:  # a callback asked (Keras's EarlyStopping does)
                    break
            self.callbacks.call("on_train_end", {})
        return history

    def run_epoch(self, epoch: int) -> dict[str, float]:
        """One pass over the (shuffled) batches, then validation: the epoch's logs."""
        model, data = self.model, self.data
        verbose = self.verbose if self.own_bar else 0
        if verbose:
            print(f"Epoch {epoch + 1}/{self.epochs}", flush=True)
        batches = data.epoch(self.rng, self.shuffle, f"fit, epoch {epoch + 1}")
        bar = Progbar(data.target, verbose=verbose)  # samples, or steps for a generator
        total_loss, total_correct, done = 0.0, 0, 0
        batch_hooks = self.callbacks.wants("on_batch_begin") or self.callbacks.wants("on_batch_end")
        for step, (xb, yb, *weights) in enumerate(batches, start=1):  # weights: [] or [w]
            size = int(xb.shape[0])
            if batch_hooks:
                self.callbacks.call("on_batch_begin", step - 1, {"batch": step - 1, "size": size})
            traced = self.tracer if self.tracer is not None and \
                self.tracer.wants(model.optimizer.iterations) else None
            try:
                loss_value, correct = train_step(
                    model, xb, yb, traced, epoch, step,
                    check_finite=step % self.check_every == 0 or step == self.steps,
                    sample_weight=weights[0] if weights else None)
            except TrainingDiverged as exc:
                bar.interrupt()
                raise TrainingDiverged(f"training diverged in epoch {epoch + 1}, step {step}/"
                                       f"{self.steps}: {exc}.{self.diverged_advice()}") from None
            total_loss = total_loss + loss_value * size
            if correct is not None:
                total_correct = total_correct + correct
            done += size
            if batch_hooks:  # a host read per step, only for callbacks that asked
                self.callbacks.call("on_batch_end", step - 1, {
                    "batch": step - 1, "size": size, **model.logs(loss_value * size, correct, size)})
            if self.stop:
                bar.interrupt()
                raise TrainingInterrupted(self.interrupt_message(epoch, step))
            if model.stop_training:  # a batch callback asked: the epoch ends here, as in Keras
                break
            if step < self.steps and bar.wants_values():  # the only host reads inside an epoch
                bar.update(data.progress(step, done), model.logs(total_loss, total_correct, done))
        data.end_epoch()
        logs = model.logs(total_loss, total_correct, done)
        if self.validation is not None and not model.stop_training and \
                validates(self.validation_freq, epoch):  # (Keras skips it after a stop too)
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                val = self.validation.evaluate(model, f"fit, validation after epoch {epoch + 1}")
            logs.update({"val_" + key: value for key, value in val.items()})
        if distributed.is_distributed(model.optimizer):  # every rank logs the same numbers
            logs = distributed.average_logs(logs)
        bar.update(data.target, logs, final=True)
        if not np.isfinite(logs.get("val_loss", 0.0)):
            raise TrainingDiverged(f"training diverged in epoch {epoch + 1}: the validation loss "
                                   f"became {logs['val_loss']}.{self.diverged_advice()}")
        return logs

    def diverged_advice(self) -> str:
        kept = f" The last good checkpoint is {self.path}." if self.path else ""
        return (f"{kept} Try a lower learning rate (it was "
                f"{self.model.optimizer.current_learning_rate:.4g}).")

    def interrupt_message(self, epoch: int, step: int) -> str:
        stop, path = self.stop, self.path
        where = (f"{stop.name} received in epoch {epoch + 1} after step {step}/{self.steps}; the "
                 "partial epoch is dropped" if step else f"{stop.name} received after epoch {epoch}")
        if path is None:
            return f"{where}. No checkpoint file was asked for, so fit cannot resume this run."
        if self.backup is not None:
            return (f"{where}. The last completed state ({epoch} epoch(s)) is in {path}: run "
                    "fit again with the same BackupAndRestore callback to continue.")
        return (f"{where}. The last completed state ({epoch} epoch(s)) is in {path}: resume "
                f"with fit(..., checkpoint={path!r}, resume=True), or add --resume to the "
                "example's command line.")
