"""How a compiled model runs its layers: the two shortcuts, decided once, and the passes.

One training step is the whole of backpropagation::

    h = x;  for layer in layers:            h  = layer.forward(h, training=True)
    L = loss(h, y);  g = dL/dh
    for layer in reversed(layers):          g  = layer.backward(g)
    optimizer.apply(layers)                 # w -= lr * dL/dw

Softmax fusion: when the last layer ends in softmax and the loss is categorical
cross-entropy, the softmax is folded into the loss: the last layer stops at its
logits z and the gradient that starts backward is simply (softmax(z) - y) / N.

ReLU after pooling, which never changes a single bit of any result: ReLU
never reorders values, so the winner of a max-pooling window is the same
before and after it, and

    maxpool(relu(z)) == relu(maxpool(z))

with the same gradient (where a window's max is <= 0 its gradient is 0 either
way). So when a layer with a separable ReLU (Conv2D(..., activation="relu")) is
followed by a layer that declares ``commutes_with_relu = True`` (max-pooling),
the passes run the layer without its ReLU and apply the ReLU to the pooled
output, in forward and in backward: a quarter of the elements under 2x2
pooling. Only while nobody watches either layer (hooks, ``retain``, the
gradient tracer), because they would see z in place of relu(z).

``Plan`` is made by ``compile`` from the layers and the loss; which of its ReLU
moves apply is read at the start of each step (``relu_moves``) and handed to
both passes of that step, so forward and backward always agree.
"""
from __future__ import annotations

from minicnn import activations, backend, losses
from minicnn.backend import Array
from minicnn.layers.base import Layer

INFERENCE_SLICE = 32  # images per pass through the network at inference (see forward)


class Plan:
    """The shortcuts ``compile`` chose for ``layers`` trained with ``loss``."""

    def __init__(self, layers: list[Layer], loss: losses.Loss | None) -> None:
        head = layers[-1] if layers else None
        self.fused = None if loss is None or head is None else losses.fused_with_softmax(
            loss, head.activation if head.separable_activation else None)
        self.relu_pairs = tuple(
            i for i in range(len(layers) - 1)
            if layers[i].separable_activation and isinstance(layers[i].activation, activations.ReLU)
            and getattr(layers[i + 1], "commutes_with_relu", False))

    def relu_moves(self, layers: list[Layer]) -> frozenset[int]:
        """The i whose ReLU runs after layers[i + 1] this step: those nobody watches."""
        return frozenset(i for i in self.relu_pairs
                         if not layers[i].watched and not layers[i + 1].watched)


def forward(layers: list[Layer], x: Array, training: bool, final_activation: bool,
            moves: frozenset[int] = frozenset()) -> Array:
    """The layers' forward passes, with the ReLUs of ``moves`` after their pooling."""
    n, size = x.shape[0], INFERENCE_SLICE
    if (not training and n > size and not backend.is_device_array(x)
            and not any(layer.watched for layer in layers)):
        # Inference treats every image on its own, so on the host a large batch can
        # go through the whole network a slice at a time: each slice's activations
        # stay in cache from layer to layer, where a batch of 256 would make the
        # first layer's output 236 MB and stream it through memory for every layer.
        # (A GPU wants the opposite: few, large launches.)
        xp = backend.get_array_module(x)
        return xp.concatenate([forward(layers, x[start:start + size], False, final_activation,
                                       moves) for start in range(0, n, size)])
    last = len(layers) - 1
    for i, layer in enumerate(layers):
        x = layer.run_forward(x, training, activate=i not in moves and (final_activation or i < last))
        if i - 1 in moves:  # this layer is the pooling: now the ReLU of the layer before
            x = layers[i - 1].activation.forward(x)
    return x


def backward(layers: list[Layer], grad: Array, final_activation: bool,
             moves: frozenset[int] = frozenset()) -> None:
    """The layers' backward passes after a training ``forward`` with the same ``moves``."""
    last = len(layers) - 1
    for i in reversed(range(len(layers))):
        if i - 1 in moves:  # the ReLU that forward applied after this pooling
            grad = layers[i - 1].activation.backward(grad)
        grad = layers[i].run_backward(grad, activate=i not in moves
                                      and (final_activation or i < last))
