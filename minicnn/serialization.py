"""Models and weights in ``.npz`` archives: the weights file of ``save_weights``/
``load_weights`` (format ``minicnn-weights-1``), the whole-model file of
``model.save``/``models.load_model`` (format ``minicnn-model``, version 1), layers
from their configs, and the pieces checkpoints share with them.

An archive maps names like ``conv2d_1/kernel`` to arrays, plus JSON metadata
that records the architecture (each layer's type and config), so that loading
into another architecture fails with a message naming the first mismatch
instead of silently mixing weights. Archives are written to a temporary file
and renamed; everything is checked before the first weight is overwritten.
They are read with ``allow_pickle=False``: a file from elsewhere cannot run code.

The whole-model file holds everything ``load_model`` needs to go on training
exactly where ``save`` stopped:

    __model__                 JSON text: {"format": "minicnn-model", "version": 1,
                              "keras_version", "backend": "minicnn",
                              "model_config": model.to_json()'s object
                                  ({"class_name": "Sequential", "config":
                                  {"name", "layers": [{"class_name", "config"}, ...]}}),
                              "input_shape": one sample's shape,
                              "layer_names": the names the entries below use,
                              "training_config": null (not compiled, or saved with
                                  include_optimizer=False) or {"loss": name (or
                                  {"class_name": name, "config"} for a loss made with
                                  arguments, e.g. label_smoothing), "metrics": [names],
                                  "optimizer_config":
                                  {"class_name", "config"}},
                              "optimizer_iterations": the update count (null without
                                  training_config),
                              "rng": {layer name: its generator's state (Dropout's)},
                              "frozen": {layer name: [weights frozen by set_trainable]}
                                  (optional: files from before it load with nothing
                                  frozen beyond what the layers' configs say)}
    weights/<layer>/<param>   every parameter
    optimizer/<layer>/<param> SGD's momentum buffers, if any (with training_config)
    optimizer/<layer>/<param>/<slot>
                              the other optimizers' slots (Adam's ms and vs, ...)

The weight and optimizer entries are named as in a checkpoint
(``minicnn.training.checkpoint``), which adds the epoch and the history.
"""
from __future__ import annotations

import io
import json
import os
from typing import Any

import numpy as np

from minicnn import activations, backend, initializers, layers, losses, regularizers
from minicnn.fileio import write_atomic


class WeightsFileError(ValueError):
    """A weights or checkpoint file that cannot be used for this model."""


HDF5_SUFFIXES = (".h5", ".hdf5", ".keras")


def refuse_hdf5(path: str | os.PathLike, who: str) -> None:
    """minicnn writes and reads .npz archives only: an HDF5 name would silently hold npz."""
    if os.fspath(path).lower().endswith(HDF5_SUFFIXES):
        stem = os.path.splitext(os.path.basename(os.fspath(path)))[0]
        raise ValueError(f"{who}: {os.fspath(path)!r} names an HDF5 file; minicnn stores models "
                         "and weights as NumPy .npz archives and reads no HDF5 (Keras-written "
                         f"files included): use a name ending in .npz, such as '{stem}.npz'")


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


# ---------------------------------------------------------------- layers from configs
# The config keys Keras resolves through custom_objects (keras/layers deserialize them).
_CUSTOM_KEYS = ("activation",)
_CUSTOM_SUFFIXES = ("_initializer",)
_REGULARIZER_SUFFIX = "_regularizer"  # kernel_, bias_, activity_


def layer_classes() -> dict[str, type]:
    """The built-in layers by Keras's class name."""
    return {name: getattr(layers, name) for name in layers.__all__ if name != "Layer"}


