"""Run by tests/test_distributed.py under ``mpiexec -n 2``: each rank trains and
writes what it ended with to OUT/rank<r>.npz; the test compares the files.

    mpiexec -n 2 python tests/mpi_worker.py DATA.npz OUT

DATA.npz holds x, y and the initial weights w0, w1, ... that rank 0 starts from
(the other ranks build their own, different ones: BroadcastWeights must fix it).
"""
from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path

import numpy as np

import minicnn
from minicnn import backend, distributed
from minicnn.layers import Conv2D, Dense, Dropout, Flatten, MaxPooling2D
from minicnn.callbacks import BackupAndRestore, Callback, EarlyStopping, ReduceLROnPlateau
from minicnn.models import Sequential
from minicnn.optimizers import SGD, Adam
from minicnn.training import checkpoint as checkpoint_io


def small_model(optimizer) -> Sequential:
    """Conv, pool, dense: no dropout, no batch statistics, so batches add up."""
    model = Sequential()
    model.add(Conv2D(4, (3, 3), activation="relu", input_shape=(8, 8, 3)))
    model.add(MaxPooling2D((2, 2)))
    model.add(Flatten())
    model.add(Dense(16, activation="relu"))
    model.add(Dense(4, activation="softmax"))
    model.compile(optimizer=optimizer, loss="categorical_crossentropy", metrics=["accuracy"])
    return model


def dropout_model(optimizer) -> Sequential:
    """small_model with dropout: a resumed run needs each rank's dropout stream too."""
    model = Sequential()
    model.add(Conv2D(4, (3, 3), activation="relu", input_shape=(8, 8, 3)))
    model.add(Flatten())
    model.add(Dense(16, activation="relu"))
    model.add(Dropout(0.5))
    model.add(Dense(4, activation="softmax"))
    model.compile(optimizer=optimizer, loss="categorical_crossentropy", metrics=["accuracy"])
    return model


def rewrite_rank_streams(path: str, ranks: int | None) -> None:
    """Rewrite the checkpoint at ``path`` with its per-rank random streams cut or
    repeated to ``ranks`` entries (None: none at all, as an older minicnn wrote)."""
    with np.load(path) as data:
        arrays = dict(data)
    meta = json.loads(str(arrays["__checkpoint__"]))
    streams = meta["rng"].pop("ranks")
    if ranks is not None:
        meta["rng"]["ranks"] = (streams * ranks)[:ranks]
    arrays["__checkpoint__"] = np.array(json.dumps(meta))
    np.savez(path, **arrays)


def resumed_run(x, y, out: str, name: str, streams: int | None | str) -> dict:
    """4 shuffled epochs with dropout and two callbacks with a state on every rank,
    checkpointed by rank 0: in one fit (``streams="whole"``), or 2 epochs and then a
    new model whose fit resumes on rank 0 alone (the others start at epoch 0 as
    far as they know), the checkpoint's per-rank streams cut to ``streams`` ranks in
    between (None: taken out; "kept": left as written). What the rank ended with."""
    rank, size = distributed.rank(), distributed.size()
    path = str(Path(out) / f"resume-{name}.npz") if rank == 0 else None
    seen: list[int] = []  # a callable checkpoint on rank 1: called after epochs only

    def fit(epochs: int, **kwargs) -> Sequential:
        distributed.set_seed(7)  # as a new job would: the streams start over
        model = dropout_model(distributed.DistributedOptimizer(SGD(lr=0.05, momentum=0.9)))
        # A min_delta no epoch beats: the rate halves after every epoch but the first,
        # and EarlyStopping counts (its patience is not reached in 4 epochs).
        plateau = ReduceLROnPlateau(monitor="loss", factor=0.5, patience=0, min_delta=10)
        early = EarlyStopping(monitor="loss", patience=4, min_delta=10)
        checkpoint = path if rank == 0 else (lambda m, epoch, h: seen.append(epoch))
        model.fit(x[rank::size], y[rank::size], batch_size=8, shuffle=True, verbose=0,
                  epochs=epochs, checkpoint=checkpoint,
                  callbacks=[distributed.BroadcastWeights(), plateau, early], **kwargs)
        model.early = early
        return model

    caught: list[str] = []
    if streams == "whole":
        model = fit(4)
    else:
        fit(2)
        if rank == 0 and streams != "kept":
            rewrite_rank_streams(path, streams)
        distributed.comm().Barrier()
        seen.clear()
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            model = fit(4, resume=rank == 0)
        caught = [str(w.message) for w in record]
    return {**{f"resume-{name}/{i}": w for i, w in enumerate(model.get_weights())},
            f"resume-{name}-warnings": np.array(json.dumps(caught)),
            f"resume-{name}-lr": np.array(model.optimizer.lr),
            f"resume-{name}-wait": np.array(model.early.wait),
            f"resume-{name}-loss": np.array(model.history.history["loss"]),
            f"resume-{name}-checkpoints": np.array(seen)}


