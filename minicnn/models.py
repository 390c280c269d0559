"""``Sequential``: a stack of layers with Keras's compile / fit / evaluate / predict.

``compile`` fixes how the layers run (``minicnn.plan``: softmax folded into the
loss, ReLUs moved after max-pooling); ``fit`` hands the loop to
``minicnn.training`` (arrays, or a generator or Sequence through
``minicnn.training.batches``); ``minicnn.datachecks`` checks every x and y given here;
``minicnn.serialization`` reads and writes the weights file and the whole-model
file (``save``, ``load_model``), and makes layers from their configs
(``get_config``/``from_config``, ``to_json``/``model_from_json``).
"""
from __future__ import annotations

import json
import functools
import os
import re
import warnings
from typing import Any, Callable

import numpy as np

from minicnn import backend, datachecks, inspection, losses, optimizers, plan, serialization
from minicnn import metrics as metrics_module
from minicnn.backend import Array
from minicnn.callbacks import History
from minicnn.layers.base import Layer, batch_shape
from minicnn.training import batches
from minicnn.training import step as training_step
from minicnn.training.loop import Trainer, check_validation_freq


def _snake_case(name: str) -> str:
    return re.sub(r"(?<=[a-z])(?=[A-Z])", "_", name).lower()


class Sequential:
    def __init__(self, layers: list[Layer] | None = None, name: str = "sequential") -> None:
        self.name = name
        self.layers: list[Layer] = []
        self.optimizer = None
        self.loss = None
        self.metrics: list[str] = []  # the log names of the compiled metrics ('acc', ...)
        self.metric_functions: list[metrics_module.Metric] = []
        self._plan = plan.Plan([], None)  # add and compile make the real one
        self.move_relu_after_pool = True  # see minicnn.plan
        self.check_finite_every: int | None = None  # None: every step on the CPU, 20 on the GPU
        self.stop_training = False  # a callback sets it to end fit after the current epoch
        self._input_shape: tuple[int, ...] | None = None
        for layer in layers or []:
            self.add(layer)

    # ------------------------------------------------------------ building
    def add(self, layer: Layer) -> None:
        if not isinstance(layer, Layer):
            raise TypeError(f"Sequential.add: expected a minicnn layer, got {type(layer).__name__}")
        if layer.name is None:
            base = _snake_case(layer.kind)
            count = sum(1 for other in self.layers if other.kind == layer.kind)
            layer.name = f"{base}_{count + 1}"
        if any(other.name == layer.name for other in self.layers):
            raise ValueError(f"Sequential.add: a layer named {layer.name!r} is already in the model")
        self.layers.append(layer)
        self._plan = plan.Plan(self.layers, self.loss)  # predict runs on it before any compile
        if len(self.layers) == 1 and layer.batch_input_shape is not None:
            self._input_shape = tuple(layer.batch_input_shape[1:])
        if self._input_shape is not None:
            self.build((None, *self._input_shape))

    def build(self, input_shape: tuple) -> None:
        """Create every layer's weights for inputs of ``input_shape`` (batch axis
        included, as in Keras: ``model.build((None, 32, 32, 3))``)."""
        shape = batch_shape(input_shape, f"Sequential {self.name!r}")
        self._input_shape = shape[1:]
        for layer in self.layers:
            layer.maybe_build(shape)
            shape = layer.output_shape

    @property
    def built(self) -> bool:
        return bool(self.layers) and all(layer.built for layer in self.layers)

    @property
    def input_shape(self) -> tuple | None:
        return None if self._input_shape is None else (None, *self._input_shape)

    @property
    def output_shape(self) -> tuple | None:
        return self.layers[-1].output_shape if self.built else None

    def count_params(self) -> int:
        return sum(layer.count_params() for layer in self.layers)

    # ------------------------------------------------------------ Keras's model API
    def get_layer(self, name: str | None = None, index: int | None = None) -> Layer:
        """The layer at ``index`` (counted from 0), or else the layer named ``name``."""
        if index is not None:
            if not isinstance(index, int) or isinstance(index, bool):
                raise TypeError(f"Sequential.get_layer: index must be an int, got {index!r}")
            if not -len(self.layers) <= index < len(self.layers):
                raise ValueError(f"Sequential.get_layer: asked for the layer at index {index}, "
                                 f"but the model has {len(self.layers)} layers")
            return self.layers[index]
        if name is None:
            raise ValueError("Sequential.get_layer: give a layer name or an index")
        for layer in self.layers:
            if layer.name == name:
                return layer
        names = ", ".join(repr(layer.name) for layer in self.layers) or "none"
        raise ValueError(f"Sequential.get_layer: no layer named {name!r}; the layers are {names}")

    def pop(self) -> None:
        """Remove the last layer; the model's output is then the layer before it."""
        if not self.layers:
            raise TypeError("Sequential.pop: there are no layers in the model")
        self.layers.pop()
        # The old head's softmax may have been folded into the loss: plan again.
        self._plan = plan.Plan(self.layers, self.loss)

    @property
    def weights(self) -> list[Array]:
        """Every layer's weights, layer by layer in creation order (the arrays themselves)."""
        return [w for layer in self.layers for w in layer.weights]

    def get_weights(self) -> list[np.ndarray]:
        """Host copies of ``weights``."""
        return [w for layer in self.layers for w in layer.get_weights()]

    def set_weights(self, weights: list) -> None:
        """Copy ``weights`` (in ``get_weights`` order) into the layers; every count and
        shape is checked before anything is written."""
        weights = list(weights)
        expected = sum(len(layer.params) for layer in self.layers)
        if len(weights) != expected:
            raise ValueError(f"Sequential.set_weights: the model has {expected} weight arrays, "
                             f"got {len(weights)}")
        parts, start = [], 0
        for layer in self.layers:
            part = weights[start:start + len(layer.params)]
            for (name, param), value in zip(layer.params.items(), part):
                if tuple(getattr(value, "shape", ())) != tuple(param.shape):
                    raise ValueError(f"Sequential.set_weights: {layer.describe()} {name} has "
                                     f"shape {tuple(param.shape)}, got "
                                     f"{getattr(value, 'shape', value)!r}")
            parts.append(part)
            start += len(layer.params)
        for layer, part in zip(self.layers, parts):
            layer.set_weights(part)

    @property
    def metrics_names(self) -> list[str]:
        """The names of what ``evaluate`` and ``train_on_batch`` return, in order:
        'loss', then each metric's log name (['loss', 'acc', 'mean_absolute_error'])."""
        return ["loss", *self.metrics]

    # ------------------------------------------------------------ compile
    def compile(self, optimizer: str | optimizers.Optimizer = "sgd",
                loss: str | list[str] | tuple[str, ...] | losses.Loss = "categorical_crossentropy",
                metrics: list | None = None) -> None:
        """Keras's compile. ``metrics``: names ('accuracy', 'mae', 'top_k_categorical_accuracy',
        any loss name) or functions ``metric(y_true, y_pred)`` (see ``minicnn.metrics``)."""
        if not self.layers:
            raise ValueError("Sequential.compile: the model has no layers; add some first")
        if metrics is not None and (isinstance(metrics, (str, dict)) or callable(metrics)
                                    or not hasattr(metrics, "__iter__")):
            raise TypeError(f"Sequential.compile: metrics must be a list, such as "
                            f"['accuracy'], got {metrics!r}")
        compiled = [metrics_module.get(m, "Sequential.compile") for m in metrics or []]
        names = [m.name for m in compiled]
        repeated = sorted({name for name in names if names.count(name) > 1} | (
            {"loss"} & set(names)))
        if repeated:
            raise ValueError(f"Sequential.compile: two metrics would both be logged as "
                             f"{repeated[0]!r} (or it clashes with 'loss'); give each once")
        self.optimizer = optimizers.get(optimizer)
        self.loss = losses.get(loss)
        self.metric_functions, self.metrics = compiled, names
        self._plan = plan.Plan(self.layers, self.loss)
        # Nobody needs dL/dx for the input images: skip that product and col2im.
        self.layers[0].input_grad = False
        for layer in self.layers[1:]:
            layer.input_grad = True

    def _require_compiled(self, what: str) -> None:
        if self.loss is None:
            raise RuntimeError(f"Sequential.{what}: call model.compile(...) first")

    # ------------------------------------------------------------ passes
    def _ensure_built(self, x) -> None:
        if not self.built:
            self.build(x.shape)

    def loss_function(self) -> losses.Loss:
        """The loss a step computes: softmax and cross-entropy in one when compile
        folded the final softmax into the loss (then ``loss_input`` gives logits)."""
        self._require_compiled("loss_function")
        return self._plan.fused if self._plan.fused is not None else self.loss

    def relu_moves(self) -> frozenset[int]:
        """The layers i whose ReLU runs after the max-pooling layers[i + 1] in a pass
        started now (see ``minicnn.plan``): none while a hook or ``retain`` watches."""
        return self._plan.relu_moves(self.layers) if self.move_relu_after_pool else frozenset()

    def forward(self, x: Array, training: bool = False) -> Array:
        """The model's output (probabilities for a softmax model)."""
        return plan.forward(self.layers, x, training, True, self.relu_moves())

    def loss_input(self, x: Array, training: bool = False,
                   relu_moves: frozenset[int] | None = None) -> Array:
        """What the loss sees: logits when softmax is fused into it, else the output.
        A ``backward`` after it must get the same ``relu_moves`` (default: now's)."""
        moves = self.relu_moves() if relu_moves is None else relu_moves
        return plan.forward(self.layers, x, training, self._plan.fused is None, moves)

    def backward(self, grad: Array, relu_moves: frozenset[int] | None = None,
                 skip_frozen_bottom: bool = False) -> None:
        """Backpropagate ``grad`` = dL/d(loss_input) through every layer after a
        training ``loss_input``; afterwards each layer's ``grads`` hold dL/dparams.
        ``skip_frozen_bottom`` (training steps) runs no layer below the lowest one
        with a trained weight and leaves their grads 0 (see ``minicnn.plan``)."""
        moves = self.relu_moves() if relu_moves is None else relu_moves
        plan.backward(self.layers, grad, self._plan.fused is None, moves, skip_frozen_bottom)

    def train_on_batch(self, x: Array, y: Array, sample_weight: Array | None = None,
                       class_weight: dict | None = None) -> float | list[float]:
        """One SGD step on one batch; returns the batch's loss, or [loss, *metrics] in
        ``metrics_names`` order when the model was compiled with metrics (as Keras does).
        ``sample_weight`` (N,) or ``class_weight`` weight the loss as in ``fit``.

        ``x`` and ``y`` may be host arrays; they are moved to the backend and cast
        to the model's float type. A NaN or infinite loss or gradient raises
        ``TrainingDiverged`` before the weights change.
        """
        x, y = self._checked(x, y, "train_on_batch")
        w = datachecks.sample_weights(sample_weight, class_weight, y, x.shape[0],
                                      "train_on_batch")
        loss_value, sums = training_step.train_step(self, x, y, sample_weight=w)
        return self._batch_logs(loss_value, sums, x.shape[0])

    def test_on_batch(self, x: Array, y: Array, sample_weight: Array | None = None
                      ) -> float | list[float]:
        """The loss (and metrics) of one batch, in inference mode; like ``train_on_batch``
        it returns [loss, *metrics] when the model has metrics."""
        x, y = self._checked(x, y, "test_on_batch")
        w = datachecks.sample_weights(sample_weight, None, y, x.shape[0], "test_on_batch")
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            loss_value, sums = training_step.batch_loss(self, x, y, False, sample_weight=w)
        return self._batch_logs(loss_value, sums, x.shape[0])

    def predict_on_batch(self, x: Array) -> np.ndarray:
        """The model's outputs for one batch, on the host."""
        return self.predict(x, batch_size=max(1, len(x)))

    def _batch_logs(self, loss_value, sums, count: int) -> float | list[float]:
        logs = self.logs(loss_value * count, sums, count)
        return [logs[name] for name in self.metrics_names] if self.metrics else logs["loss"]

    def compute_gradients(self, x: Array, y: Array, sample_weight: Array | None = None
                          ) -> Array:
        """Forward, loss and backward for one batch, as a training step runs them, but
        no update: afterwards every layer's ``grads`` hold dL/dparams. Returns the
        batch loss (on the device). Gradient checks compare against this."""
        x, y = self._checked(x, y, "compute_gradients")
        w = datachecks.sample_weights(sample_weight, None, y, x.shape[0], "compute_gradients")
        moves = self.relu_moves()
        loss_value, _ = training_step.batch_loss(self, x, y, True, moves, w)
        self.backward(self.loss_function().backward(), moves)
        return loss_value

    def compute_loss(self, x: Array, y: Array, training: bool = False,
                     sample_weight: Array | None = None) -> Array:
        """The batch loss (the loss's mean, weighted by ``sample_weight`` if given, plus
        any regularization penalty; on the device), no gradients; ``training=True``
        runs the layers as a training step does (Dropout drawing its masks)."""
        x, y = self._checked(x, y, "compute_loss")
        w = datachecks.sample_weights(sample_weight, None, y, x.shape[0], "compute_loss")
        return training_step.batch_loss(self, x, y, training, sample_weight=w)[0]

    def profile_step(self, x: Array, y: Array) -> dict:
        """One training step as train_on_batch runs it (the weights change; only the
        accuracy count is left out), with a clock at each layer's hooks, to show
        where a step's time goes::

            {"forward": [seconds per layer], "backward": [seconds per layer],
             "loss": s, "finite check": s, "optimizer": s, "step": s}

        The lists follow ``self.layers``. A ReLU the model runs after its max-pooling
        (``minicnn.plan``) counts with the pooling in backward and with the layer
        after the pooling in forward; the loss is the forward and backward of the
        loss function. On a GPU each clock reading waits for the device first,
        which costs a little speed but times the work, not its launch.
        """
        x, y = self._checked(x, y, "profile_step")
        return training_step.profile_step(self, x, y)

    # ------------------------------------------------------------ data checks
    def _x(self, x, where: str) -> Array:
        """x checked and on the backend, the model built for it."""
        x = datachecks.samples(x, self._input_shape, self.layers[0] if self.layers else None,
                               where)
        self._ensure_built(x)
        return x

    def _y(self, y, n: int, where: str) -> Array:
        return datachecks.targets(y, n, self.output_shape[-1], self.loss, where)

    def _checked(self, x, y, where: str) -> tuple[Array, Array]:
        """x and y checked and on the backend, the model compiled and built for x."""
        self._require_compiled(where)
        x = self._x(x, where)
        return x, self._y(y, x.shape[0], where)

    def _checked_batch(self, batch, where: str, class_weight: dict | None = None) -> tuple:
        """(x, y) or (x, y, sample_weight) of one batch from a generator or Sequence, checked
        as fit's arrays are; ``class_weight`` gives the weights of a batch without them."""
        x, y, sample_weight = batches.unpack(batch, where)
        x, y = self._checked(x, y, where)
        w = datachecks.sample_weights(sample_weight, class_weight, y, x.shape[0], where)
        return (x, y) if w is None else (x, y, w)

    def _checked_inputs(self, batch, where: str) -> Array:
        return self._x(batches.inputs(batch), where)

    # ------------------------------------------------------------ training
    def fit(self, x=None, y=None, batch_size: int | None = None, epochs: int = 1,
            verbose: int = 1, callbacks: list | None = None, validation_split: float = 0.0,
            validation_data=None, shuffle: bool = True,
            class_weight: dict | None = None, sample_weight: Array | None = None,
            initial_epoch: int = 0, steps_per_epoch: int | None = None,
            validation_steps: int | None = None, validation_freq: int | list[int] = 1,
            max_queue_size: int = 10, workers: int = 1, use_multiprocessing: bool = False, *,
            checkpoint: str | os.PathLike | Callable[[Sequential, int, History], None]
                        | None = None,
            resume: bool = False, trace_gradients: int = 0,
            validation_batch_size: int | None = None) -> History:
        """Train until ``epochs`` epochs are done in total; returns the per-epoch History.

        Keras 2.2.5's arguments, in Keras's order. ``batch_size`` defaults to 32;
        ``validation_split`` holds out the last fraction of x and y (before
        shuffling) as validation data. ``callbacks`` are ``minicnn.callbacks.Callback``
        objects (Keras's hooks) or functions ``f(epoch, logs)`` run after each epoch.
        ``sample_weight`` (N,) weights each sample's loss, Keras's way (the batch
        loss is sum(w l) / #(w != 0)); ``class_weight`` {class: weight} gives each
        sample its class's weight (ignored when ``sample_weight`` is given, as in
        Keras); ``validation_data`` may be (x_val, y_val, val_sample_weight).

        ``x`` may be a Python generator or a ``minicnn.utils.Sequence`` of batches
        (x, y) or (x, y, sample_weight) instead of arrays, as in ``fit_generator``
        (which see, with ``steps_per_epoch``, ``max_queue_size``, ``workers`` and
        ``use_multiprocessing``); y, batch_size and validation_split must then
        be left out. ``validation_data`` may be one too, with ``validation_steps``
        batches a validation (default: the Sequence's length). With arrays,
        ``steps_per_epoch`` is refused: an epoch is every sample once.
        ``validation_freq``: validate every that many epochs, or after the epochs
        in a list (counted from 1); the val_ logs appear only in those epochs.

        minicnn's own, keyword-only: ``checkpoint``: a file path, saved at the end
        of every epoch (and once before the first), or a callable
        ``checkpoint(model, epoch, history)``. ``resume=True`` with a path
        continues from that file when it exists: weights, optimizer, random
        generators and history, so the run goes on exactly as if it had never
        stopped; the callback ``minicnn.callbacks.BackupAndRestore(dir)`` does
        the same in its folder and deletes the file when training has finished.
        ``trace_gradients=N`` records per-layer activation and gradient
        statistics every N steps into ``history.traces`` (see ``minicnn.training.tracing``).
        ``validation_batch_size`` (default ``batch_size``) only sets how many
        validation images go through at once: larger is faster on a GPU.

        Everything is checked before the first step. Ctrl-C or SIGTERM stops
        after the current step with ``TrainingInterrupted``; a NaN or infinite
        loss or gradient stops before the update, and a NaN or infinite
        validation loss after the epoch, with ``TrainingDiverged``.
        """
        self._require_compiled("fit")
        stream = batches.is_stream(x)
        if stream:  # as Keras 2.2.5's check_generator_arguments
            for name, value in (("y", y), ("batch_size", batch_size),
                                ("sample_weight", sample_weight)):
                if value is not None:
                    raise ValueError(f"fit: x is a {type(x).__name__} whose batches bring their "
                                     f"own targets and size: leave {name} out")
            if validation_split:
                raise ValueError("fit: validation_split cannot split a generator or Sequence; "
                                 "give validation_data")
        elif y is None:
            raise ValueError("fit: y is missing: give the targets of x (only a generator or "
                             "Sequence x brings its own)")
        batch_size = datachecks.batch_size(batch_size, "fit")
        validation_batch_size = datachecks.batch_size(
            batch_size if validation_batch_size is None else validation_batch_size,
            "fit (validation_batch_size)")
        epochs = datachecks.count(epochs, "epochs")
        initial_epoch = datachecks.count(initial_epoch, "initial_epoch")
        trace_gradients = datachecks.count(trace_gradients, "trace_gradients")
        if verbose not in (0, 1, 2):
            raise ValueError(f"fit: verbose must be 0, 1 or 2, got {verbose!r}")
        if not isinstance(shuffle, (bool, np.bool_)):
            raise ValueError(f"fit: shuffle must be True or False, got {shuffle!r}")
        validation_freq = check_validation_freq(validation_freq, "fit")
        val_stream = batches.is_stream(validation_data)
        if validation_steps is not None and not val_stream:
            raise ValueError("fit: validation_steps is for a generator or Sequence "
                             "validation_data; arrays are validated whole")
        reading = batches.reading_options(workers, max_queue_size, use_multiprocessing, "fit") \
            if stream or val_stream else {}
        run = dict(epochs=epochs, verbose=verbose, callbacks=callbacks,
                   validation_freq=validation_freq, shuffle=shuffle, initial_epoch=initial_epoch,
                   checkpoint=checkpoint, resume=resume, trace_gradients=trace_gradients)
        if stream:
            check = functools.partial(self._checked_batch, class_weight=class_weight)
            data = batches.Stream(x, steps_per_epoch, check, "fit", "steps_per_epoch", **reading)
            data.first_batch()  # checked, and the model built on it, before anything runs
            return self._train(data, self._validation_source(
                validation_data, validation_steps, validation_batch_size, reading), run)
        if steps_per_epoch is not None:
            raise ValueError("fit: steps_per_epoch is for a generator or Sequence x; with arrays "
                             "an epoch is every sample once, in batches of batch_size (Keras "
                             "2.2.4 would run each of the steps on all of x at once)")
        x, y = self._checked(x, y, "fit")
        weights = datachecks.sample_weights(sample_weight, class_weight, y, x.shape[0], "fit")
        if not isinstance(validation_split, (int, float)) or not 0 <= validation_split < 1:
            raise ValueError(f"fit: validation_split must be a number in [0, 1), "
                             f"got {validation_split!r}")
        if validation_split and validation_data is None:
            split = int(x.shape[0] * (1 - validation_split))  # Keras's rule
            if split < 1 or split == x.shape[0]:
                raise ValueError(f"fit: validation_split={validation_split} of {x.shape[0]} "
                                 "samples leaves no training or no validation samples")
            validation_data = (x[split:], y[split:]) + (
                () if weights is None else (weights[split:],))
            x, y = x[:split], y[:split]
            weights = None if weights is None else weights[:split]
        validation = self._validation_source(validation_data, validation_steps,
                                             validation_batch_size, reading)
        if batch_size > x.shape[0]:
            warnings.warn(f"fit: batch_size {batch_size} is larger than the {x.shape[0]} samples; "
                          "each epoch is one batch of all of them", stacklevel=2)
        return self._train(batches.Arrays(x, y, batch_size, weights), validation, run)

    def _validation_source(self, validation_data, validation_steps: int | None,
                           validation_batch_size: int, reading: dict):
        """fit's validation_data, checked, as a batch source (None without it)."""
        if validation_data is None:
            return None
        if batches.is_stream(validation_data):
            source = batches.Stream(validation_data, validation_steps, self._checked_batch,
                                    "fit (validation_data)", "validation_steps", **reading)
            source.first_batch()
            return source
        if len(validation_data) not in (2, 3):
            raise ValueError("fit: validation_data must be (x_val, y_val) or (x_val, y_val, "
                             f"val_sample_weight), a generator or a Sequence, got "
                             f"{len(validation_data)} items")
        x_val = self._x(validation_data[0], "fit (validation_data)")
        y_val = self._y(validation_data[1], x_val.shape[0], "fit (validation_data)")
        w_val = datachecks.sample_weights(
            validation_data[2] if len(validation_data) == 3 else None, None, y_val,
            x_val.shape[0], "fit (validation_data)")
        return batches.Arrays(x_val, y_val, validation_batch_size, w_val)

    def _train(self, data, validation, run: dict) -> History:
        self.history = Trainer(self, data, validation=validation, **run).run()
        return self.history

    def fit_generator(self, generator, steps_per_epoch: int | None = None, epochs: int = 1,
                      verbose: int = 1, callbacks: list | None = None, validation_data=None,
                      validation_steps: int | None = None, class_weight: dict | None = None,
                      max_queue_size: int = 10, workers: int = 1,
                      use_multiprocessing: bool = False, shuffle: bool = True,
                      initial_epoch: int = 0, *, validation_freq: int | list[int] = 1,
                      checkpoint: str | os.PathLike | Callable[[Sequential, int, History], None]
                                  | None = None,
                      resume: bool = False, trace_gradients: int = 0,
                      validation_batch_size: int | None = None) -> History:
        """Train on batches (x, y) from a Python generator or a ``minicnn.utils.Sequence``
        (Keras 2.2.4's arguments, in its order; ``validation_freq`` is keyword-only
        here, as 2.2.5 put it among the positional ones). The same as ``fit(generator,
        ...)``, and everything ``fit`` says holds.

        An epoch is ``steps_per_epoch`` batches; a Sequence's default is its length
        (at most one pass over it per epoch), a generator must be given it. With
        ``shuffle`` a Sequence's batches come in an order drawn from fit's seeded
        generator each epoch; a Python generator is read as it yields. After every
        pass over a Sequence (each epoch, each validation) its ``on_epoch_end()``
        runs. ``validation_data``: arrays (x_val, y_val), evaluated
        ``validation_batch_size`` (default 32) at a time, or a generator or
        Sequence read for ``validation_steps`` batches.

        ``workers`` threads read up to ``max_queue_size`` batches ahead of training
        (a generator on one thread, as it cannot be read twice at once; ``workers=0``:
        in the calling thread); batches are used in order whatever the number of
        workers. ``use_multiprocessing=True`` is not supported.

        Each batch is checked as fit checks arrays when training takes it; the
        first (of the training and the validation data) before any step, and the
        model is built on it. A batch may be (x, y, sample_weight); ``class_weight``
        weights the batches that come without.
        ``checkpoint``/``resume`` work as in ``fit``, but a checkpoint cannot hold a
        generator's position: a resumed run reads on from wherever the generator it
        is given starts (a Sequence's epochs are indexed, so they resume exactly,
        unless its ``on_epoch_end`` changes its own state).
        """
        if not batches.is_stream(generator):
            raise TypeError(f"fit_generator: expected a Python generator or a "
                            f"minicnn.utils.Sequence, got {type(generator).__name__}; "
                            "train on arrays with fit(x, y)")
        return self.fit(generator, None, None, epochs, verbose, callbacks, 0.0, validation_data,
                        shuffle, class_weight, None, initial_epoch, steps_per_epoch,
                        validation_steps, validation_freq, max_queue_size, workers,
                        use_multiprocessing, checkpoint=checkpoint, resume=resume,
                        trace_gradients=trace_gradients,
                        validation_batch_size=validation_batch_size)

    def logs(self, total_loss, totals, count: int) -> dict[str, float]:
        """{"loss": mean loss, then each metric's mean} from sums over ``count`` samples:
        ``totals`` is what ``batch_loss`` gives for the metrics (summed over batches).
        Two host reads, whatever the number of metrics."""
        logs = {"loss": float(total_loss) / count}
        if self.metrics:
            sums = totals if isinstance(totals, (int, float)) else backend.to_host(totals)
            sums = np.broadcast_to(np.asarray(sums, dtype=np.float64), (len(self.metrics),))
            logs.update((name, float(value) / count) for name, value in zip(self.metrics, sums))
        return logs

    def evaluate_sums(self, x: Array, y: Array, batch_size: int,
                      sample_weight: Array | None = None) -> tuple[Any, Any]:
        """(loss summed over the samples, the metrics' sums) over checked x and y (and
        weights), ``batch_size`` samples at a time, left on the device: add them up
        over more batches and read them once with ``logs``."""
        total_loss, totals = 0.0, 0
        for start in range(0, x.shape[0], batch_size):
            xb, yb = x[start:start + batch_size], y[start:start + batch_size]
            wb = None if sample_weight is None else sample_weight[start:start + batch_size]
            loss_value, sums = training_step.batch_loss(self, xb, yb, False, sample_weight=wb)
            total_loss = total_loss + loss_value * xb.shape[0]
            if sums is not None:
                totals = totals + sums
        return total_loss, totals

    def evaluate_batches(self, x: Array, y: Array, batch_size: int,
                         sample_weight: Array | None = None) -> dict[str, float]:
        """``logs`` over checked x and y (and weights), ``batch_size`` samples at a time."""
        return self.logs(*self.evaluate_sums(x, y, batch_size, sample_weight), x.shape[0])

    def evaluate(self, x: Array, y: Array, batch_size: int | None = None, verbose: int = 0,
                 sample_weight: Array | None = None) -> float | list[float]:
        """[loss, *metrics] over all of x in ``metrics_names`` order (just the loss when
        no metric was asked for); the loss weighted by ``sample_weight`` (N,) if given,
        and with the regularization penalty, as Keras reports it."""
        self._require_compiled("evaluate")
        batch_size = datachecks.batch_size(batch_size, "evaluate")
        x, y = self._checked(x, y, "evaluate")
        w = datachecks.sample_weights(sample_weight, None, y, x.shape[0], "evaluate")
        logs = self.evaluate_batches(x, y, batch_size, w)
        if verbose:
            print(" - ".join(f"{k}: {v:.4f}" for k, v in logs.items()))
        return [logs[name] for name in self.metrics_names] if self.metrics else logs["loss"]

    def evaluate_generator(self, generator, steps: int | None = None, max_queue_size: int = 10,
                           workers: int = 1, use_multiprocessing: bool = False,
                           verbose: int = 0) -> float | list[float]:
        """``evaluate`` over ``steps`` batches (x, y) of a generator or Sequence (default:
        the Sequence's length): each value is the mean over all their samples. Read
        ahead as in ``fit_generator``; ``verbose=1`` shows a progress bar of steps."""
        self._require_compiled("evaluate_generator")
        source = self._stream(generator, steps, self._checked_batch, "evaluate_generator",
                              max_queue_size, workers, use_multiprocessing)
        try:
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                logs = source.evaluate(self, "evaluate_generator", verbose)
        finally:
            source.close()
        values = [logs[name] for name in self.metrics_names]
        return values if len(values) > 1 else values[0]

    def predict_generator(self, generator, steps: int | None = None, max_queue_size: int = 10,
                          workers: int = 1, use_multiprocessing: bool = False,
                          verbose: int = 0) -> np.ndarray:
        """``predict`` over ``steps`` batches of a generator or Sequence (default: the
        Sequence's length), on the host. A batch is x, or (x, y) whose y is ignored."""
        source = self._stream(generator, steps, self._checked_inputs, "predict_generator",
                              max_queue_size, workers, use_multiprocessing)
        try:
            return source.predict(self, "predict_generator", verbose)
        finally:
            source.close()

    def _stream(self, generator, steps, check, where: str, max_queue_size, workers,
                use_multiprocessing) -> batches.Stream:
        reading = batches.reading_options(workers, max_queue_size, use_multiprocessing, where)
        return batches.Stream(generator, steps, check, where, "steps", **reading)

    def predict(self, x: Array, batch_size: int | None = None, verbose: int = 0) -> np.ndarray:
        """Model outputs for every sample of x, as a NumPy array on the host."""
        batch_size = datachecks.batch_size(batch_size, "predict")
        x = self._x(x, "predict")
        xp = backend.get_array_module(x)
        outputs = [self.forward(x[start:start + batch_size], training=False)
                   for start in range(0, x.shape[0], batch_size)]
        return backend.to_host(xp.concatenate(outputs))

    def predict_classes(self, x: Array, batch_size: int | None = None,
                        verbose: int = 0) -> np.ndarray:
        """Class indices: the argmax of each output, or (output > 0.5) for one output unit."""
        proba = self.predict(x, batch_size=batch_size, verbose=verbose)
        if proba.shape[-1] > 1:
            return proba.argmax(axis=-1)
        return (proba > 0.5).astype("int32")

    def predict_proba(self, x: Array, batch_size: int | None = None,
                      verbose: int = 0) -> np.ndarray:
        """``predict``'s outputs, with a warning when they are not probabilities."""
        proba = self.predict(x, batch_size=batch_size, verbose=verbose)
        if proba.size and (proba.min() < 0 or proba.max() > 1):
            warnings.warn("predict_proba: the network returns values outside [0, 1]; "
                          "its outputs are not probabilities", stacklevel=2)
        return proba

    # ------------------------------------------------------------ reporting
    def summary(self, print_fn: Callable[[str], None] = print) -> None:
        widths = (34, 26, 10)
        rule = sum(widths)

        def row(*cells: str) -> str:
            return "".join(f"{c:<{w - 1}} " for c, w in zip(cells, widths)).rstrip()

        lines = [f'Model: "{self.name}"', "_" * rule, row("Layer (type)", "Output Shape", "Param #"),
                 "=" * rule]
        for i, layer in enumerate(self.layers):
            shown = str(layer.output_shape) if layer.built else "?"
            params = str(layer.count_params()) if layer.built else "?"
            lines.append(row(f"{layer.name} ({layer.kind})", shown, params))
            lines.append("=" * rule if i == len(self.layers) - 1 else "_" * rule)
        total = self.count_params()
        trainable = sum(int(w.size) for layer in self.layers for w in layer.trainable_weights)
        lines += [f"Total params: {total:,}", f"Trainable params: {trainable:,}",
                  f"Non-trainable params: {total - trainable:,}", "_" * rule]
        for line in lines:
            print_fn(line)

    # ------------------------------------------------------------ learning tools
    def input_gradient(self, x: Array, classes: Array) -> Array:
        """d(score of ``classes[n]``)/d(x[n]) for each sample (see ``minicnn.inspection``)."""
        x = self._x(x, "input_gradient")
        return inspection.input_gradient(self.layers, x, classes)

    def trace_shapes(self, x: Array, y: Array | None = None,
                     print_fn: Callable[[str], None] = print) -> list[dict]:
        """Print every layer's forward and backward shapes for one batch (see
        ``minicnn.inspection``): through the loss when y is given and the model is
        compiled, else from a gradient of ones at the output."""
        x = self._x(x, "trace_shapes")
        if y is not None and self.loss is not None:
            y = self._y(y, x.shape[0], "trace_shapes")
            return inspection.trace_shapes(self.layers, lambda: self.compute_gradients(x, y),
                                           print_fn)
        return inspection.trace_shapes(
            self.layers, lambda: inspection.backward_from_ones(self.layers, self.forward(x, True)),
            print_fn)

    # ------------------------------------------------------------ weights
    def architecture(self) -> list[dict]:
        return [{"name": layer.name, "type": layer.kind, "config": layer.config()}
                for layer in self.layers]

    def save_weights(self, path: str | os.PathLike) -> None:
        """Write every parameter to an ``.npz`` file (atomically: temp file, then rename)."""
        serialization.save_weights(path, self)

    def load_weights(self, path: str | os.PathLike) -> None:
        """Read parameters written by ``save_weights``, checking they fit this model."""
        serialization.load_weights(path, self)

    # ------------------------------------------------------------ the whole model
    def get_config(self) -> dict:
        """Keras's config: ``{"name": ..., "layers": [{"class_name": ..., "config": ...}]}``,
        plus ``build_input_shape`` when the model knows its input shape but its first layer
        does not record it (a model built by ``build`` or ``fit``), as tf.keras writes it."""
        config: dict[str, Any] = {
            "name": self.name,
            "layers": [{"class_name": layer.kind, "config": layer.get_config()}
                       for layer in self.layers]}
        if self.input_shape is not None and self.layers and \
                self.layers[0].batch_input_shape is None:
            config["build_input_shape"] = list(self.input_shape)
        return config

    @classmethod
    def from_config(cls, config: dict | list, custom_objects: dict | None = None
                    ) -> "Sequential":
        """A new, uncompiled model from ``get_config``'s output (or Keras's older list of
        layer configs). ``custom_objects`` maps the class names of your own layers (and
        the names of your activations and initializers) to them."""
        return _sequential_from_config(cls, config, custom_objects, "Sequential.from_config")

    def to_json(self, **kwargs: Any) -> str:
        """The architecture as Keras's JSON (``json.dumps`` keywords such as indent
        welcome): ``{"class_name": "Sequential", "config": get_config(), "keras_version":
        ..., "backend": "minicnn"}``. No weights: see ``save``."""
        return json.dumps({"class_name": type(self).__name__, "config": self.get_config(),
                           "keras_version": serialization.KERAS_VERSION, "backend": "minicnn"},
                          **kwargs)

    def save(self, filepath: str | os.PathLike, overwrite: bool = True,
             include_optimizer: bool = True) -> None:
        """Write the whole model to one ``.npz`` file (atomically): architecture, weights,
        the compile arguments and the optimizer's state, so that ``load_model`` gives a
        model that predicts and trains on exactly as this one. ``include_optimizer=False``
        leaves out the compile arguments and the optimizer. ``overwrite=False`` refuses
        an existing file (Keras asks on the console instead). The format is described
        in ``minicnn.serialization``."""
        serialization.save_model(filepath, self, overwrite, include_optimizer)


