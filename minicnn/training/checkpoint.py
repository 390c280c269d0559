"""Checkpoints: everything needed to continue a run exactly where it stopped.

A checkpoint is one ``.npz`` file (format ``minicnn-checkpoint``, version 2):

    __checkpoint__            JSON text: format, version, epoch (epochs completed),
                              input_shape, architecture (layer types and configs),
                              history so far, optimizer (type, config, iterations),
                              random-generator states (fit's shuffling, each layer's;
                              in a data-parallel run, every rank's under "ranks"),
                              frozen ({layer: [weights frozen by set_trainable]}),
                              callbacks ([{"class": name, "state": {key: JSON value}}],
                              one per callback with a state, in fit's order)
    weights/<layer>/<param>   every parameter, as saved by save_weights
    optimizer/<layer>/<param> SGD's momentum buffers, if any
    optimizer/<layer>/<param>/<slot>
                              the other optimizers' slots (Adam's ms and vs, ...)
    callbacks/<i>/<key>       the array values of the i-th callback state

A callback has a state when it defines ``state_dict()`` (a dict of str keys to
arrays, on any backend, or JSON values) and ``load_state_dict(state)``, as in
PyTorch. ``load`` pairs each saved state with a given callback of the same
class, in order, and fit hands it over after ``on_train_begin`` (which
resets many callbacks). The optimizer's learning rate comes back too when it
is a number (ReduceLROnPlateau may have lowered it). Version 1 files (no
frozen weights, no callback states) still load.

It is written to a temporary file and renamed, so a crash mid-write leaves the
previous checkpoint intact. Loading checks format, version, architecture and
callbacks, and names the first mismatch, before anything changes.
"""
from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from minicnn import backend, serialization

FORMAT = "minicnn-checkpoint"
VERSION = 2
READS = (1, 2)  # the versions load() takes


CheckpointError = serialization.WeightsFileError  # a checkpoint that cannot be used here


@dataclass
class Checkpoint:
    epoch: int                       # epochs completed
    history: dict[str, list[float]] = field(default_factory=dict)
    fit_rng_state: dict | None = None
    # (callback, its saved state) for each given callback the file has a state for
    callback_states: list[tuple[Any, dict]] = field(default_factory=list)
    # every rank's random_state(...), in a data-parallel run's checkpoint
    rank_streams: list[dict] | None = None


def random_state(model: Any, fit_rng: Any) -> dict:
    """One process's random streams: fit's shuffling and each layer's (dropout), the
    layers by position. A data-parallel run keeps one of these per rank."""
    return {"fit": backend.rng_state(fit_rng) if fit_rng is not None else None,
            "layers": [layer.get_rng_state() for layer in model.layers]}


def set_random_state(model: Any, fit_rng: Any, state: dict) -> None:
    """Put fit's generator and the layers' back into a state of ``random_state``."""
    if state["fit"] is not None and fit_rng is not None:
        backend.set_rng_state(fit_rng, state["fit"])
    for layer, layer_state in zip(model.layers, state["layers"]):
        if layer_state is not None:
            layer.set_rng_state(layer_state)


def _generator_state(state: Any) -> bool:
    """Is ``state`` a NumPy bit generator's state (or None, for none kept)? Tried on a
    fresh generator, so that a damaged one is refused before the model changes."""
    if state is None:
        return True
    try:
        kind = getattr(np.random, state["bit_generator"])
        if not (isinstance(kind, type) and issubclass(kind, np.random.BitGenerator)):
            return False
        kind().state = state
    except Exception:  # noqa: BLE001  (any damage: missing keys, wrong types, a bad name)
        return False
    return True


def _check_rank_streams(value: Any, model: Any, path: str) -> list[dict] | None:
    """The ``rng``/``ranks`` entry of a checkpoint, or CheckpointError if it is damaged."""
    if value is None:
        return None
    if not isinstance(value, list) or not value or not all(
            isinstance(s, dict) and "fit" in s and _generator_state(s["fit"])
            and isinstance(s.get("layers"), list) and len(s["layers"]) == len(model.layers)
            and all(_generator_state(layer) for layer in s["layers"])
            for s in value):
        raise CheckpointError(f"checkpoint: {path} has damaged metadata (__checkpoint__ rng "
                              'ranks is not one {"fit": ..., "layers": [one per layer]} of '
                              "generator states per rank, for a model of "
                              f"{len(model.layers)} layers)")
    return value


def has_state(callback: Any) -> bool:
    """Does ``callback`` keep a state in checkpoints (``state_dict``/``load_state_dict``)?"""
    return callable(getattr(callback, "state_dict", None)) and \
        callable(getattr(callback, "load_state_dict", None))


