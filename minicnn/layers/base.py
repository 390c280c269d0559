"""The layer contract, Keras 2's shape, with a backward pass.

A layer is one class with four methods a reader (or a custom layer) writes:

    build(input_shape)             create weights with self.add_weight(...), then
                                   super().build(input_shape); shapes include the
                                   batch axis as None, e.g. (None, 32, 32, 3)
    y  = forward(x, training)      the maths; keeps in self what backward needs
    dx = backward(dy)              dL/dx from dL/dy, and self.grads[name] = dL/dw
    compute_output_shape(shape)    only if the layer changes the shape

Parameters and gradients are dicts keyed by Keras's names ("kernel", "bias");
the arrays are updated in place, so ``layer.params["kernel"][...] = w``
changes what the next forward uses.

The model never calls ``forward``/``backward`` directly. It calls the layer
through ``run_forward``/``run_backward``, which build it on first use, check
every shape against the contract (input, ``compute_output_shape``, dx, each
gradient) and name the layer when something is off, keep copies when asked
(``retain``) and call the inspection hooks. So a custom layer gets all of that
without writing any of it.

The built-in layers write their own maths as ``_forward``/``_backward``, calls
into ``minicnn.ops``, and let this class's ``forward``/``backward`` add their
``activation``: y = activation(_forward(x)). Keeping the two apart is what lets
the model hand a final softmax's logits z to the fused softmax-cross-entropy
loss, and run a ReLU after the max-pooling that follows it (see models.py).

Two flags reach them: ``training`` turns on what only training does (Dropout's
masks), ``self.keep_cache`` says whether to keep what backward needs. The model
sets both alike; a saliency map wants a backward through the network as it
predicts (``run_forward(x, training=False, keep_cache=True)``). A custom layer's
``forward(x, training)`` has the one flag, and gets training=True whenever a
backward will follow.
"""
from __future__ import annotations

import numbers
from typing import Any, Callable, Iterable, Sequence

from minicnn import activations, backend, initializers, regularizers
from minicnn.backend import Array
from minicnn.ops.windows import PADDINGS

# The keyword arguments every Keras 2.2.4 layer takes (keras/engine/base_layer.py).
LAYER_KEYWORDS = ("input_shape", "batch_input_shape", "batch_size", "dtype", "name",
                  "trainable", "weights", "input_dtype")