class StopBeforeEpoch(Callback):
    """Raises as epoch ``epoch`` (0-based) begins, on every rank: a job stopped there."""

    def __init__(self, epoch: int) -> None:
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise RuntimeError("stopped")


def backup_run(x, y, out: str) -> dict:
    """resumed_run's 4 epochs with the same BackupAndRestore folder on every rank (as
    a tf.keras user gives it, rank 1 by a relative path): stopped before epoch 3,
    then fit again. Which files each rank wrote, and what it ended with."""
    rank, size = distributed.rank(), distributed.size()
    folder = Path(out) / "backup"
    spelled = folder if rank == 0 else os.path.relpath(folder)  # one folder, two names
    writes: list[int] = []
    save = checkpoint_io.save

    def counted_save(path, model, epochs_done, *args, **kwargs):
        writes.append(epochs_done)
        return save(path, model, epochs_done, *args, **kwargs)

    def fit(stop: list) -> Sequential:
        distributed.set_seed(7)
        model = dropout_model(distributed.DistributedOptimizer(SGD(lr=0.05, momentum=0.9)))
        plateau = ReduceLROnPlateau(monitor="loss", factor=0.5, patience=0, min_delta=10)
        early = EarlyStopping(monitor="loss", patience=4, min_delta=10)
        model.fit(x[rank::size], y[rank::size], batch_size=8, shuffle=True, verbose=0,
                  epochs=4, callbacks=[distributed.BroadcastWeights(), plateau, early,
                                       BackupAndRestore(spelled)] + stop)
        return model

    checkpoint_io.save = counted_save
    try:
        try:
            fit([StopBeforeEpoch(2)])
        except RuntimeError:
            pass
        kept = folder.joinpath(BackupAndRestore.FILENAME).exists()
        distributed.comm().Barrier()
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            model = fit([])
    finally:
        checkpoint_io.save = save
    distributed.comm().Barrier()
    return {**weights_of(model, "backup"),
            "backup-writes": np.array(writes),
            "backup-kept": np.array(kept),
            "backup-left": np.array(folder.exists()),
            "backup-loss": np.array(model.history.history["loss"]),
            "backup-warnings": np.array(json.dumps([str(w.message) for w in record]))}


def weights_of(model, prefix: str) -> dict:
    return {f"{prefix}/{i}": w for i, w in enumerate(model.get_weights())}


