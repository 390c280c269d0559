"""Looking inside a model: saliency gradients and a shape trace of one batch.

    input_gradient(layers, x, classes)  d score[classes] / d x, for saliency maps
    trace_shapes(layers, run)           every forward and backward shape, with the
                                        im2col product of each convolution

Both run a real forward and backward pass through the layers' own code, so
what they show is what training does. They work on a stack of layers and a
batch already on the backend; ``Sequential.input_gradient`` and
``Sequential.trace_shapes`` check the data and call them.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from minicnn import activations, backend
from minicnn.backend import Array


def input_gradient(layers: list, x: Array, classes: Array) -> Array:
    """d(score of ``classes[n]``)/d(x[n]) for each sample of the batch x (on the
    backend, the layers built for it), for the network as it predicts (Dropout off).

    The score is the logit (before a final softmax), as in saliency maps. The
    layers run as at inference (training=False: Dropout is the identity) but keep
    what backward needs (keep_cache=True).
    """
    xp = backend.get_array_module(x)
    head = layers[-1]
    before_softmax = head.separable_activation and isinstance(head.activation, activations.Softmax)
    scores = x
    for layer in layers[:-1]:
        scores = layer.run_forward(scores, training=False, keep_cache=True)
    scores = head.run_forward(scores, training=False, activate=not before_softmax,
                              keep_cache=True)
    grad = xp.zeros_like(scores)
    grad[xp.arange(x.shape[0]), backend.to_device(np.asarray(classes).reshape(-1))] = 1
    needed = [layer.input_grad for layer in layers]  # training may have switched some off
    for layer in layers:
        layer.input_grad = True
    try:
        grad = head.run_backward(grad, activate=not before_softmax)
        for layer in reversed(layers[:-1]):
            grad = layer.run_backward(grad)
    finally:
        for layer, flag in zip(layers, needed):
            layer.input_grad = flag
    return grad


def backward_from_ones(layers: list, out: Array) -> None:
    """Backward through every layer from dL/d(out) = 1, after a training forward."""
    grad = backend.get_array_module(out).ones_like(out)
    for layer in reversed(layers):
        grad = layer.run_backward(grad)


def trace_shapes(layers: list, run: Callable[[], object],
                 print_fn: Callable[[str], None] = print) -> list[dict]:
    """Call ``run()`` (one batch forward and backward through ``layers``, no update)
    and print every shape on the way.

    For each layer: its output shape, the shape of the gradient it passes
    back to the layer before, and, for convolutions, the im2col product.
    Random generators are left as they were.
    """
    states = [(layer, layer.get_rng_state()) for layer in layers]
    rows = {layer.name: {"layer": f"{layer.name} ({layer.kind})"} for layer in layers}

    def on_forward(layer, inputs, outputs):
        rows[layer.name]["input"] = tuple(inputs.shape)
        rows[layer.name]["output"] = tuple(outputs.shape)
        if hasattr(layer, "im2col_shapes"):
            col, kernel = layer.im2col_shapes(tuple(inputs.shape))
            rows[layer.name]["im2col"] = f"{col} @ {kernel}"

    def on_backward(layer, grad_output, grad_input):
        rows[layer.name]["grad_output"] = tuple(grad_output.shape)
        rows[layer.name]["grad_input"] = ("not needed (first layer)" if grad_input is None
                                          else tuple(grad_input.shape))

    handles = [h for layer in layers for h in (layer.register_forward_hook(on_forward),
                                                layer.register_backward_hook(on_backward))]
    try:
        run()
    finally:
        for handle in handles:
            handle.remove()
        for layer, state in states:
            layer.set_rng_state(state)
    table = list(rows.values())
    widths = (32, 20, 26, 24)
    print_fn("".join(f"{h:<{w}}" for h, w in zip(
        ("Layer (type)", "forward output", "backward dL/dinput", "im2col product"), widths)))
    for row in table:
        cells = (row["layer"], str(row.get("output", "")), str(row.get("grad_input", "")),
                 row.get("im2col", ""))
        print_fn("".join(f"{c:<{w - 1}} " for c, w in zip(cells, widths)).rstrip())
    return table