def _is_array(value: Any) -> bool:
    return isinstance(value, np.ndarray) or backend.is_device_array(value)


def callback_entries(callbacks: list) -> tuple[list[dict], dict]:
    """The JSON records and the archive entries of the states of ``callbacks``."""
    records, arrays = [], {}
    for i, callback in enumerate(c for c in callbacks if has_state(c)):
        name = type(callback).__name__
        state = callback.state_dict()
        if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
            raise TypeError(f"checkpoint: {name}.state_dict() must return a dict with str keys, "
                            f"got {state!r:.80}")
        values = {}
        for key, value in state.items():
            if _is_array(value):
                arrays[f"callbacks/{i}/{key}"] = np.array(backend.to_host(value))
                continue
            try:
                json.dumps(value)
            except (TypeError, ValueError):
                raise TypeError(f"checkpoint: {name}.state_dict()[{key!r}] is a "
                                f"{type(value).__name__}; a state holds arrays and JSON values "
                                "(numbers, strings, lists, dicts)") from None
            values[key] = value
        records.append({"class": name, "state": values})
    return records, arrays


def match_callbacks(records: Any, arrays: dict, callbacks: list, path: str
                    ) -> list[tuple[Any, dict]]:
    """Pair each saved state with the given callback of its class at the same place
    among that class's callbacks; a state no callback takes raises CheckpointError."""
    if not isinstance(records, list) or not all(
            isinstance(r, dict) and isinstance(r.get("class"), str)
            and isinstance(r.get("state"), dict) for r in records):
        raise CheckpointError(f"checkpoint: {path} has damaged metadata (__checkpoint__ "
                              'callbacks is not [{"class": ..., "state": {...}}, ...])')
    given: dict[str, list] = {}
    for callback in callbacks:
        if has_state(callback):
            given.setdefault(type(callback).__name__, []).append(callback)
    pairs, seen = [], {}
    for i, record in enumerate(records):
        name = record["class"]
        n = seen[name] = seen.get(name, 0) + 1
        if len(given.get(name, ())) < n:
            raise CheckpointError(
                f"checkpoint: {path} holds the state of callback {name} (number {n} of that "
                f"class), but fit was given {len(given.get(name, ()))} {name} callback(s) "
                "with a state: give the callbacks of the run being resumed")
        prefix = f"callbacks/{i}/"
        state = {**record["state"], **{key[len(prefix):]: value for key, value in arrays.items()
                                       if key.startswith(prefix)}}
        pairs.append((given[name][n - 1], state))
    stray = [key for key in arrays if key.startswith("callbacks/")
             and not any(key.startswith(f"callbacks/{i}/") for i in range(len(records)))]
    if stray:
        raise CheckpointError(f"checkpoint: {path} holds an entry {stray[0]!r} of no recorded "
                              "callback state")
    taken = {id(callback) for callback, _ in pairs}
    for name, group in given.items():
        for callback in group:
            if id(callback) not in taken:
                warnings.warn(f"checkpoint: {path} holds no state for the callback {name}; it "
                              "starts afresh", stacklevel=4)
    return pairs


def save(path: str | os.PathLike, model: Any, epoch: int, history: Any,
         fit_rng: Any = None, callbacks: list | None = None,
         rank_streams: list[dict] | None = None) -> None:
    """Write model weights, frozen weights, optimizer state, history, generator states
    and the states of ``callbacks`` (those that have one) to ``path`` (its folder is
    created if needed, as Keras's ModelCheckpoint does). ``rank_streams``: every
    rank's ``random_state``, rank by rank, from a data-parallel run."""
    serialization.refuse_hdf5(path, "checkpoint")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    optimizer = model.optimizer
    meta = {
        "format": FORMAT, "version": VERSION, "epoch": int(epoch),
        "input_shape": list(model.input_shape[1:]),
        "architecture": serialization.architecture(model),
        "history": {k: [float(v) for v in values] for k, values in history.as_dict().items()},
        "optimizer": {"type": type(optimizer).__name__, "config": optimizer.get_config(),
                      "iterations": int(optimizer.iterations)},
        "rng": {"fit": backend.rng_state(fit_rng) if fit_rng is not None else None,
                "layers": serialization.layer_rng_states(model)},
        "frozen": serialization.frozen_weights(model),
    }
    if rank_streams is not None:
        meta["rng"]["ranks"] = rank_streams
    meta["callbacks"], callback_arrays = callback_entries(callbacks or [])
    arrays = serialization.weight_arrays(model, prefix="weights/")
    arrays.update(callback_arrays)
    arrays["__checkpoint__"] = np.array(json.dumps(meta))
    arrays.update(serialization.optimizer_arrays(optimizer))
    serialization.write_archive(path, arrays)


