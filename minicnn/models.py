"""``Sequential``: a stack of layers with Keras's compile / fit / evaluate / predict.

One training step is the whole of backpropagation::

    h = x;  for layer in layers:            h  = layer.forward(h, training=True)
    L = loss(h, y);  g = dL/dh
    for layer in reversed(layers):          g  = layer.backward(g)
    optimizer.apply(layers)                 # w -= lr * dL/dw

When the last layer ends in softmax and the loss is categorical cross-entropy,
the softmax is folded into the loss: the last layer stops at its logits z and
the gradient that starts backward is simply (softmax(z) - y) / N.

A second shortcut never changes a single bit of any result: ReLU commutes
with max-pooling. ReLU never reorders values, so the winner of a window is
the same before and after it, and

    maxpool(relu(z)) == relu(maxpool(z))

with the same gradient (where a window's max is <= 0 its gradient is 0 either
way). So when a layer with a ReLU (Conv2D(..., activation="relu")) is followed
by MaxPooling2D, the model runs the layer without its ReLU and applies the ReLU
to the pooled output, in forward and in backward: a quarter of the elements
under 2x2 pooling. It does so only while nobody watches either layer (hooks,
``retain``, the gradient tracer), because they would see z in place of relu(z);
``model.move_relu_after_pool = False`` turns it off.
"""
from __future__ import annotations

import json
import os
import re
import time
import warnings
from typing import Callable

import numpy as np

from minicnn import activations, backend, inspection, losses, optimizers, serialization
from minicnn import checkpoint as checkpoint_io
from minicnn.backend import Array
from minicnn.callbacks import CallbackList
from minicnn.interrupts import TrainingDiverged, TrainingInterrupted, deferred_signals
from minicnn.layers.base import Layer, batch_shape
from minicnn.layers.pooling import MaxPooling2D
from minicnn.progbar import Progbar
from minicnn.tracing import GradientTracer

WEIGHTS_FORMAT = "minicnn-weights-1"


def _clock(like) -> float:
    """time.perf_counter() once the device that holds ``like`` has finished its work."""
    backend.synchronize(like)
    return time.perf_counter()


class History:
    """Per-epoch logs of ``fit``: ``history.history["val_acc"][-1]`` and friends."""

    def __init__(self) -> None:
        self.epoch: list[int] = []
        self.history: dict[str, list[float]] = {}
        self.resumed_epochs = 0  # epochs that came from a checkpoint, not from this fit
        self.traces: list[dict] = []  # fit(trace_gradients=N): one row per layer per traced step

    def append(self, epoch: int, logs: dict[str, float]) -> None:
        self.epoch.append(epoch)
        for key, value in logs.items():
            self.history.setdefault(key, []).append(value)
            # Keras 2.3+ spells accuracy out; keep both names pointing at one list.
            if key.endswith("acc"):
                self.history[key + "uracy"] = self.history[key]

    def as_dict(self) -> dict[str, list[float]]:
        """The logs without the accuracy aliases (what a checkpoint stores)."""
        return {k: v for k, v in self.history.items() if not k.endswith("accuracy")}

    def restore(self, logs: dict[str, list[float]]) -> None:
        """Refill from ``as_dict()`` output, e.g. when resuming from a checkpoint."""
        epochs = len(next(iter(logs.values()), []))
        for epoch in range(epochs):
            self.append(epoch, {key: values[epoch] for key, values in logs.items()})
        self.resumed_epochs = epochs


def _snake_case(name: str) -> str:
    return re.sub(r"(?<=[a-z])(?=[A-Z])", "_", name).lower()


def _count(value: int, name: str) -> int:
    """A whole number >= 0 (NumPy integers welcome; 2.5 epochs or True are errors)."""
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 0:
        raise ValueError(f"fit: {name} must be a whole number >= 0, got {value!r}")
    return int(value)