def _sequential_from_config(cls: type, config: dict | list, custom_objects: dict | None,
                            who: str) -> Sequential:
    """``Sequential.from_config``, its errors naming ``who``."""
    if isinstance(config, dict):
        if not isinstance(config.get("layers"), list):
            raise ValueError(f'{who}: expected {{"name": ..., "layers": [...]}}, got a '
                             f"dict with keys {sorted(config)}")
        name, entries = config.get("name") or "sequential", config["layers"]
        build_shape = config.get("build_input_shape")
    elif isinstance(config, list):
        name, entries, build_shape = "sequential", config, None
    else:
        raise ValueError(f'{who}: expected {{"name": ..., "layers": [...]}}, got '
                         f"{type(config).__name__}")
    model = cls(name=name)
    for entry in entries:
        model.add(serialization.layer_from_config(entry, custom_objects, who))
    if build_shape is not None and not model.built:
        model.build(tuple(build_shape))
    return model


def model_from_json(json_string: str, custom_objects: dict | None = None) -> Sequential:
    """A new, uncompiled model from ``to_json``'s text (Keras's ``model_from_json``)."""
    try:
        config = json.loads(json_string)
    except (TypeError, json.JSONDecodeError) as exc:
        raise ValueError(f"model_from_json: the text is not JSON: {exc}") from None
    return _model_from_config(config, custom_objects, "model_from_json")