def layer_from_config(entry: Any, custom_objects: dict | None, who: str) -> Any:
    """A new layer from ``{"class_name": ..., "config": {...}}`` (a model config's entry).
    Your own layer classes, activations, initializers and regularizers come from
    ``custom_objects`` (name: class or function), as in Keras."""
    custom_objects = custom_objects or {}
    if not (isinstance(entry, dict) and isinstance(entry.get("class_name"), str)
            and isinstance(entry.get("config"), dict)):
        raise ValueError(f"{who}: each layer must be a dict "
                         f'{{"class_name": ..., "config": {{...}}}}, got {entry!r:.80}')
    name = entry["class_name"]
    cls = custom_objects.get(name) or layer_classes().get(name)
    if cls is None:
        raise ValueError(f"{who}: unknown layer class {name!r}; if it is your own layer, "
                         f"pass it as custom_objects={{{name!r}: {name}}}")
    config = dict(entry["config"])
    for key, value in config.items():
        if key in _CUSTOM_KEYS and isinstance(value, str):
            config[key] = activations.deserialize(value, custom_objects, f"{who}: {name}")
        elif key.endswith(_CUSTOM_SUFFIXES) and value is not None:
            config[key] = initializers.deserialize(value, custom_objects, f"{who}: {name} {key}")
        elif key.endswith(_REGULARIZER_SUFFIX) and value is not None:
            config[key] = regularizers.get(value, f"{who}: {name} {key}", custom_objects)
    try:
        return cls.from_config(config)
    except TypeError as exc:  # an argument the class does not take
        raise ValueError(f"{who}: {name} cannot be made from its config: {exc}") from None


# ---------------------------------------------------------------- optimizer state
def optimizer_entry(slot: str, layer: str, param: str) -> str:
    """SGD's velocities keep the short name that checkpoints have always used."""
    return f"optimizer/{layer}/{param}" if slot == "velocities" else \
        f"optimizer/{layer}/{param}/{slot}"


def optimizer_arrays(optimizer: Any) -> dict:
    """Host copies of every slot array of ``optimizer``, keyed by ``optimizer_entry``."""
    state = optimizer.get_state()
    return {optimizer_entry(slot, layer, key): backend.to_host(value)
            for slot in optimizer.slots for layer, weights in state[slot].items()
            for key, value in weights.items()}


def optimizer_slots(arrays: dict, model: Any, saved: list[dict], path: str, who: str) -> dict:
    """The slots of ``model.optimizer``'s state from the ``optimizer/...`` entries of
    ``arrays``, every name and shape checked (``saved``: the file's layers, whose
    names the entries use). Returns ``{slot: {layer: {param: array}}}``."""
    position = {layer["name"]: i for i, layer in enumerate(saved)}
    slots = model.optimizer.slots
    state: dict[str, dict] = {slot: {} for slot in slots}
    for key, value in arrays.items():
        if key.startswith("optimizer/"):
            parts = key.split("/")
            slot = "velocities" if len(parts) == 3 else parts[3] if len(parts) == 4 else None
            if slot not in slots or key != optimizer_entry(slot, *parts[1:3]):
                raise WeightsFileError(
                    f"{who}: {path} holds an entry {key!r}; optimizer entries are named "
                    f"optimizer/<layer>/<parameter> (SGD) or optimizer/<layer>/<parameter>/<slot>, "
                    f"and {type(model.optimizer).__name__}'s slots are {', '.join(slots) or 'none'}")
            saved_name, param = parts[1:3]
            index = position.get(saved_name)
            target = model.layers[index].params.get(param) if index is not None else None
            if target is None or value.shape != tuple(target.shape):
                raise WeightsFileError(f"{who}: {path} holds an optimizer buffer {key} "
                                       f"of shape {value.shape} that fits no parameter of the model")
            state[slot].setdefault(model.layers[index].name, {})[param] = value
    return state


def frozen_weights(model: Any) -> dict[str, list[str]]:
    """{layer name: its weights frozen by ``set_trainable(name, False)``}, layers with
    none left out."""
    return {layer.name: layer.frozen_params() for layer in model.layers
            if layer.frozen_params()}