class Layer:
    """Base class: Keras's constructor keywords, weights by name, and the checked
    entry points ``run_forward``/``run_backward`` the model calls."""

    input_ndim: int | None = None  # rank of x, batch axis included (Keras's InputSpec); None: any

    def __init__(self, **kwargs: Any) -> None:
        unknown = sorted(set(kwargs) - set(LAYER_KEYWORDS))
        if unknown:
            raise TypeError(f"{type(self).__name__}: unknown keyword argument {unknown[0]!r}; "
                            f"besides its own, a layer takes {', '.join(LAYER_KEYWORDS)}")
        self.name: str | None = kwargs.get("name")
        if self.name is not None and not isinstance(self.name, str):
            raise TypeError(f"{type(self).__name__}: name must be a str, got {self.name!r}")
        self.trainable = kwargs.get("trainable", True)
        if not isinstance(self.trainable, bool):
            raise TypeError(f"{self.describe()}: trainable must be True or False, "
                            f"got {self.trainable!r}")
        self.batch_input_shape = _batch_input_shape(kwargs, self.describe())
        dtype = kwargs.get("dtype", kwargs.get("input_dtype"))  # input_dtype: Keras's legacy name
        if dtype is not None and str(dtype) != backend.floatx():
            raise ValueError(f"{self.describe()}: dtype {str(dtype)!r} differs from minicnn's "
                             f"float type {backend.floatx()!r}; every layer computes in that "
                             f"one type: call minicnn.set_floatx({str(dtype)!r}) first")
        self._initial_weights = kwargs.get("weights")
        # Drawn once per build and shared by its weights, so a seed gives the same
        # network whatever weights a layer has (a bias draws nothing but its turn).
        self._weight_rng = None
        # Shapes include the batch axis as None, as in Keras; both are set by build().
        self.input_shape: tuple | None = self.batch_input_shape
        self.output_shape: tuple | None = None
        self.activation: activations.ActivationFunction | None = None
        self.params: dict[str, Any] = {}
        self.grads: dict[str, Any] = {}
        self._non_trainable: set[str] = set()  # weights made with add_weight(trainable=False)
        self._frozen: set[str] = set()  # trainable weights frozen by set_trainable(name, False)
        # Penalties (minicnn.regularizers): per weight from add_weight(regularizer=...), and
        # on the output; the model's passes add them to the loss and the gradients.
        self.regularizers: dict[str, regularizers.Regularizer] = {}
        self.activity_regularizer: regularizers.Regularizer | None = None
        self.activity_penalty = self.activity_output = None  # set by the model's forward
        self.built = False
        # The model switches this off for its first layer: nobody needs dL/dinput there.
        self.input_grad = True
        # Must this forward keep what backward needs? Set by forward/run_forward.
        self.keep_cache = False
        # Inspection: set retain = True to keep copies of the last input, output and
        # gradients (last_input, last_output, last_grad_output, last_grad_input).
        # Off by default, so training keeps no copies nobody asked for.
        self.retain = False
        self._x_shape: tuple | None = None  # shape of the last run_forward's input
        self.last_input = self.last_output = self.last_grad_output = self.last_grad_input = None
        self._forward_hooks: dict[object, Callable] = {}
        self._backward_hooks: dict[object, Callable] = {}

    # ----------------------------------------------------------- names
    @property
    def kind(self) -> str:
        return type(self).__name__

    def describe(self) -> str:
        return f"{self.kind} {self.name!r}" if self.name else self.kind

    def __repr__(self) -> str:
        return f"<{self.describe()}>"

    # ----------------------------------------------------------- shapes and weights
    def compute_output_shape(self, input_shape: tuple) -> tuple:
        """Output shape for ``input_shape``, both with the batch axis (None)."""
        return tuple(input_shape)

    def build(self, input_shape: tuple) -> None:
        """Create the weights for inputs of ``input_shape`` (batch axis included).
        Subclasses call ``self.add_weight`` and end with ``super().build(input_shape)``."""
        self.input_shape = tuple(input_shape)
        self.output_shape = tuple(self.compute_output_shape(self.input_shape))
        self.built = True
        self._weight_rng = None  # the next build draws a fresh one

    def maybe_build(self, input_shape: Sequence[int | None]) -> None:
        """Build for ``input_shape`` (batch axis included) unless built already.
        Rank and sizes are checked before any weight exists."""
        if self.built and tuple(input_shape[1:]) == self.input_shape[1:]:
            return  # the common case, every step: nothing to check
        shape = batch_shape(input_shape, self.describe())
        if self.built:
            if shape[1:] != tuple(self.input_shape[1:]):
                raise ValueError(f"{self.describe()}: built for input {self.input_shape}, "
                                 f"but the layer before it gives {shape}")
            return
        if self.input_ndim is not None and len(shape) != self.input_ndim:
            axes = ", ".join(["batch"] + ["d"] * (self.input_ndim - 1))
            hint = ""
            if len(shape) > self.input_ndim and self.input_ndim == 2:
                hint = "; add Flatten() before it to make each sample a vector"
            elif len(shape) == self.input_ndim + 1:
                hint = ("; input_shape is the shape of one sample, without the batch axis "
                        f"(e.g. {tuple(input_shape)[2:]})")
            raise ValueError(f"{self.describe()}: expected input of rank {self.input_ndim} "
                             f"(shape ({axes})), got shape {tuple(input_shape)}{hint}")
        self.compute_output_shape(shape)  # raises for sizes that do not fit (a window too large)
        self.build(shape)
        if not self.built:  # a custom build() that forgot super().build(input_shape)
            Layer.build(self, shape)
        if self._initial_weights is not None:  # Keras's weights=[...] keyword
            self.set_weights(self._initial_weights)
            self._initial_weights = None

    def add_weight(self, name: str, shape: Sequence[int], dtype: Any = None,
                   initializer: str | Callable = "glorot_uniform", regularizer: Any = None,
                   trainable: bool = True, constraint: Any = None) -> Array:
        """Create a weight (Keras's signature), register it as ``self.params[name]`` and
        return it, on the backend in the default float type. A ``regularizer`` (anything
        ``minicnn.regularizers.get`` takes) adds its penalty to the model's loss."""
        if constraint is not None:
            raise ValueError(f"{self.describe()}: add_weight({name!r}): constraint is not "
                             "supported; give constraint=None")
        regularizer = regularizers.get(regularizer, f"{self.describe()}: add_weight({name!r})")
        if dtype is not None and str(dtype) != backend.floatx():
            raise ValueError(f"{self.describe()}: add_weight({name!r}): dtype {str(dtype)!r} "
                             f"differs from minicnn's float type {backend.floatx()!r}")
        if name in self.params and not self.built:  # (a second build() makes fresh weights)
            raise ValueError(f"{self.describe()}: a weight named {name!r} already exists")
        shape = tuple(positive_int(d, f"add_weight({name!r}) shape entries", self.describe())
                      for d in shape)
        init = initializers.get(initializer, f"{self.describe()} {name} initializer")
        if self._weight_rng is None:  # one generator for all of a build's weights
            self._weight_rng = backend.host_rng()
        self.params[name] = backend.to_device(init(shape, self._weight_rng),
                                              dtype=backend.floatx())
        self.grads[name] = None
        if not trainable:
            self._non_trainable.add(name)
        if regularizer is not None:
            self.regularizers[name] = regularizer
        else:
            self.regularizers.pop(name, None)
        return self.params[name]

    def add_param(self, name: str, value: Array) -> None:
        """Register an existing array as a weight (moved to the backend, default float type)."""
        self.params[name] = backend.to_device(value, dtype=backend.floatx())
        self.grads[name] = None

    def set_trainable(self, name: str, trainable: bool) -> None:
        """Freeze (False) or unfreeze (True) one weight of a built layer, as PyTorch's
        ``param.requires_grad``: the optimizers leave a frozen weight alone (its
        gradient is still computed), while the layer's other weights train. The
        layer-wide ``trainable`` flag still overrides it. Weights made with
        ``add_weight(trainable=False)`` (BatchNormalization's moving statistics)
        are never trained: unfreezing one raises."""
        if not isinstance(trainable, bool):
            raise TypeError(f"{self.describe()}: set_trainable({name!r}, ...) takes True or "
                            f"False, got {trainable!r}")
        if name not in self.params:
            built = "" if self.built else " (build the layer first: the weights do not exist yet)"
            raise ValueError(f"{self.describe()}: set_trainable: no weight named {name!r}; it "
                             f"has {', '.join(self.params) or 'no weights'}{built}")
        if name in self._non_trainable and trainable:
            raise ValueError(f"{self.describe()}: set_trainable: {name!r} is not a trainable "
                             "weight (it is updated by the layer itself, not an optimizer)")
        if trainable:
            self._frozen.discard(name)
        elif name not in self._non_trainable:
            self._frozen.add(name)

    def frozen_params(self) -> list[str]:
        """Names of the weights frozen by ``set_trainable(name, False)``, in ``params``
        order (what model files and checkpoints record)."""
        return [n for n in self.params if n in self._frozen]

    def trained_params(self) -> list[str]:
        """Names of the weights an optimizer updates: none while ``trainable`` is False,
        and none frozen by ``set_trainable``."""
        if not self.trainable:
            return []
        return [n for n in self.params if n not in self._non_trainable and n not in self._frozen]

    @property
    def trainable_weights(self) -> list[Array]:
        return [self.params[n] for n in self.trained_params()]

    @property
    def non_trainable_weights(self) -> list[Array]:
        trained = set(self.trained_params())
        return [p for n, p in self.params.items() if n not in trained]

    @property
    def weights(self) -> list[Array]:
        return list(self.params.values())

    def get_weights(self) -> list:
        """Host copies of the weights, in creation order (Keras's get_weights)."""
        return [backend.to_host(p).copy() for p in self.params.values()]

    def set_weights(self, weights: Sequence[Any]) -> None:
        """Copy ``weights`` (in ``get_weights`` order) into the layer, all shapes checked first."""
        weights = list(weights)
        if len(weights) != len(self.params):
            raise ValueError(f"{self.describe()}: set_weights expected {len(self.params)} "
                             f"arrays ({', '.join(self.params) or 'no weights'}), got {len(weights)}")
        for (name, param), value in zip(self.params.items(), weights):
            if tuple(getattr(value, "shape", ())) != tuple(param.shape):
                raise ValueError(f"{self.describe()}: set_weights: {name} has shape "
                                 f"{tuple(param.shape)}, got {getattr(value, 'shape', value)!r}")
        for param, value in zip(self.params.values(), weights):
            param[...] = backend.to_device(value, dtype=param.dtype)

    def count_params(self) -> int:
        return sum(int(p.size) for p in self.params.values())

    # ----------------------------------------------------------- the maths
    def forward(self, x: Array, training: bool = False) -> Array:
        """y = activation(_forward(x)) for the built-in layers; a custom layer overrides
        this with its own maths."""
        self.check_input(x)  # the same clear errors when a built-in layer is tried on its own
        self.maybe_build(x.shape)
        self.keep_cache = training
        y = self._forward(x, training)
        self._x_shape = tuple(x.shape)
        return y if self.activation is None else self.activation.forward(y)

    def backward(self, dy: Array) -> Array | None:
        """dL/dx from dL/dy for the last forward, filling ``self.grads``."""
        self._require_forward()
        if self.activation is not None:
            dy = self.activation.backward(dy)
        return self._backward(dy)

    def _forward(self, x, training: bool):
        raise NotImplementedError(f"{self.describe()}: override forward(self, x, training=False)")

    def _backward(self, grad):
        raise NotImplementedError(f"{self.describe()}: override backward(self, dy)")

    @property
    def separable_activation(self) -> bool:
        """Can the model run this layer's activation apart from the rest? True for the
        built-in layers that have one (their forward is activation(_forward(x)))."""
        return (self.activation is not None and type(self).forward is Layer.forward
                and type(self).backward is Layer.backward)

    # ----------------------------------------------------------- checked entry points
    def run_forward(self, x: Array, training: bool = False, activate: bool = True,
                    keep_cache: bool | None = None) -> Array:
        """``forward`` as the model calls it: builds on first use, checks x and y against
        the layer's shapes, keeps copies (``retain``) and calls the forward hooks.
        ``activate=False`` stops before a separable activation; ``keep_cache`` (None:
        the same as ``training``) keeps what backward needs (see the module docstring)."""
        self.check_input(x)
        self.maybe_build(x.shape)
        keep_cache = training if keep_cache is None else keep_cache
        if type(self).forward is not Layer.forward:  # a custom layer: one flag for both
            y = self.forward(x, training or keep_cache)
        else:
            self.keep_cache = keep_cache
            y = self._forward(x, training)
            if self.activation is not None and (activate or not self.separable_activation):
                y = self.activation.forward(y)
        if tuple(y.shape[1:]) != tuple(self.output_shape[1:]) or y.shape[0] != x.shape[0]:
            raise ValueError(f"{self.describe()}: forward returned shape {tuple(y.shape)} for an "
                             f"input of shape {tuple(x.shape)}, but compute_output_shape gives "
                             f"{self.output_shape}: a layer that changes the shape must override "
                             "compute_output_shape(input_shape)")
        self._x_shape = tuple(x.shape)
        if self.retain:
            self.last_input, self.last_output = x.copy(), y.copy()
        for hook in list(self._forward_hooks.values()):
            hook(self, x, y)
        return y

    __call__ = run_forward

    def run_backward(self, dy: Array, activate: bool = True) -> Array | None:
        """``backward`` as the model calls it: checks dx and every gradient against the
        shapes they must have, keeps copies (``retain``) and calls the backward hooks."""
        self._require_forward()
        if activate or not self.separable_activation:
            dx = self.backward(dy)
        else:
            dx = self._backward(dy)
        self._check_gradients(dx)
        if self.retain:
            self.last_grad_output = dy.copy()
            self.last_grad_input = None if dx is None else dx.copy()
        for hook in list(self._backward_hooks.values()):
            hook(self, dy, dx)
        return dx

    def _require_forward(self) -> None:
        if self._x_shape is None:
            raise RuntimeError(f"{self.describe()}: backward needs a forward (with "
                               "training=True) first; it uses what forward cached")

    def _check_gradients(self, dx) -> None:
        if dx is None:
            if self.input_grad:
                raise ValueError(f"{self.describe()}: backward returned None; it must return "
                                 f"dL/dx, an array of x's shape {self._x_shape}")
        elif tuple(dx.shape) != self._x_shape:
            raise ValueError(f"{self.describe()}: backward returned dx of shape "
                             f"{tuple(dx.shape)} for an input of shape {self._x_shape}; dx must "
                             "have x's shape")
        for name, param in self.params.items():
            grad = self.grads.get(name)
            if grad is None:
                raise ValueError(f"{self.describe()}: backward left grads[{name!r}] unset; it "
                                 f"must assign self.grads[{name!r}] = dL/d{name}")
            if tuple(grad.shape) != tuple(param.shape):
                raise ValueError(f"{self.describe()}: grads[{name!r}] has shape "
                                 f"{tuple(grad.shape)}, but the weight has {tuple(param.shape)}")

    def check_input(self, x: Array) -> None:
        if not hasattr(x, "shape") or not hasattr(x, "dtype"):
            raise TypeError(f"{self.describe()}: expected an array, got {type(x).__name__}")
        expected = self.input_shape
        if expected is None or tuple(x.shape[1:]) == tuple(expected[1:]):
            return
        shown = "(batch, " + ", ".join(str(d) for d in expected[1:]) + ")"
        hint = ""
        if len(x.shape) == 4 and len(expected) == 4 and \
                tuple(x.shape[2:]) + (x.shape[1],) == tuple(expected[1:]):
            hint = ("; this looks like channels-first (N, C, H, W) data: minicnn is "
                    "channels-last, use x.transpose(0, 2, 3, 1)")
        raise ValueError(f"{self.describe()}: expected input of shape {shown}, "
                         f"got {tuple(x.shape)}{hint}")

    # ----------------------------------------------------------- random state
    def get_rng_state(self) -> dict | None:
        """The state of the layer's random generator as plain data, or None when it has
        none (or its state cannot be read: CuPy's)."""
        return None

    def set_rng_state(self, state: dict | None) -> None:
        """Put the layer's random generator back into a state from ``get_rng_state``."""

    # ----------------------------------------------------------- inspection
    @property
    def watched(self) -> bool:
        """Does anyone look at this layer's values (hooks, or ``retain``)? The model
        then runs it exactly as written, never with its ReLU moved (see models.py)."""
        return bool(self.retain or self._forward_hooks or self._backward_hooks)

    def register_forward_hook(self, hook: Callable) -> "HookHandle":
        """Call ``hook(layer, x, y)`` after every forward the model runs;
        ``.remove()`` the handle to stop."""
        return HookHandle(self._forward_hooks, hook)

    def register_backward_hook(self, hook: Callable) -> "HookHandle":
        """Call ``hook(layer, grad_output, grad_input)`` after every backward
        (``grad_input`` is None where nobody needs it: the model's first layer)."""
        return HookHandle(self._backward_hooks, hook)

    # ----------------------------------------------------------- configuration
    def config(self) -> dict:
        """The constructor arguments that define the architecture (for weight files)."""
        return {}

    def get_config(self) -> dict:
        """Keras's get_config: every constructor argument, as JSON data (tuples as lists),
        so that ``type(layer).from_config(layer.get_config())`` makes the same layer.
        Here: name, trainable, batch_input_shape (when given), dtype and ``config()``;
        each built-in layer adds the rest of its arguments, and a custom layer with
        arguments of its own adds them, as in Keras::

            def get_config(self):
                return {**super().get_config(), "units": self.units}
        """
        config: dict[str, Any] = {"name": self.name, "trainable": self.trainable}
        if self.batch_input_shape is not None:
            config["batch_input_shape"] = self.batch_input_shape
        config["dtype"] = backend.floatx()
        return plain({**config, **self.config()})

    @classmethod
    def from_config(cls, config: dict) -> "Layer":
        """Keras's from_config: a new layer from ``get_config``'s output."""
        return cls(**config)


