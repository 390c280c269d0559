"""Checkpoints: everything needed to continue a run exactly where it stopped.

A checkpoint is one ``.npz`` file (format ``minicnn-checkpoint``, version 1):

    __checkpoint__            JSON text: format, version, epoch (epochs completed),
                              input_shape, architecture (layer types and configs),
                              history so far, optimizer (type, config, iterations),
                              random-generator states (fit's shuffling, each layer's)
    weights/<layer>/<param>   every parameter, as saved by save_weights
    optimizer/<layer>/<param> SGD's momentum buffers, if any
    optimizer/<layer>/<param>/<slot>
                              the other optimizers' slots (Adam's ms and vs, ...)

It is written to a temporary file and renamed, so a crash mid-write leaves the
previous checkpoint intact. Loading checks format, version and architecture
and names the first mismatch.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from minicnn import backend, serialization

FORMAT = "minicnn-checkpoint"
VERSION = 1


CheckpointError = serialization.WeightsFileError  # a checkpoint that cannot be used here


@dataclass
class Checkpoint:
    epoch: int                       # epochs completed
    history: dict[str, list[float]] = field(default_factory=dict)
    fit_rng_state: dict | None = None


def _entry(slot: str, layer: str, param: str) -> str:
    """SGD's velocities keep the short name that checkpoints have always used."""
    return f"optimizer/{layer}/{param}" if slot == "velocities" else \
        f"optimizer/{layer}/{param}/{slot}"


def save(path: str | os.PathLike, model: Any, epoch: int, history: Any,
         fit_rng: Any = None) -> None:
    """Write model weights, optimizer state, history and generator states to ``path``
    (its folder is created if needed, as Keras's ModelCheckpoint does)."""
    serialization.refuse_hdf5(path, "checkpoint")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    optimizer = model.optimizer
    state = optimizer.get_state()
    meta = {
        "format": FORMAT, "version": VERSION, "epoch": int(epoch),
        "input_shape": list(model.input_shape[1:]),
        "architecture": serialization.architecture(model),
        "history": {k: [float(v) for v in values] for k, values in history.as_dict().items()},
        "optimizer": {"type": type(optimizer).__name__, "config": optimizer.get_config(),
                      "iterations": int(state["iterations"])},
        "rng": {"fit": backend.rng_state(fit_rng) if fit_rng is not None else None,
                "layers": {layer.name: layer.get_rng_state() for layer in model.layers
                           if layer.get_rng_state() is not None}},
    }
    arrays = serialization.weight_arrays(model, prefix="weights/")
    arrays["__checkpoint__"] = np.array(json.dumps(meta))
    for slot in optimizer.slots:
        for layer, weights in state[slot].items():
            for key, value in weights.items():
                arrays[_entry(slot, layer, key)] = backend.to_host(value)
    serialization.write_archive(path, arrays)


def load(path: str | os.PathLike, model: Any) -> Checkpoint:
    """Restore ``model`` (weights, optimizer, generators) from ``path``; return the rest."""
    path = os.fspath(path)
    arrays = serialization.read_archive(path, "checkpoint", "minicnn checkpoint")
    if "__checkpoint__" not in arrays:
        raise CheckpointError(f"checkpoint: {path} is not a minicnn checkpoint (no __checkpoint__ entry)")
    meta = serialization.read_metadata(arrays, "__checkpoint__", path, "checkpoint")
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise CheckpointError(f"checkpoint: {path} has format {meta.get('format')!r} version "
                              f"{meta.get('version')!r}; this minicnn reads {FORMAT!r} version {VERSION}")
    serialization.require_fields(meta, ("epoch", "input_shape", "architecture", "history",
                                        "optimizer", "rng"), "__checkpoint__", path, "checkpoint")
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
    position = {saved["name"]: i for i, saved in enumerate(meta["architecture"])}
    slots = model.optimizer.slots
    state: dict[str, dict] = {slot: {} for slot in slots}
    for key, value in arrays.items():
        if key.startswith("optimizer/"):
            parts = key.split("/")
            slot = "velocities" if len(parts) == 3 else parts[3] if len(parts) == 4 else None
            if slot not in slots or key != _entry(slot, *parts[1:3]):
                raise CheckpointError(
                    f"checkpoint: {path} holds an entry {key!r}; optimizer entries are named "
                    f"optimizer/<layer>/<parameter> (SGD) or optimizer/<layer>/<parameter>/<slot>, "
                    f"and {type(model.optimizer).__name__}'s slots are {', '.join(slots) or 'none'}")
            saved_name, param = parts[1:3]
            index = position.get(saved_name)
            target = model.layers[index].params.get(param) if index is not None else None
            if target is None or value.shape != tuple(target.shape):
                raise CheckpointError(f"checkpoint: {path} holds an optimizer buffer {key} "
                                      f"of shape {value.shape} that fits no parameter of the model")
            state[slot].setdefault(model.layers[index].name, {})[param] = value
    # Everything is checked: only now does the model change.
    serialization.set_weights(model, arrays, meta["architecture"], path, "checkpoint",
                              prefix="weights/")
    model.optimizer.set_state({"iterations": opt["iterations"], **state})
    for layer, saved in zip(model.layers, meta["architecture"]):
        state = meta["rng"]["layers"].get(saved["name"])
        if state is not None:
            layer.set_rng_state(state)
    return Checkpoint(epoch=int(meta["epoch"]), history=meta["history"],
                      fit_rng_state=meta["rng"]["fit"])

