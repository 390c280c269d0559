"""How a compiled model runs its layers: the two shortcuts, decided once, and the passes.

One training step is the whole of backpropagation::

    h = x;  for layer in layers:            h  = layer.forward(h, training=True)
    L = loss(h, y);  g = dL/dh
    for layer in reversed(layers):          g  = layer.backward(g)
    optimizer.apply(layers)                 # w -= lr * dL/dw

Softmax fusion: when the last layer ends in softmax and the loss is categorical
cross-entropy, the softmax is folded into the loss: the last layer stops at its
logits z and the gradient that starts backward is simply (softmax(z) - y) / N.
A final sigmoid is folded into binary cross-entropy the same way.

Regularizers (``minicnn.regularizers``) add to the loss and to the passes:

    L = loss + sum over regularized weights R(w) + sum over layers R_a(output)
    dL/dw += dR/dw                 (after the layer's backward)
    dL/doutput += dR_a/doutput     (before the layer's backward)

An activity penalty R_a reads the layer's output after its activation, so a
layer with one never has its activation folded into the loss or moved after
a pooling, and a batch goes through in one piece.

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

Batch normalization and its activation, fused: a BatchNormalization followed
by an Activation layer with relu or gelu (either form) runs as one op,
``ops.batch_norm_act_forward``/``_backward`` (minicnn/ops/normalization.py):
the same numbers up to rounding, in two passes over the activations instead
of four, forward and backward. The Activation layer then passes its input
through. Only under the fast ops (``set_ops("reference")`` runs the two layers
as written), while nobody watches either layer, neither has an activity
regularizer, and the Activation is not the model's last layer.

Frozen layers at the bottom: backward stops at the lowest layer that has a
trained weight (``first_trained``). The layers below it have nothing to learn,
so they get no backward pass (their ``grads`` are zeros), and that layer skips
dL/dx (``input_grad`` is False). PyTorch's autograd does the same for tensors
that need no gradient; for airbench's frozen whitening convolution it saves
a convolution's input gradient every step once its bias is frozen. Training
steps do this; ``compute_gradients`` (what the gradient checks use) and the
gradient tracer run every layer.

``Plan`` is made by ``compile`` from the layers and the loss; which of its
moves and fusions apply is read at the start of each step (``relu_moves``: the
ints i of the ReLU moves, and ("norm", i) for a batch-norm fusion of layers i
and i + 1) and handed to both passes of that step, so forward and backward
always agree.
"""
from __future__ import annotations

from minicnn import activations, backend, losses, ops
from minicnn.backend import Array
from minicnn.layers.activation import Activation
from minicnn.layers.base import Layer
from minicnn.regularizers import Regularizer

INFERENCE_SLICE = 1024  # images per pass through the network at inference (see forward)


class Plan:
    """The shortcuts ``compile`` chose for ``layers`` trained with ``loss``."""

    def __init__(self, layers: list[Layer], loss: losses.Loss | None) -> None:
        head = layers[-1] if layers else None
        self.fused = None if loss is None or head is None or activity(head) else \
            losses.fused_with(loss, head.activation if head.separable_activation else None)
        self.relu_pairs = tuple(
            i for i in range(len(layers) - 1)
            if layers[i].separable_activation and isinstance(layers[i].activation, activations.ReLU)
            and getattr(layers[i + 1], "commutes_with_relu", False) and not activity(layers[i]))
        self.norm_pairs = tuple(
            i for i in range(len(layers) - 2)  # the last layer's activation may go to the loss
            if hasattr(layers[i], "fused_activation_forward") and layers[i].activation is None
            and pure_activation(layers[i + 1]) and not activity(layers[i])
            and not activity(layers[i + 1])
            and layers[i].fusable_activation(layers[i + 1].activation) is not None)

    def relu_moves(self, layers: list[Layer]) -> frozenset:
        """This step's moves and fusions, those nobody watches: the i whose ReLU runs
        after layers[i + 1], and ("norm", i) where layers i and i + 1 run fused."""
        moves = {i for i in self.relu_pairs if not layers[i].watched and not layers[i + 1].watched}
        if ops.get_ops() == "fast":
            fused = {i for i in self.norm_pairs
                     if not layers[i].watched and not layers[i + 1].watched}
            # a fused Activation("relu") before a pooling keeps its ReLU inside the fusion
            moves = (moves - {i + 1 for i in fused}) | {("norm", i) for i in fused}
        return frozenset(moves)