def plain(value: Any) -> Any:
    """``value`` as JSON data: tuples (nested ones too) become lists, NumPy scalars numbers."""
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # a NumPy scalar
        return value.item()
    return value


def _batch_input_shape(kwargs: dict, layer: str) -> tuple | None:
    """Keras's input_shape / batch_input_shape / batch_size, as one shape with the batch axis."""
    if kwargs.get("batch_input_shape") is not None:
        given = kwargs["batch_input_shape"]
        try:
            batch, *rest = tuple(given)
        except (TypeError, ValueError):
            raise ValueError(f"{layer}: batch_input_shape must be a tuple such as "
                             f"(None, 32, 32, 3), got {given!r}") from None
        return batch_shape((batch, *sample_shape(rest, layer)), layer)
    if kwargs.get("input_shape") is None:
        return None
    batch = kwargs.get("batch_size")
    if batch is not None:
        batch = positive_int(batch, "batch_size", layer)
    return (batch, *sample_shape(kwargs["input_shape"], layer))


def positive_int(value: int, what: str, layer: str) -> int:
    """An int >= 1 (NumPy integers welcome, bools and floats not)."""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{layer}: {what} must be a positive int, got {value!r}")
    return int(value)


def pair(value: int | Sequence[int], what: str, layer: str) -> tuple[int, int]:
    """Keras accepts 3 or (3, 3); always return a pair of positive ints."""
    if isinstance(value, numbers.Integral):
        value = (value, value)
    try:
        a, b = value
    except (TypeError, ValueError):
        a = b = None
    if not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in (a, b)):
        raise ValueError(f"{layer}: {what} must be an int or a pair of ints, got {value!r}")
    if a < 1 or b < 1:
        raise ValueError(f"{layer}: {what} must be positive, got {tuple(value)!r}")
    return int(a), int(b)