class Sequential:
    INFERENCE_SLICE = 32  # images per pass through the network at inference (see _forward)

    def __init__(self, layers: list[Layer] | None = None, name: str = "sequential") -> None:
        self.name = name
        self.layers: list[Layer] = []
        self.optimizer = None
        self.loss = None
        self.metrics: list[str] = []
        self._fused: losses.SoftmaxCrossEntropy | None = None
        self.move_relu_after_pool = True  # see the module docstring
        self._relu_moved: set[int] = set()  # layers whose ReLU the last training forward moved
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

    # ------------------------------------------------------------ compile
    def compile(self, optimizer: str | optimizers.SGD = "sgd",
                loss: str | list[str] | tuple[str, ...] | losses.Loss = "categorical_crossentropy",
                metrics: list[str] | None = None) -> None:
        if not self.layers:
            raise ValueError("Sequential.compile: the model has no layers; add some first")
        self.optimizer = optimizers.get(optimizer)
        self.loss = losses.get(loss)
        self.metrics = []
        for metric in metrics or []:
            if metric not in ("accuracy", "acc"):
                raise ValueError(f"Sequential.compile: unknown metric {metric!r}: expected "
                                 "'accuracy' (or 'acc')")
            self.metrics.append("acc")
        head = self.layers[-1]
        self._fused = losses.fused_with_softmax(
            self.loss, head.activation if head.separable_activation else None)
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

    def forward(self, x: Array, training: bool = False) -> Array:
        """The model's output (probabilities for a softmax model)."""
        return self._forward(x, training, final_activation=True)

    def _loss_input(self, x, training: bool, times: list | None = None):
        """What the loss sees: logits when softmax is fused into it, else the output."""
        return self._forward(x, training, final_activation=self._fused is None, times=times)

    def _relu_movable(self, i: int) -> bool:
        """May layers[i]'s ReLU run after the max-pooling layers[i + 1]? (module docstring)"""
        layers = self.layers
        return (self.move_relu_after_pool and i + 1 < len(layers)
                and layers[i].separable_activation
                and isinstance(layers[i].activation, activations.ReLU)
                and isinstance(layers[i + 1], MaxPooling2D)
                and not layers[i].watched and not layers[i + 1].watched)

    def _forward(self, x, training: bool, final_activation: bool, times: list | None = None):
        """The layers' forward passes. ``times`` (a list per layer) gets each layer's
        seconds; a ReLU moved after its pooling counts with the pooling."""
        n, size = x.shape[0], self.INFERENCE_SLICE
        if (not training and n > size and not backend.is_device_array(x)
                and not any(layer.watched for layer in self.layers)):
            # Inference treats every image on its own, so on the host a large batch can
            # go through the whole network a slice at a time: each slice's activations
            # stay in cache from layer to layer, where a batch of 256 would make the
            # first layer's output 236 MB and stream it through memory for every layer.
            # (A GPU wants the opposite: few, large launches.)
            xp = backend.get_array_module(x)
            return xp.concatenate([self._forward(x[start:start + size], False, final_activation)
                                   for start in range(0, n, size)])
        last = len(self.layers) - 1
        moved = {i for i in range(last) if self._relu_movable(i)}
        for i, layer in enumerate(self.layers):
            start = _clock(x) if times is not None else 0.0
            x = layer.run_forward(x, training,
                                  activate=i not in moved and (final_activation or i < last))
            if i - 1 in moved:  # this layer is the pooling: now the ReLU of the layer before
                x = self.layers[i - 1].activation.forward(x)
            if times is not None:
                times[i] = _clock(x) - start
        if training:  # backward must undo exactly what this forward did
            self._relu_moved = moved
        return x

    def _backward(self, grad, times: list | None = None) -> None:
        last, like = len(self.layers) - 1, grad  # like: an array on the step's device
        moved, self._relu_moved = self._relu_moved, set()  # good for this one backward
        for i in reversed(range(len(self.layers))):
            start = _clock(like) if times is not None else 0.0
            if i - 1 in moved:  # the ReLU that forward applied after this pooling
                grad = self.layers[i - 1].activation.backward(grad)
            activate = i not in moved and (self._fused is None or i < last)
            grad = self.layers[i].run_backward(grad, activate=activate)
            if times is not None:
                times[i] = _clock(like) - start

    def _loss_fn(self) -> losses.Loss:
        return self._fused if self._fused is not None else self.loss

    def _batch_loss(self, x, y, training: bool):
        """(mean loss, number correct) for one batch, both left on the device."""
        out = self._loss_input(x, training)
        loss_value = self._loss_fn().forward(out, y)
        correct = None
        if self.metrics:
            predicted = out.argmax(axis=1)
            truth = y.reshape(-1) if self.loss.sparse else y.argmax(axis=1)
            correct = (predicted == truth).sum()
        return loss_value, correct

    def train_on_batch(self, x: Array, y: Array) -> float | list[float]:
        """One SGD step on one batch; returns the batch's loss, or [loss, acc] when the
        model was compiled with metrics=["accuracy"] (as Keras does).

        ``x`` and ``y`` may be host arrays; they are moved to the backend and cast
        to the model's float type. A NaN or infinite loss or gradient raises
        ``TrainingDiverged`` before the weights change.
        """
        x, y = self._prepared(x, y, "train_on_batch")
        loss_value, correct = self._train_step(x, y)
        return self._batch_logs(loss_value, correct, x.shape[0])

    def test_on_batch(self, x: Array, y: Array) -> float | list[float]:
        """The loss (and accuracy) of one batch, in inference mode; like ``train_on_batch``
        it returns [loss, acc] when the model has metrics."""
        x, y = self._prepared(x, y, "test_on_batch")
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            loss_value, correct = self._batch_loss(x, y, training=False)
        return self._batch_logs(loss_value, correct, x.shape[0])

    def predict_on_batch(self, x: Array) -> np.ndarray:
        """The model's outputs for one batch, on the host."""
        return self.predict(x, batch_size=max(1, len(x)))

    def _batch_logs(self, loss_value, correct, count: int) -> float | list[float]:
        logs = self._logs(loss_value * count, correct, count)
        return [logs["loss"], logs["acc"]] if self.metrics else logs["loss"]

    def _train_step(self, x, y, tracer: GradientTracer | None = None, epoch: int = 0,
                    step: int = 0, check_finite: bool = True) -> tuple[Array, Array | None]:
        """One step on a prepared batch: (mean loss, number correct), on the device.

        Only shapes are checked: a check of values would stall a GPU on every step.
        With ``check_finite`` it raises ``TrainingDiverged`` before touching the
        weights when the loss or any gradient is NaN or infinite; NumPy's own
        overflow warnings are silenced because that check reports the problem.
        """
        if tracer is not None:
            tracer.start(self.layers)
        try:
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                loss_value, correct = self._batch_loss(x, y, training=True)
                self._backward(self._loss_fn().backward())
                if check_finite:
                    self._check_finite(loss_value)
        finally:
            if tracer is not None:
                tracer.before_update(self.layers)  # also takes its hooks off again
        self.optimizer.apply(self.layers)
        if tracer is not None:
            tracer.after_update(self.layers, epoch, step)
        return loss_value, correct

    def compute_gradients(self, x: Array, y: Array) -> Array:
        """Forward, loss and backward for one batch, as a training step runs them, but
        no update: afterwards every layer's ``grads`` hold dL/dparams. Returns the
        mean loss (on the device). Gradient checks compare against this."""
        x, y = self._prepared(x, y, "compute_gradients")
        loss_value, _ = self._batch_loss(x, y, training=True)
        self._backward(self._loss_fn().backward())
        return loss_value

    def compute_loss(self, x: Array, y: Array, training: bool = False) -> Array:
        """The mean loss on one batch (on the device), no gradients; ``training=True``
        runs the layers as a training step does (Dropout drawing its masks)."""
        x, y = self._prepared(x, y, "compute_loss")
        return self._batch_loss(x, y, training=training)[0]

    def _prepared(self, x, y, where: str):
        """x and y checked and on the backend, the model built for x."""
        self._require_compiled(where)
        x = self._prepare_x(x, where)
        self._ensure_built(x)
        return x, self._prepare_y(y, x.shape[0], where)

    def profile_step(self, x: Array, y: Array) -> dict:
        """One training step as train_on_batch runs it (the weights change; only the
        accuracy count is left out), with a clock around each part, to show where a
        step's time goes::

            {"forward": [seconds per layer], "backward": [seconds per layer],
             "loss": s, "finite check": s, "optimizer": s, "step": s}

        The lists follow ``self.layers``. A ReLU the model runs after its max-pooling
        (module docstring) counts with the pooling; the loss is the forward and
        backward of the loss function. On a GPU each clock reading waits for the
        device first, which costs a little speed but times the work, not its launch.
        """
        x, y = self._prepared(x, y, "profile_step")
        forward, backward = [0.0] * len(self.layers), [0.0] * len(self.layers)
        start = _clock(x)
        out = self._loss_input(x, True, times=forward)
        t = _clock(x)
        loss_fn = self._loss_fn()
        loss_value = loss_fn.forward(out, y)
        grad = loss_fn.backward()
        loss_time = _clock(x) - t
        self._backward(grad, times=backward)
        t = _clock(x)
        self._check_finite(loss_value)
        check_time = _clock(x) - t
        t = _clock(x)
        self.optimizer.apply(self.layers)
        end = _clock(x)
        return {"forward": forward, "backward": backward, "loss": loss_time,
                "finite check": check_time, "optimizer": end - t, "step": end - start}

    def _finite_check_interval(self, x) -> int:
        """Steps between divergence checks: each one reads a value back to the host,
        free on the CPU but a stall on the GPU, so there it runs every 20 steps
        (and always on an epoch's last step, before a checkpoint is written)."""
        if self.check_finite_every:
            return self.check_finite_every
        return 20 if backend.is_device_array(x) else 1

    def _check_finite(self, loss_value) -> None:
        # One sum, one host read: a NaN or inf anywhere makes the whole sum non-finite.
        total = loss_value + sum(g.sum() for layer in self.layers for g in layer.grads.values())
        xp = backend.get_array_module(loss_value)
        if bool(xp.isfinite(total)):
            return
        if not bool(xp.isfinite(loss_value)):
            raise TrainingDiverged(f"the loss became {float(loss_value)}")
        # Backward runs from the loss towards the input, and a NaN spreads to every
        # layer below where it appeared: the first one backward met is the culprit.
        for layer in reversed(self.layers):
            for name, grad in layer.grads.items():
                if not bool(xp.isfinite(grad).all()):
                    raise TrainingDiverged(f"the gradient of {layer.name}/{name} became "
                                           "non-finite (the first layer backward reached where it did)")
        raise TrainingDiverged("the gradients overflowed")

    # ------------------------------------------------------------ data checks
    def _prepare_x(self, x, where: str):
        if not hasattr(x, "shape") or not hasattr(x, "dtype"):
            x = np.asarray(x)
        if x.ndim == 0:
            raise ValueError(f"{where}: expected a batch of samples (N, ...), got a scalar")
        if x.shape[0] == 0:
            raise ValueError(f"{where}: x is empty (shape {tuple(x.shape)})")
        expected = self._input_shape
        if expected is not None and tuple(x.shape[1:]) != tuple(expected):
            self.layers[0].check_input(x)  # raises with the layer's name and a hint
            raise ValueError(f"{where}: expected x of shape (N, {', '.join(map(str, expected))}), "
                             f"got {tuple(x.shape)}")
        kind = np.dtype(x.dtype).kind
        if kind not in "biuf":
            raise TypeError(f"{where}: expected numeric x, got dtype {x.dtype}")
        if kind in "iu" and x.size and float(x.max()) > 1:
            warnings.warn(f"{where}: x holds integers up to {float(x.max()):.0f}; networks train "
                          "on scaled inputs, e.g. x.astype('float32') / 255", stacklevel=3)
        x = backend.to_device(x, dtype=backend.floatx())  # one cast, not one per batch
        if kind == "f" and not bool(backend.get_array_module(x).isfinite(x).all()):
            raise ValueError(f"{where}: x contains NaN or infinite values")
        return x

    def _prepare_y(self, y, n: int, where: str):
        y = y if backend.is_device_array(y) else np.asarray(y)
        if y.ndim == 0:
            raise ValueError(f"{where}: x has {n} samples but y has none (a scalar)")
        if y.shape[0] != n:
            raise ValueError(f"{where}: x has {n} samples but y has {y.shape[0]}")
        if np.dtype(y.dtype).kind not in "biuf":
            raise TypeError(f"{where}: expected numeric y, got dtype {y.dtype}")
        if np.dtype(y.dtype).kind == "f" and not bool(backend.get_array_module(y).isfinite(y).all()):
            raise ValueError(f"{where}: y contains NaN or infinite values; the targets must be "
                             "finite (check how the labels were made)")
        classes = self.output_shape[-1]
        if self.loss.sparse:
            if y.ndim == 2 and y.shape[1] == 1:
                y = y.reshape(-1)
            if y.ndim != 1 or np.dtype(y.dtype).kind not in "iu":
                raise ValueError(f"{where}: {self.loss.name} expects integer labels of shape (N,) "
                                 f"or (N, 1), got {y.dtype} of shape {tuple(y.shape)}")
            low, high = int(y.min()), int(y.max())
            if low < 0 or high >= classes:
                raise ValueError(f"{where}: labels must lie in [0, {classes - 1}] for a model "
                                 f"with {classes} outputs, got values from {low} to {high}")
            return backend.to_device(y, dtype="int64")
        if y.ndim != 2 or y.shape[1] != classes:
            hint = ""
            if y.ndim == 1 or (y.ndim == 2 and y.shape[1] == 1):
                hint = ("; these look like integer labels: one-hot them with "
                        "minicnn.utils.to_categorical(y, num_classes) or use "
                        "loss='sparse_categorical_crossentropy'")
            raise ValueError(f"{where}: {self.loss.name} expects targets of shape (N, {classes}), "
                             f"got {tuple(y.shape)}{hint}")
        return backend.to_device(y, dtype=backend.floatx())

    @staticmethod
    def _check_batch_size(batch_size, where: str) -> int:
        if batch_size is None:  # Keras's default
            return 32
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"{where}: batch_size must be a positive int, got {batch_size!r}")
        return int(batch_size)

    # ------------------------------------------------------------ training
    def fit(self, x: Array, y: Array, batch_size: int | None = None, epochs: int = 1,
            verbose: int = 1, callbacks: list | None = None, validation_split: float = 0.0,
            validation_data: tuple[Array, Array] | None = None, shuffle: bool = True,
            class_weight: dict | None = None, sample_weight: Array | None = None,
            initial_epoch: int = 0, steps_per_epoch: int | None = None,
            validation_steps: int | None = None, *,
            checkpoint: str | os.PathLike | Callable[[Sequential, int, History], None]
                        | None = None,
            resume: bool = False, trace_gradients: int = 0,
            validation_batch_size: int | None = None) -> History:
        """Train until ``epochs`` epochs are done in total; returns the per-epoch History.

        Keras 2.2's arguments, in Keras's order. ``batch_size`` defaults to 32;
        ``validation_split`` holds out the last fraction of x and y (before
        shuffling) as validation data. ``callbacks`` are ``minicnn.callbacks.Callback``
        objects (Keras's hooks) or functions ``f(epoch, logs)`` run after each epoch.
        ``class_weight``, ``sample_weight``, ``steps_per_epoch`` and
        ``validation_steps`` are not supported and must stay None.

        minicnn's own, keyword-only: ``checkpoint``: a file path, saved at the end
        of every epoch (and once before the first), or a callable
        ``checkpoint(model, epoch, history)``. ``resume=True`` with a path
        continues from that file when it exists: weights, optimizer, random
        generators and history, so the run goes on exactly as if it had never
        stopped. ``trace_gradients=N`` records per-layer activation and gradient
        statistics every N steps into ``history.traces`` (see ``minicnn.tracing``).
        ``validation_batch_size`` (default ``batch_size``) only sets how many
        validation images go through at once: larger is faster on a GPU.

        Everything is checked before the first step. Ctrl-C or SIGTERM stops
        after the current step with ``TrainingInterrupted``; a NaN or infinite
        loss or gradient stops before the update, and a NaN or infinite
        validation loss after the epoch, with ``TrainingDiverged``.
        """
        self._require_compiled("fit")
        batch_size = self._check_batch_size(batch_size, "fit")
        validation_batch_size = self._check_batch_size(
            batch_size if validation_batch_size is None else validation_batch_size,
            "fit (validation_batch_size)")
        epochs = _count(epochs, "epochs")
        initial_epoch = _count(initial_epoch, "initial_epoch")
        trace_gradients = _count(trace_gradients, "trace_gradients")
        if verbose not in (0, 1, 2):
            raise ValueError(f"fit: verbose must be 0, 1 or 2, got {verbose!r}")
        if not isinstance(shuffle, (bool, np.bool_)):
            raise ValueError(f"fit: shuffle must be True or False, got {shuffle!r}")
        for name, value in (("class_weight", class_weight), ("sample_weight", sample_weight),
                            ("steps_per_epoch", steps_per_epoch),
                            ("validation_steps", validation_steps)):
            if value is not None:
                raise ValueError(f"fit: {name} is not supported; leave it None")
        x = self._prepare_x(x, "fit")
        self._ensure_built(x)
        y = self._prepare_y(y, x.shape[0], "fit")
        if not isinstance(validation_split, (int, float)) or not 0 <= validation_split < 1:
            raise ValueError(f"fit: validation_split must be a number in [0, 1), "
                             f"got {validation_split!r}")
        if validation_split and validation_data is None:
            split = int(x.shape[0] * (1 - validation_split))  # Keras's rule
            if split < 1 or split == x.shape[0]:
                raise ValueError(f"fit: validation_split={validation_split} of {x.shape[0]} "
                                 "samples leaves no training or no validation samples")
            validation_data = (x[split:], y[split:])
            x, y = x[:split], y[:split]
        if validation_data is not None:
            if len(validation_data) != 2:
                raise ValueError("fit: validation_data must be a pair (x_val, y_val)")
            x_val = self._prepare_x(validation_data[0], "fit (validation_data)")
            y_val = self._prepare_y(validation_data[1], x_val.shape[0], "fit (validation_data)")
        if batch_size > x.shape[0]:
            warnings.warn(f"fit: batch_size {batch_size} is larger than the {x.shape[0]} samples; "
                          "each epoch is one batch of all of them", stacklevel=2)
        metrics = ["loss"] + (["acc"] if self.metrics else [])
        callback_list = CallbackList(callbacks, self, {
            "batch_size": batch_size, "epochs": epochs, "samples": int(x.shape[0]),
            "verbose": verbose, "do_validation": validation_data is not None,
            "metrics": metrics + (["val_" + m for m in metrics] if validation_data is not None
                                  else [])})
        rng = backend.device_rng()
        history = History()
        tracer = GradientTracer(trace_gradients) if trace_gradients else None
        history.traces = tracer.rows if tracer is not None else []
        save = self._checkpointer(checkpoint, rng)
        path = None if checkpoint is None or callable(checkpoint) else os.fspath(checkpoint)
        if resume and path is None:
            raise ValueError("fit: resume=True needs checkpoint=PATH to resume from")
        self.stop_training = False
        # Signals are caught from here on, so even one during the first save is handled.
        with deferred_signals() as stop:
            if resume and os.path.exists(path):
                state = checkpoint_io.load(path, self)
                initial_epoch = state.epoch
                history.restore(state.history)
                if state.fit_rng_state is not None:
                    backend.set_rng_state(rng, state.fit_rng_state)
                if verbose:
                    print(f"Resuming from {path}: {state.epoch} epoch(s) done", flush=True)
            elif save is not None and path is not None:
                save(initial_epoch, history)  # so a stop in the first epoch can resume too
            callback_list.call("on_train_begin", {})
            for epoch in range(initial_epoch, epochs):
                callback_list.call("on_epoch_begin", epoch, {})
                logs, bar = self._fit_epoch(x, y, batch_size, epoch, epochs, rng, shuffle,
                                            verbose, stop, path, tracer, callback_list)
                if validation_data is not None and not self.stop_training:  # (Keras skips it too)
                    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                        val = self._evaluate_prepared(x_val, y_val, validation_batch_size)
                    logs.update({"val_" + key: value for key, value in val.items()})
                bar.update(x.shape[0], logs, final=True)
                if not np.isfinite(logs.get("val_loss", 0.0)):
                    kept = f" The last good checkpoint is {path}." if path else ""
                    raise TrainingDiverged(
                        f"training diverged in epoch {epoch + 1}: the validation loss became "
                        f"{logs['val_loss']}.{kept} Try a lower learning rate (it was "
                        f"{self.optimizer.current_learning_rate:.4g}).")
                history.append(epoch, logs)
                if save is not None:
                    save(epoch + 1, history)
                callback_list.call("on_epoch_end", epoch, logs)
                if stop:  # the signal came during validation or the save
                    raise TrainingInterrupted(self._interrupt_message(stop, epoch + 1, 0, 0, path))
                if self.stop_training:  # a callback asked (Keras's EarlyStopping does)
                    break
            callback_list.call("on_train_end", {})
        self.history = history
        return history

    def _fit_epoch(self, x, y, batch_size, epoch, epochs, rng, shuffle, verbose, stop, path,
                   tracer=None, callbacks=None):
        """One pass over the shuffled data; returns the epoch's training logs and its
        progress bar (which fit finishes once validation is done)."""
        n = x.shape[0]
        xp = backend.get_array_module(x)
        if verbose:
            print(f"Epoch {epoch + 1}/{epochs}", flush=True)
        order = backend.permutation(rng, n) if shuffle else xp.arange(n)
        bar = Progbar(n, verbose=verbose)
        steps = -(-n // batch_size)
        total_loss, total_correct = 0.0, 0
        every = self._finite_check_interval(x)
        batch_hooks = callbacks is not None and (callbacks.wants("on_batch_begin")
                                                 or callbacks.wants("on_batch_end"))
        for step, start in enumerate(range(0, n, batch_size), start=1):
            index = order[start:start + batch_size]
            size = index.shape[0]
            if batch_hooks:
                callbacks.call("on_batch_begin", step - 1, {"batch": step - 1, "size": size})
            try:
                traced = tracer if tracer is not None and tracer.wants(self.optimizer.iterations) \
                    else None
                check = step % every == 0 or step == steps
                loss_value, correct = self._train_step(x[index], y[index], traced, epoch, step,
                                                       check)
            except TrainingDiverged as exc:
                bar.interrupt()
                kept = f" The last good checkpoint is {path}." if path else ""
                raise TrainingDiverged(
                    f"training diverged in epoch {epoch + 1}, step {step}/{steps}: {exc}.{kept} "
                    f"Try a lower learning rate (it was {self.optimizer.current_learning_rate:.4g})."
                ) from None
            total_loss = total_loss + loss_value * size
            if correct is not None:
                total_correct = total_correct + correct
            done = start + size
            if batch_hooks:  # a host read per step, only for callbacks that asked
                callbacks.call("on_batch_end", step - 1, {
                    "batch": step - 1, "size": size,
                    **self._logs(loss_value * size, correct, size)})
            if stop:
                bar.interrupt()
                raise TrainingInterrupted(self._interrupt_message(stop, epoch, step, steps, path))
            if self.stop_training:  # a batch callback asked: the epoch ends here, as in Keras
                break
            if done < n and bar.wants_values():  # the only host reads inside an epoch
                bar.update(done, self._logs(total_loss, total_correct, done))
        return self._logs(total_loss, total_correct, done), bar

    @staticmethod
    def _interrupt_message(stop, epoch, step, steps, path) -> str:
        where = (f"{stop.name} received in epoch {epoch + 1} after step {step}/{steps}; the "
                 "partial epoch is dropped" if step else f"{stop.name} received after epoch {epoch}")
        if path is None:
            return f"{where}. No checkpoint file was asked for, so fit cannot resume this run."
        return (f"{where}. The last completed state ({epoch} epoch(s)) is in {path}: resume "
                f"with fit(..., checkpoint={path!r}, resume=True), or add --resume to the "
                "example's command line.")

    def _checkpointer(self, checkpoint, rng):
        """A function save(epochs_done, history), or None when nothing is to be saved."""
        if checkpoint is None:
            return None
        if callable(checkpoint):
            return lambda epoch, history: checkpoint(self, epoch, history)
        return lambda epoch, history: checkpoint_io.save(checkpoint, self, epoch, history, rng)

    def _logs(self, total_loss, total_correct, count: int) -> dict[str, float]:
        logs = {"loss": float(total_loss) / count}
        if self.metrics:
            logs["acc"] = float(total_correct) / count
        return logs

    def _evaluate_prepared(self, x, y, batch_size: int) -> dict[str, float]:
        total_loss, total_correct = 0.0, 0
        for start in range(0, x.shape[0], batch_size):
            xb, yb = x[start:start + batch_size], y[start:start + batch_size]
            loss_value, correct = self._batch_loss(xb, yb, training=False)
            total_loss = total_loss + loss_value * xb.shape[0]
            if correct is not None:
                total_correct = total_correct + correct
        return self._logs(total_loss, total_correct, x.shape[0])

    def evaluate(self, x: Array, y: Array, batch_size: int | None = None, verbose: int = 0
                 ) -> float | list[float]:
        """[loss, acc] over all of x (just the loss when no metric was asked for)."""
        self._require_compiled("evaluate")
        batch_size = self._check_batch_size(batch_size, "evaluate")
        x = self._prepare_x(x, "evaluate")
        self._ensure_built(x)
        y = self._prepare_y(y, x.shape[0], "evaluate")
        logs = self._evaluate_prepared(x, y, batch_size)
        if verbose:
            print(" - ".join(f"{k}: {v:.4f}" for k, v in logs.items()))
        return [logs["loss"], logs["acc"]] if self.metrics else logs["loss"]

    def predict(self, x: Array, batch_size: int | None = None, verbose: int = 0) -> np.ndarray:
        """Model outputs for every sample of x, as a NumPy array on the host."""
        batch_size = self._check_batch_size(batch_size, "predict")
        x = self._prepare_x(x, "predict")
        self._ensure_built(x)
        xp = backend.get_array_module(x)
        outputs = [self.forward(x[start:start + batch_size], training=False)
                   for start in range(0, x.shape[0], batch_size)]
        return backend.to_host(xp.concatenate(outputs))

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
        x = self._prepare_x(x, "input_gradient")
        self._ensure_built(x)
        return inspection.input_gradient(self.layers, x, classes)

    def trace_shapes(self, x: Array, y: Array | None = None,
                     print_fn: Callable[[str], None] = print) -> list[dict]:
        """Print every layer's forward and backward shapes for one batch (see
        ``minicnn.inspection``): through the loss when y is given and the model is
        compiled, else from a gradient of ones at the output."""
        x = self._prepare_x(x, "trace_shapes")
        self._ensure_built(x)
        if y is not None and self.loss is not None:
            y = self._prepare_y(y, x.shape[0], "trace_shapes")
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
        serialization.refuse_hdf5(path, "save_weights")
        if not self.built:
            raise RuntimeError("save_weights: the model is not built yet (give the first layer "
                               "input_shape, or call fit/predict first)")
        arrays = serialization.weight_arrays(self)
        meta = {"format": WEIGHTS_FORMAT, "input_shape": list(self._input_shape),
                "architecture": self.architecture()}
        arrays["__meta__"] = np.array(json.dumps(meta))
        serialization.write_archive(path, arrays)

    def load_weights(self, path: str | os.PathLike) -> None:
        """Read parameters written by ``save_weights``, checking they fit this model."""
        path = os.fspath(path)
        serialization.refuse_hdf5(path, "load_weights")
        stored = serialization.read_archive(path, "load_weights", "minicnn weights file")
        if "__meta__" not in stored:
            raise serialization.WeightsFileError(
                f"load_weights: {path} has no minicnn metadata; was it written by "
                "Sequential.save_weights?")
        meta = serialization.read_metadata(stored, "__meta__", path, "load_weights")
        if meta.get("format") != WEIGHTS_FORMAT:
            raise serialization.WeightsFileError(
                f"load_weights: {path} has format {meta.get('format')!r}, this minicnn reads "
                f"{WEIGHTS_FORMAT!r}")
        serialization.require_fields(meta, ("architecture", "input_shape"), "__meta__", path,
                                     "load_weights")
        serialization.check_architecture(path, meta["architecture"], self, "load_weights")
        if not self.built:
            self.build((None, *meta["input_shape"]))
        serialization.set_weights(self, stored, meta["architecture"], path, "load_weights")