def main(data_path: str, out: str) -> None:
    distributed.init()
    rank, size = distributed.rank(), distributed.size()
    data = np.load(data_path)
    x, y = data["x"], data["y"]
    initial = [data[f"w{i}"] for i in range(len([k for k in data.files if k.startswith("w")]))]
    results: dict[str, np.ndarray] = {"size": np.array(size)}

    # 1. The proof: batch 16 on x[rank::2] per rank == batch 32 on x in one process.
    distributed.set_seed(1)  # a different random model on each rank
    model = small_model(distributed.DistributedOptimizer(SGD(lr=0.1, momentum=0.9, decay=0.01)))
    if rank == 0:
        model.set_weights(initial)
    history = model.fit(x[rank::size], y[rank::size], batch_size=16, epochs=2, shuffle=False,
                        verbose=0, callbacks=[distributed.BroadcastWeights(root=0)])
    results.update(weights_of(model, "equivalence"))
    results["equivalence_loss"] = np.array(history.history["loss"])
    results["equivalence_acc"] = np.array(history.history["acc"])
    results["equivalence_iterations"] = np.array(model.optimizer.iterations)
    results["equivalence_class"] = np.array(type(model.optimizer).__name__)

    # 2. Shuffled, with per-rank seeds, twice: the ranks still agree, and a rerun repeats.
    for run in (1, 2):
        distributed.set_seed(5)
        results[f"stream/{run}"] = backend.permutation(backend.device_rng(), 16)
        model = small_model(distributed.DistributedOptimizer(Adam(lr=0.01)))
        model.fit(x[rank::size], y[rank::size], batch_size=8, epochs=2, shuffle=True,
                  verbose=0, callbacks=[distributed.BroadcastWeights()])
        results.update(weights_of(model, f"shuffled/{run}"))

    # 3. broadcast_weights carries the optimizer state of a resumed run.
    minicnn.set_seed(10 + rank)
    model = small_model(SGD(lr=0.1, momentum=0.9))
    if rank == 1:  # only the root's state matters; give rank 1 something else to lose
        model.train_on_batch(x[:4], y[:4])
    model.train_on_batch(x[:8], y[:8])
    distributed.broadcast_weights(model, root=1)
    results.update(weights_of(model, "broadcast"))
    results["broadcast_iterations"] = np.array(model.optimizer.iterations)
    state = model.optimizer.get_state()["velocities"]
    for layer in sorted(state):
        for name in sorted(state[layer]):
            results[f"velocity/{layer}/{name}"] = backend.to_host(state[layer][name])

    # 4. allreduce of numbers and arrays, and the epoch logs.
    results["allreduce_number"] = np.array(distributed.allreduce(float(rank + 1)))
    results["allreduce_sum"] = distributed.allreduce(np.arange(3.0) * (rank + 1), average=False)
    logs = distributed.average_logs({"loss": 2.0 * rank, "acc": 1.0})
    results["logs"] = np.array([logs["loss"], logs["acc"]])

    # 5. DistributedOptimizer copies: same class name and config, the state copied.
    minicnn.set_seed(0)
    plain = SGD(lr=0.1, momentum=0.9, clipnorm=1.0)
    model = small_model(plain)
    model.train_on_batch(x[:8], y[:8])
    wrapped = distributed.DistributedOptimizer(plain)
    key = next(iter(plain.velocities))
    results["copy_same_config"] = np.array(wrapped.get_config() == plain.get_config())
    results["copy_same_state"] = np.array(
        wrapped.iterations == plain.iterations == 1
        and np.array_equal(wrapped.velocities[key], plain.velocities[key]))
    results["copy_shares_state"] = np.array(wrapped.velocities[key] is plain.velocities[key])
    results["copy_is_sgd"] = np.array(isinstance(wrapped, SGD) and distributed.is_distributed(
        wrapped) and not distributed.is_distributed(plain))
    try:
        distributed.DistributedOptimizer(wrapped)
        results["wrapped_twice"] = np.array("accepted")
    except ValueError as exc:
        results["wrapped_twice"] = np.array(str(exc))

    # 6. The strict backend: arrays that refuse to mix with NumPy's, as CuPy's do.
    with minicnn.use_backend("strict"):
        distributed.set_seed(2)
        model = small_model(distributed.DistributedOptimizer(SGD(lr=0.1, momentum=0.5)))
        model.fit(minicnn.to_device(x[rank::size]), minicnn.to_device(y[rank::size]),
                  batch_size=16, epochs=1, verbose=0, callbacks=[distributed.BroadcastWeights()])
        results.update(weights_of(model, "strict"))
        results["strict_array"] = backend.to_host(
            distributed.allreduce(minicnn.to_device(np.full(2, rank, dtype=np.float32))))

    # 7. Stopped after 2 of 4 epochs and resumed: every rank's shuffling and dropout go
    #    on from the checkpoint, so the run ends as the uninterrupted one.
    for name, streams in (("whole", "whole"), ("kept", "kept"), ("taken-out", None),
                          ("three", 3)):
        results.update(resumed_run(x, y, out, name, streams))

    # 8. BackupAndRestore on every rank, one folder: one rank writes, all go on.
    results.update(backup_run(x, y, out))

    np.savez(Path(out) / f"rank{rank}.npz", **results)


if __name__ == "__main__":
    main(*sys.argv[1:])