def sample_shape(shape: Iterable[int], layer: str) -> tuple[int, ...]:
    """A per-sample shape such as (32, 32, 3): positive ints, no batch axis."""
    if isinstance(shape, numbers.Integral):
        raise ValueError(f"{layer}: input_shape must be a tuple, got the int {shape!r}; "
                         f"write ({shape},) for vectors of {shape} values")
    try:
        shape = tuple(shape)
    except TypeError:
        raise ValueError(f"{layer}: input_shape must be a tuple such as (784,) or "
                         f"(32, 32, 3), got {shape!r}") from None
    if any(d is None for d in shape):
        raise ValueError(f"{layer}: input_shape {shape} must not include the batch axis "
                         f"(None); give the shape of one sample, e.g. {shape[1:]}")
    return tuple(positive_int(d, "every input_shape entry", layer) for d in shape)


def batch_shape(shape: Iterable[int | None], layer: str) -> tuple:
    """A shape with the batch axis first: (None or a batch size, then positive ints)."""
    try:
        batch, *rest = tuple(shape)
    except (TypeError, ValueError):
        raise ValueError(f"{layer}: expected a shape with the batch axis first, such as "
                         f"(None, 32, 32, 3), got {shape!r}") from None
    if batch is not None:
        positive_int(batch, "the batch size", layer)
    return (None, *(positive_int(d, "every input_shape entry", layer) for d in rest))