def load(path: str | os.PathLike, model: Any, callbacks: list | None = None) -> Checkpoint:
    """Restore ``model`` (weights, frozen weights, optimizer, generators) from ``path``;
    return the rest. With ``callbacks`` (fit's), the file's callback states are paired
    with them (``callback_states``, for the caller to hand over with
    ``load_state_dict``); None leaves the states in the file alone."""
    path = os.fspath(path)
    arrays = serialization.read_archive(path, "checkpoint", "minicnn checkpoint")
    if "__checkpoint__" not in arrays:
        raise CheckpointError(f"checkpoint: {path} is not a minicnn checkpoint (no __checkpoint__ entry)")
    meta = serialization.read_metadata(arrays, "__checkpoint__", path, "checkpoint")
    if meta.get("format") != FORMAT or meta.get("version") not in READS:
        raise CheckpointError(f"checkpoint: {path} has format {meta.get('format')!r} version "
                              f"{meta.get('version')!r}; this minicnn reads {FORMAT!r} versions "
                              f"{', '.join(map(str, READS))}")
    newer = ("frozen", "callbacks") if meta["version"] >= 2 else ()
    serialization.require_fields(meta, ("epoch", "input_shape", "architecture", "history",
                                        "optimizer", "rng", *newer), "__checkpoint__", path,
                                 "checkpoint")
    if model.built and list(model.input_shape[1:]) != meta["input_shape"]:
        raise CheckpointError(f"checkpoint: {path} is for inputs {tuple(meta['input_shape'])}, "
                              f"the model takes {model.input_shape[1:]}")
    serialization.check_architecture(path, meta["architecture"], model, "checkpoint")
    if not model.built:
        model.build((None, *meta["input_shape"]))
    opt = meta["optimizer"]
    if opt["type"] != type(model.optimizer).__name__:
        raise CheckpointError(f"checkpoint: {path} was made with optimizer {opt['type']}, "
                              f"the model is compiled with {type(model.optimizer).__name__}")
    # The file's own layer names find its entries, whatever this model calls its layers.
    callback_arrays = {k: arrays.pop(k) for k in list(arrays) if k.startswith("callbacks/")}
    state = serialization.optimizer_slots(arrays, model, meta["architecture"], path, "checkpoint")
    frozen = serialization.frozen_plan(model, meta["frozen"], meta["architecture"], path,
                                       "__checkpoint__", "checkpoint") if newer else None
    pairs = match_callbacks(meta.get("callbacks", []), callback_arrays, callbacks, path) \
        if callbacks is not None else []
    rank_streams = _check_rank_streams(meta["rng"].get("ranks"), model, path)
    # Everything is checked: only now does the model change.
    serialization.set_weights(model, arrays, meta["architecture"], path, "checkpoint",
                              prefix="weights/")
    if frozen is not None:
        serialization.set_frozen(frozen)
    model.optimizer.set_state({"iterations": opt["iterations"], **state})
    # The rate a callback set (ReduceLROnPlateau, a user's) goes on; a schedule on either
    # side is a function of the iterations, which are restored already.
    saved_lr = opt.get("config", {}).get("lr")
    if isinstance(saved_lr, (int, float)) and not isinstance(saved_lr, bool) \
            and isinstance(model.optimizer.lr, (int, float)):
        model.optimizer.lr = saved_lr
    serialization.set_layer_rng_states(model, meta["rng"]["layers"], meta["architecture"])
    return Checkpoint(epoch=int(meta["epoch"]), history=meta["history"],
                      fit_rng_state=meta["rng"]["fit"], callback_states=pairs,
                      rank_streams=rank_streams)


def read_metadata(path: str | os.PathLike) -> dict:
    """The ``__checkpoint__`` metadata (epoch, history, callback records, ...) of a
    checkpoint, read without its arrays and without a model: to show or check a run
    before resuming it."""
    path = os.fspath(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            entry = {"__checkpoint__": data["__checkpoint__"]} if "__checkpoint__" in data.files \
                else None
    except FileNotFoundError:
        raise
    except Exception as exc:
        raise CheckpointError(f"checkpoint: {path} is not a readable minicnn checkpoint "
                              f"(truncated or corrupt?): {type(exc).__name__}: {exc}") from None
    if entry is None:
        raise CheckpointError(f"checkpoint: {path} is not a minicnn checkpoint (no __checkpoint__ "
                              "entry)")
    meta = serialization.read_metadata(entry, "__checkpoint__", path, "checkpoint")
    serialization.require_fields(meta, ("epoch",), "__checkpoint__", path, "checkpoint")
    return meta