def frozen_plan(model: Any, frozen: Any, saved: list[dict], path: str | os.PathLike, key: str,
                who: str) -> list[tuple[Any, set[str]]]:
    """Check a file's ``frozen`` record (the file's layer names, ``saved``, find this
    model's layers) and return (layer, names to freeze) for every layer."""
    names = {layer["name"]: i for i, layer in enumerate(saved)}
    if not isinstance(frozen, dict) or not all(
            isinstance(v, list) and all(isinstance(n, str) for n in v) for v in frozen.values()):
        raise WeightsFileError(f"{who}: {path} has damaged metadata ({key} frozen is not "
                               "{layer name: [weight names]})")
    plan: list[set[str]] = [set() for _ in model.layers]
    for layer_name, params in frozen.items():
        index = names.get(layer_name)
        unknown = params if index is None else \
            [n for n in params if n not in model.layers[index].params]
        if index is None or unknown:
            weight = f"{layer_name}/{unknown[0]}" if unknown else f"a weight of {layer_name!r}"
            raise WeightsFileError(f"{who}: {path} records {weight} as frozen, but the model "
                                   "has no such weight")
        plan[index] = set(params)
    return list(zip(model.layers, plan))


def set_frozen(plan: list[tuple[Any, set[str]]]) -> None:
    """Freeze exactly the planned weights of each layer (``frozen_plan``), unfreezing the
    others that were frozen: the file's record wins."""
    for layer, names in plan:
        for name in layer.frozen_params():
            if name not in names:
                layer.set_trainable(name, True)
        for name in sorted(names):
            layer.set_trainable(name, False)


def layer_rng_states(model: Any) -> dict:
    return {layer.name: layer.get_rng_state() for layer in model.layers
            if layer.get_rng_state() is not None}


def set_layer_rng_states(model: Any, states: dict, saved: list[dict]) -> None:
    for layer, theirs in zip(model.layers, saved):
        state = states.get(theirs["name"])
        if state is not None:
            layer.set_rng_state(state)


# ---------------------------------------------------------------- the whole-model file
MODEL_FORMAT = "minicnn-model"
MODEL_VERSION = 1
KERAS_VERSION = "2.2.4"  # the Keras whose config format model_config follows


def _name(thing: Any) -> str:
    """A loss's or metric's name as compile takes it, and as ``load_model`` looks it up
    (a name it does not know comes from ``custom_objects``). A loss of your own
    without a ``name`` of its own (``Loss.name`` is empty; a subclass of a built-in
    loss inherits that loss's name) is named by its class, as Keras names a custom
    loss function by its ``__name__``, so it never loads back as the built-in one."""
    if isinstance(thing, str):
        return thing
    if isinstance(thing, losses.Loss):
        name = thing.name
        builtin = losses.LOSSES.get(name)
        if not name or (builtin is not None and type(thing) is not builtin):
            return type(thing).__name__
        return name
    name = getattr(thing, "name", None) or getattr(thing, "__name__", None)
    if not isinstance(name, str) or not name:
        raise ValueError(f"save: cannot name the {type(thing).__name__} {thing!r} in the "
                         "training config: give it a name (a function's __name__ or a name "
                         "attribute) that load_model can find in custom_objects")
    return name


def loss_entry(loss: Any) -> str | dict:
    """The training config's "loss": ``losses.serialize``'s name, or its dict for a loss
    made with arguments, under the name ``_name`` gives (a custom loss's class name)."""
    if not isinstance(loss, losses.Loss):
        return _name(loss)
    entry = losses.serialize(loss)
    return {**entry, "class_name": _name(loss)} if isinstance(entry, dict) else _name(loss)


def save_model(path: str | os.PathLike, model: Any, overwrite: bool = True,
               include_optimizer: bool = True) -> None:
    """Write ``model`` whole (architecture, weights, compile arguments, optimizer state)
    to one ``.npz`` file, in the format of the module docstring (atomically)."""
    refuse_hdf5(path, "save")
    if not model.built:
        raise RuntimeError("save: the model is not built yet (give the first layer "
                           "input_shape, or call build/fit/predict first)")
    if not overwrite and os.path.exists(path):
        raise FileExistsError(f"save: {os.fspath(path)} exists and overwrite=False")
    compiled = include_optimizer and model.optimizer is not None and model.loss is not None
    meta = {
        "format": MODEL_FORMAT, "version": MODEL_VERSION, "keras_version": KERAS_VERSION,
        "backend": "minicnn", "model_config": json.loads(model.to_json()),
        "input_shape": list(model.input_shape[1:]),
        "layer_names": [layer.name for layer in model.layers],
        "training_config": None, "optimizer_iterations": None,
        "rng": layer_rng_states(model), "frozen": frozen_weights(model)}
    arrays = weight_arrays(model, prefix="weights/")
    if compiled:
        meta["training_config"] = {
            "loss": loss_entry(model.loss), "metrics": [_name(m) for m in model.metrics],
            "optimizer_config": {"class_name": type(model.optimizer).__name__,
                                 "config": model.optimizer.get_config()}}
        meta["optimizer_iterations"] = int(model.optimizer.iterations)
        arrays.update(optimizer_arrays(model.optimizer))
    arrays["__model__"] = np.array(json.dumps(meta))
    write_archive(path, arrays)