def pure_activation(layer: Layer) -> bool:
    """Is the layer only its activation (the built-in Activation: y = f(x))?"""
    return (isinstance(layer, Activation) and layer.separable_activation
            and type(layer)._forward is Activation._forward
            and type(layer)._backward is Activation._backward)


def activity(layer: Layer) -> Regularizer | None:
    """The layer's activity regularizer, if it has one."""
    return getattr(layer, "activity_regularizer", None)


def penalty(layers: list[Layer]) -> Array | None:
    """The regularization penalty: every regularized weight's R(w), plus every activity
    penalty of the last ``forward``; None when no layer has a regularizer."""
    terms = [regularizer(layer.params[name]) for layer in layers
             for name, regularizer in getattr(layer, "regularizers", {}).items()]
    terms += [layer.activity_penalty for layer in layers if activity(layer) is not None]
    return sum(terms[1:], terms[0]) if terms else None


def forward(layers: list[Layer], x: Array, training: bool, final_activation: bool,
            moves: frozenset[int] = frozenset()) -> Array:
    """The layers' forward passes, with the ReLUs of ``moves`` after their pooling."""
    n, size = x.shape[0], INFERENCE_SLICE
    if (not training and n > size and not backend.is_device_array(x)
            and not any(layer.watched or activity(layer) for layer in layers)):
        # Inference treats every image on its own, so on the host a large batch goes
        # through the whole network a slice at a time: its activations then take no
        # more memory than a training batch of INFERENCE_SLICE images. The slice is
        # large because the layers split their work over the host's threads and
        # keep their own blocks in cache: smaller slices cost each layer's call
        # overhead more often (benchmarks/bench_inference.py; docs/performance.md).
        # (A GPU wants few, large launches: no slicing there.)
        xp = backend.get_array_module(x)
        return xp.concatenate([forward(layers, x[start:start + size], False, final_activation,
                                       moves) for start in range(0, n, size)])
    last = len(layers) - 1
    for i, layer in enumerate(layers):
        if ("norm", i - 1) in moves:  # the Activation whose function ran fused just before
            layer._x_shape = tuple(x.shape)
            continue
        if ("norm", i) in moves:
            x = layer.run_fused_forward(x, training, layers[i + 1].activation)
            continue
        x = layer.run_forward(x, training, activate=i not in moves and (final_activation or i < last))
        if i - 1 in moves:  # this layer is the pooling: now the ReLU of the layer before
            x = layers[i - 1].activation.forward(x)
        if activity(layer) is not None:  # R_a of the whole batch's output (after activation)
            layer.activity_penalty = activity(layer)(x)
            layer.activity_output = x if training else None  # what its gradient reads
    return x


def first_trained(layers: list[Layer]) -> int:
    """The index of the lowest layer with a trained weight (len(layers) if none)."""
    return next((i for i, layer in enumerate(layers) if layer.trained_params()), len(layers))


def backward(layers: list[Layer], grad: Array, final_activation: bool,
             moves: frozenset[int] = frozenset(), skip_frozen_bottom: bool = False) -> None:
    """The layers' backward passes after a training ``forward`` with the same ``moves``;
    with ``skip_frozen_bottom``, none below ``first_trained`` (their grads set to 0)."""
    last = len(layers) - 1
    start = first_trained(layers) if skip_frozen_bottom else 0
    for i, layer in enumerate(layers):
        layer.input_grad = i > start  # nobody needs dL/dx below the lowest trained weight
        if i < start:
            xp = backend.get_array_module(grad)
            layer.grads.update({name: xp.zeros_like(param) for name, param in layer.params.items()})
    for i in reversed(range(start, len(layers))):
        layer = layers[i]
        if activity(layer) is not None:
            if layer.activity_output is None:
                raise RuntimeError(f"{layer.describe()}: backward needs a forward with "
                                   "training=True (its activity regularizer reads the output)")
            grad = grad + activity(layer).gradient(layer.activity_output)
        if i - 1 in moves:  # the ReLU that forward applied after this pooling
            grad = layers[i - 1].activation.backward(grad)
        if ("norm", i - 1) in moves:  # its function's gradient is in the fused backward
            continue
        if ("norm", i) in moves:
            grad = layer.run_fused_backward(grad)
        else:
            grad = layer.run_backward(grad, activate=i not in moves
                                      and (final_activation or i < last))
        for name, regularizer in getattr(layer, "regularizers", {}).items():
            layer.grads[name] = layer.grads[name] + regularizer.gradient(layer.params[name])
