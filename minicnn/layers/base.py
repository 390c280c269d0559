"""The layer contract every layer follows.

    y  = layer.forward(x, training)     # caches what backward needs
    dx = layer.backward(dy)             # fills layer.grads, returns dL/dx

Each layer class writes only its own maths, ``_forward`` and ``_backward``;
the base class adds the shape checks, the activation (y = activation(z) with
z = _forward(x)), and the inspection hooks. ``forward(x, training,
activate=False)`` stops at z, which is how the model fuses a final softmax
with the cross-entropy loss.

Parameters and their gradients are dicts keyed by Keras's names ("kernel",
"bias"); the arrays are updated in place, so ``layer.params["kernel"][...] = w``
changes what the next forward uses.
"""
from __future__ import annotations

import numbers
from typing import Any, Callable, Iterable, Sequence

from minicnn import activations, backend
from minicnn.backend import Array
from minicnn.layers.im2col import PADDINGS


class Layer:
    """Base class: shape checks, lazy building, the activation, and the hooks."""

    def __init__(self, input_shape: tuple[int, ...] | None = None, name: str | None = None,
                 activation: str | activations.ActivationFunction | None = None) -> None:
        self.name = name
        self.input_shape = (sample_shape(input_shape, type(self).__name__)
                            if input_shape is not None else None)
        self.activation = (activations.get(activation, type(self).__name__)
                           if activation is not None else None)
        self.params: dict[str, Any] = {}
        self.grads: dict[str, Any] = {}
        self.built = False
        # The model switches this off for its first layer: nobody needs dL/dinput there.
        self.input_grad = True
        # Inspection: set retain = True to keep copies of the last input, output and
        # gradients (last_input, last_output, last_grad_output, last_grad_input).
        # Off by default, so training keeps no copies nobody asked for.
        self.retain = False
        self._forwarded = False  # backward needs the cache of a forward
        self.last_input = self.last_output = self.last_grad_output = self.last_grad_input = None
        self._forward_hooks: dict[object, Callable] = {}
        self._backward_hooks: dict[object, Callable] = {}

    # ----------------------------------------------------------- shapes
    @property
    def kind(self) -> str:
        return type(self).__name__

    def describe(self) -> str:
        return f"{self.kind} {self.name!r}" if self.name else self.kind

    def expected_rank(self) -> int | None:
        """Rank of one sample (without the batch axis), or None for any."""
        return None

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of one output sample for one input sample of ``input_shape``."""
        return tuple(input_shape)

    def build(self, input_shape: tuple[int, ...]) -> None:
        """Create parameters for samples of ``input_shape`` (batch axis excluded)."""
        input_shape = sample_shape(input_shape, self.describe())
        rank = self.expected_rank()
        if rank is not None and len(input_shape) != rank:
            raise ValueError(f"{self.describe()}: expected samples of rank {rank} "
                             f"(input of shape (batch, {', '.join('d' * rank)})), "
                             f"got samples of shape {input_shape}")
        self.input_shape = input_shape
        self.output_shape(input_shape)  # validates sizes (e.g. a window larger than the input)
        self._build(input_shape)
        self.built = True

    def _build(self, input_shape: tuple[int, ...]) -> None:
        pass

    def check_input(self, x: Array) -> None:
        if not hasattr(x, "shape") or not hasattr(x, "dtype"):
            raise TypeError(f"{self.describe()}: expected an array, got {type(x).__name__}")
        if self.input_shape is None or tuple(x.shape[1:]) == self.input_shape:
            return
        expected = "(batch, " + ", ".join(str(d) for d in self.input_shape) + ")"
        hint = ""
        if (len(x.shape) == 4 and len(self.input_shape) == 3
                and tuple(x.shape[2:]) + (x.shape[1],) == self.input_shape):
            hint = ("; this looks like channels-first (N, C, H, W) data: minicnn is "
                    "channels-last, use x.transpose(0, 2, 3, 1)")
        raise ValueError(f"{self.describe()}: expected input of shape {expected}, "
                         f"got {tuple(x.shape)}{hint}")

    # ----------------------------------------------------------- params
    def add_param(self, name: str, value: Array) -> None:
        """Register a parameter, moved to the backend in the default float type."""
        self.params[name] = backend.to_device(value, dtype=backend.floatx())
        self.grads[name] = None

    def count_params(self) -> int:
        return sum(int(p.size) for p in self.params.values())

    # ----------------------------------------------------------- passes
    def forward(self, x: Array, training: bool = False, *, activate: bool = True) -> Array:
        """y = activation(f(x)); caches what backward needs.

        ``activate=False`` stops at z = f(x): the model uses it to hand a final
        softmax's logits to the fused softmax-cross-entropy loss.
        """
        self.check_input(x)
        if not self.built:
            self.build(x.shape[1:])
        y = self._forward(x, training)
        self._forwarded = True
        if activate and self.activation is not None:
            y = self.activation.forward(y)
        if self.retain:
            self.last_input, self.last_output = x.copy(), y.copy()
        for hook in list(self._forward_hooks.values()):
            hook(self, x, y)
        return y

    def backward(self, grad: Array, *, activate: bool = True) -> Array | None:
        """dL/dx from dL/dy for the last forward; fills ``self.grads``."""
        if not self._forwarded:
            raise RuntimeError(f"{self.describe()}: backward needs a forward (with "
                               "training=True) first; it uses what forward cached")
        grad_output = grad
        if activate and self.activation is not None:
            grad = self.activation.backward(grad)
        grad_input = self._backward(grad)
        if self.retain:
            self.last_grad_output = grad_output.copy()
            self.last_grad_input = None if grad_input is None else grad_input.copy()
        for hook in list(self._backward_hooks.values()):
            hook(self, grad_output, grad_input)
        return grad_input

    # ----------------------------------------------------------- inspection
    @property
    def watched(self) -> bool:
        """Does anyone look at this layer's values (hooks, or ``retain``)? The model
        then runs it exactly as written, never with its ReLU moved (see models.py)."""
        return bool(self.retain or self._forward_hooks or self._backward_hooks)

    def register_forward_hook(self, hook: Callable) -> "HookHandle":
        """Call ``hook(layer, x, y)`` after every forward; ``.remove()`` the handle to stop."""
        return HookHandle(self._forward_hooks, hook)

    def register_backward_hook(self, hook: Callable) -> "HookHandle":
        """Call ``hook(layer, grad_output, grad_input)`` after every backward
        (``grad_input`` is None where nobody needs it: the model's first layer)."""
        return HookHandle(self._backward_hooks, hook)

    def _forward(self, x, training: bool):
        raise NotImplementedError

    def _backward(self, grad):
        raise NotImplementedError

    def config(self) -> dict:
        """The constructor arguments that define the architecture (for weight files)."""
        return {}

    def __repr__(self) -> str:
        return f"<{self.describe()}>"


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
    try:
        shape = tuple(shape)
    except TypeError:
        raise ValueError(f"{layer}: input_shape must be a tuple such as (784,) or "
                         f"(32, 32, 3), got {shape!r}") from None
    if any(d is None for d in shape):
        raise ValueError(f"{layer}: input_shape {shape} must not include the batch axis "
                         f"(None); give the shape of one sample, e.g. {shape[1:]}")
    return tuple(positive_int(d, "every input_shape entry", layer) for d in shape)


def check_padding(padding: str, layer: str) -> str:
    if padding not in PADDINGS:
        raise ValueError(f"{layer}: unknown padding {padding!r}: expected 'valid' or 'same'")
    return padding


class HookHandle:
    """Returned by ``register_*_hook``; ``remove()`` unregisters the hook."""

    def __init__(self, hooks: dict, hook: Callable) -> None:
        self._hooks, self._key = hooks, object()  # a unique key, no counter needed
        hooks[self._key] = hook

    def remove(self) -> None:
        self._hooks.pop(self._key, None)