_OTHER_FILES = {"__meta__": "a weights file (model.save_weights): build the model and call "
                            "model.load_weights",
                "__checkpoint__": "a checkpoint (fit's checkpoint=): build and compile the "
                                  "model and call fit(..., checkpoint=PATH, resume=True)"}


def read_model_file(path: str | os.PathLike, who: str = "load_model") -> tuple[dict, dict]:
    """The metadata and the arrays of a ``save_model`` file, its metadata checked."""
    path = os.fspath(path)
    refuse_hdf5(path, who)
    arrays = read_archive(path, who, "minicnn model file")
    if "__model__" not in arrays:
        other = next((what for key, what in _OTHER_FILES.items() if key in arrays), None)
        raise WeightsFileError(f"{who}: {path} is not a minicnn model file (no __model__ entry)"
                               + (f"; it is {other}" if other else ""))
    meta = read_metadata(arrays, "__model__", path, who)
    if meta.get("format") != MODEL_FORMAT or meta.get("version") != MODEL_VERSION:
        raise WeightsFileError(f"{who}: {path} has format {meta.get('format')!r} version "
                               f"{meta.get('version')!r}; this minicnn reads {MODEL_FORMAT!r} "
                               f"version {MODEL_VERSION}")
    require_fields(meta, ("model_config", "input_shape", "layer_names", "training_config",
                          "optimizer_iterations", "rng"), "__model__", path, who)
    config = meta["model_config"]
    if not isinstance(config, dict) or not isinstance(config.get("config"), (dict, list)):
        raise WeightsFileError(f"{who}: {path} has damaged metadata (model_config is not "
                               '{"class_name": ..., "config": ...})')
    training = meta["training_config"]
    if training is not None:
        if not isinstance(training, dict):
            raise WeightsFileError(f"{who}: {path} has damaged metadata (training_config is "
                                   "not a JSON object)")
        require_fields(training, ("loss", "metrics", "optimizer_config"),
                       "__model__ training_config", path, who)
    return meta, arrays


def restore_model(model: Any, meta: dict, arrays: dict, path: str | os.PathLike,
                  who: str = "load_model") -> None:
    """Put a ``read_model_file`` file's weights (and, when ``model`` is compiled, the
    optimizer's state) into ``model``, built from that file's model_config; every
    name and shape is checked first."""
    saved = [{"name": name} for name in meta["layer_names"]]
    if len(saved) != len(model.layers):
        raise WeightsFileError(f"{who}: {path} names {len(saved)} layers, its model_config "
                               f"makes {len(model.layers)}: the file is damaged")
    if not model.built:
        model.build((None, *meta["input_shape"]))
    restore_optimizer = model.optimizer is not None and meta["training_config"] is not None
    slots = optimizer_slots(arrays, model, saved, path, who) if restore_optimizer else None
    frozen = frozen_plan(model, meta["frozen"], saved, path, "__model__", who) \
        if "frozen" in meta else None  # (files from before the entry: as their configs say)
    set_weights(model, arrays, saved, path, who, prefix="weights/")
    if frozen is not None:
        set_frozen(frozen)
    if restore_optimizer:
        model.optimizer.set_state({"iterations": meta["optimizer_iterations"], **slots})
    set_layer_rng_states(model, meta["rng"], saved)
