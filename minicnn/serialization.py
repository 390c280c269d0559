"""Weights in ``.npz`` archives: the weights file of ``save_weights``/``load_weights``
(format ``minicnn-weights-1``), and the pieces checkpoints share with it.

An archive maps names like ``conv2d_1/kernel`` to arrays, plus JSON metadata
that records the architecture (each layer's type and config), so that loading
into another architecture fails with a message naming the first mismatch
instead of silently mixing weights. Archives are written to a temporary file
and renamed; everything is checked before the first weight is overwritten.
"""
from __future__ import annotations

import io
import json
import os
from typing import Any

import numpy as np

from minicnn import backend
from minicnn.fileio import write_atomic


class WeightsFileError(ValueError):
    """A weights or checkpoint file that cannot be used for this model."""


HDF5_SUFFIXES = (".h5", ".hdf5", ".keras")


def refuse_hdf5(path: str | os.PathLike, who: str) -> None:
    """minicnn writes and reads .npz archives only: an HDF5 name would silently hold npz."""
    if os.fspath(path).lower().endswith(HDF5_SUFFIXES):
        raise ValueError(f"{who}: {os.fspath(path)!r} names an HDF5 file; minicnn stores weights "
                         "as NumPy .npz archives and reads no HDF5 (Keras-written files "
                         "included): use a name ending in .npz")


def write_archive(path: str | os.PathLike, arrays: dict) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    write_atomic(path, lambda f: f.write(buffer.getvalue()))


def read_archive(path: str | os.PathLike, who: str, what: str) -> dict:
    """All arrays of an ``.npz`` file; a damaged file raises ``WeightsFileError``."""
    path = os.fspath(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except FileNotFoundError:
        raise
    except Exception as exc:
        raise WeightsFileError(f"{who}: {path} is not a readable {what} (truncated or corrupt?): "
                               f"{type(exc).__name__}: {exc}") from None


def read_metadata(arrays: dict, key: str, path: str, who: str) -> dict:
    """The JSON object stored under ``key`` (taken out of ``arrays``); anything else
    raises ``WeightsFileError``."""
    try:
        meta = json.loads(str(arrays.pop(key)))
    except json.JSONDecodeError as exc:
        raise WeightsFileError(f"{who}: {path} has damaged metadata ({key} is not JSON: "
                               f"{exc})") from None
    if not isinstance(meta, dict):
        raise WeightsFileError(f"{who}: {path} has damaged metadata ({key} is "
                               f"{json.dumps(meta)[:40]}, not a JSON object)")
    return meta


def require_fields(meta: dict, fields: tuple[str, ...], key: str, path: str, who: str) -> None:
    """Raise ``WeightsFileError`` naming the fields the metadata lacks, if any."""
    missing = [field for field in fields if field not in meta]
    if missing:
        raise WeightsFileError(f"{who}: {path} has damaged metadata ({key} lacks "
                               f"{', '.join(missing)})")


def architecture(model: Any) -> list[dict]:
    """Each layer's name, type and config, as plain JSON data (tuples become lists)."""
    return json.loads(json.dumps(model.architecture()))


def check_architecture(path: str | os.PathLike, saved: list[dict], model: Any, who: str
                       ) -> None:
    ours = architecture(model)
    if len(saved) != len(ours):
        raise WeightsFileError(f"{who}: {path} holds {len(saved)} layers, the model has "
                               f"{len(ours)}: it was made for another architecture")
    for mine, theirs in zip(ours, saved):
        # Compare what the file records: a file from before a config entry existed
        # (say, the activation) is checked on the entries it has.
        recorded = {key: value for key, value in mine["config"].items()
                    if key in theirs["config"]}
        if (mine["type"], recorded) != (theirs["type"], theirs["config"]):
            raise WeightsFileError(f"{who}: layer {mine['name']!r} is {mine['type']} "
                                   f"{mine['config']}, but {path} holds {theirs['type']} "
                                   f"{theirs['config']} there: another architecture")


def weight_arrays(model: Any, prefix: str = "") -> dict:
    """Host copies of every parameter, keyed ``prefix + layer/param``."""
    return {f"{prefix}{layer.name}/{key}": backend.to_host(value)
            for layer in model.layers for key, value in layer.params.items()}


def set_weights(model: Any, arrays: dict, saved: list[dict], path: str | os.PathLike, who: str,
                prefix: str = "") -> None:
    """Copy ``arrays`` into the model's parameters after checking every shape.

    ``saved`` is the file's architecture: its layer names find the arrays even
    when this model's layers were named differently.
    """
    pairs = []
    for layer, theirs in zip(model.layers, saved):
        for key, param in layer.params.items():
            value = arrays.get(f"{prefix}{theirs['name']}/{key}")
            if value is None or value.shape != tuple(param.shape):
                got = "nothing" if value is None else f"shape {value.shape}"
                raise WeightsFileError(f"{who}: {layer.describe()} {key} expects shape "
                                       f"{tuple(param.shape)}, {path} holds {got}")
            pairs.append((param, value))
    for param, value in pairs:
        param[...] = backend.to_device(value, dtype=param.dtype)


WEIGHTS_FORMAT = "minicnn-weights-1"


def save_weights(path: str | os.PathLike, model: Any) -> None:
    """Write every parameter of ``model`` and its architecture to ``path`` (atomically)."""
    refuse_hdf5(path, "save_weights")
    if not model.built:
        raise RuntimeError("save_weights: the model is not built yet (give the first layer "
                           "input_shape, or call fit/predict first)")
    arrays = weight_arrays(model)
    meta = {"format": WEIGHTS_FORMAT, "input_shape": list(model.input_shape[1:]),
            "architecture": model.architecture()}
    arrays["__meta__"] = np.array(json.dumps(meta))
    write_archive(path, arrays)


def load_weights(path: str | os.PathLike, model: Any) -> None:
    """Read a ``save_weights`` file into ``model`` (building it if needed), after checking
    that the file's architecture and every shape fit."""
    path = os.fspath(path)
    refuse_hdf5(path, "load_weights")
    stored = read_archive(path, "load_weights", "minicnn weights file")
    if "__meta__" not in stored:
        raise WeightsFileError(f"load_weights: {path} has no minicnn metadata; was it written "
                               "by Sequential.save_weights?")
    meta = read_metadata(stored, "__meta__", path, "load_weights")
    if meta.get("format") != WEIGHTS_FORMAT:
        raise WeightsFileError(f"load_weights: {path} has format {meta.get('format')!r}, this "
                               f"minicnn reads {WEIGHTS_FORMAT!r}")
    require_fields(meta, ("architecture", "input_shape"), "__meta__", path, "load_weights")
    check_architecture(path, meta["architecture"], model, "load_weights")
    if not model.built:
        model.build((None, *meta["input_shape"]))
    set_weights(model, stored, meta["architecture"], path, "load_weights")