def _model_from_config(config: Any, custom_objects: dict | None, who: str) -> Sequential:
    if not isinstance(config, dict) or "config" not in config:
        raise ValueError(f'{who}: expected {{"class_name": "Sequential", "config": {{...}}}}, '
                         f"got {str(config)[:60]}")
    if config.get("class_name") != "Sequential":
        raise ValueError(f"{who}: minicnn builds Sequential models only, the config describes "
                         f"{config.get('class_name')!r}")
    return _sequential_from_config(Sequential, config["config"], custom_objects, who)


def load_model(filepath: str | os.PathLike, custom_objects: dict | None = None,
               compile: bool = True) -> Sequential:
    """The model ``Sequential.save`` wrote: built, with its weights and, when it was
    compiled (and ``compile`` is True), compiled as it was, its optimizer in the
    state it had, so that ``fit`` goes on exactly where the saved model stopped.
    ``custom_objects`` maps the names of your own layers, activations,
    initializers, losses, metric functions and optimizers to them. Everything in
    the file is checked first; a damaged or foreign file raises ``WeightsFileError``
    naming it."""
    path = os.fspath(filepath)
    meta, arrays = serialization.read_model_file(path, "load_model")
    try:
        model = _model_from_config(meta["model_config"], custom_objects, "load_model")
    except ValueError as exc:
        raise type(exc)(f"{exc} (in {path})") from None
    training = meta["training_config"]
    if compile and training is not None:
        custom = custom_objects or {}
        loss = training["loss"]  # a name, or a dict of a loss made with arguments
        loss = custom.get(loss, loss) if isinstance(loss, str) else loss
        if isinstance(loss, dict) and loss.get("class_name") in custom:  # yours, with arguments
            made = custom[loss["class_name"]]
            loss = made(**loss.get("config", {})) if isinstance(made, type) else made
        if isinstance(loss, type):
            loss = loss()
        try:
            optimizer = optimizers.deserialize(training["optimizer_config"], custom_objects)
            metrics = [custom.get(name, name) for name in training["metrics"]]
            model.compile(optimizer=optimizer, loss=loss, metrics=metrics)
        except ValueError as exc:
            raise ValueError(f"load_model: {path}: the saved compile arguments do not work "
                             f"here: {exc}; pass your own loss or optimizer in "
                             "custom_objects") from None
    elif compile:
        warnings.warn(f"load_model: {path} holds no training configuration (saved before "
                      "compile, or with include_optimizer=False): compile the model yourself",
                      stacklevel=2)
    serialization.restore_model(model, meta, arrays, path, "load_model")
    return model