def check_padding(padding: str, layer: str) -> str:
    """'valid' or 'same', in any case (Keras lower-cases it)."""
    if not isinstance(padding, str) or padding.lower() not in PADDINGS:
        raise ValueError(f"{layer}: unknown padding {padding!r}: expected 'valid' or 'same'")
    return padding.lower()


def check_data_format(data_format: str | None, layer: str) -> None:
    """minicnn is channels-last: None (Keras's default) or 'channels_last'."""
    if data_format is None or (isinstance(data_format, str)
                               and data_format.lower() == "channels_last"):
        return
    raise ValueError(f"{layer}: data_format must be 'channels_last' (NHWC) or None, got "
                     f"{data_format!r}; transpose channels-first data with "
                     "x.transpose(0, 2, 3, 1)")


def unsupported(layer: str, **arguments: Any) -> None:
    """Refuse Keras arguments minicnn does not implement when they are not at their default
    (None), naming each one."""
    for argument, value in arguments.items():
        if value is not None:
            raise ValueError(f"{layer}: {argument}={value!r} is not supported; minicnn takes "
                             f"{argument}=None (Keras's default)")


def regularizer_config(layer: Layer, *kinds: str) -> dict:
    """``{kind}_regularizer`` entries of a layer's config, as Keras serializes them."""
    return {f"{kind}_regularizer": regularizers.serialize(getattr(layer, f"{kind}_regularizer"))
            for kind in kinds}


class HookHandle:
    """Returned by ``register_*_hook``; ``remove()`` unregisters the hook."""

    def __init__(self, hooks: dict, hook: Callable) -> None:
        self._hooks, self._key = hooks, object()  # a unique key, no counter needed
        hooks[self._key] = hook

    def remove(self) -> None:
        self._hooks.pop(self._key, None)
