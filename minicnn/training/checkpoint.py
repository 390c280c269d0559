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


def save(path: str | os.PathLike, model: Any, epoch: int, history: Any,
         fit_rng: Any = None) -> None:
    """Write model weights, optimizer state, history and generator states to ``path``
    (its folder is created if needed, as Keras's ModelCheckpoint does)."""
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
    }
    arrays = serialization.weight_arrays(model, prefix="weights/")
    arrays["__checkpoint__"] = np.array(json.dumps(meta))
    arrays.update(serialization.optimizer_arrays(optimizer))
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
    state = serialization.optimizer_slots(arrays, model, meta["architecture"], path, "checkpoint")
    # Everything is checked: only now does the model change.
    serialization.set_weights(model, arrays, meta["architecture"], path, "checkpoint",
                              prefix="weights/")
    model.optimizer.set_state({"iterations": opt["iterations"], **state})
    serialization.set_layer_rng_states(model, meta["rng"]["layers"], meta["architecture"])
    return Checkpoint(epoch=int(meta["epoch"]), history=meta["history"],
                      fit_rng_state=meta["rng"]["fit"])

