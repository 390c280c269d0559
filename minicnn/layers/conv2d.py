"""2-D convolution, channels-last, as one matrix product over im2col.

Forward (W reshaped to (kh*kw*c_in, filters)):
    y[n, oy, ox, f] = b[f] + sum_{i,j,c} x[n, oy*sh + i*dh, ox*sw + j*dw, c] W[i, j, c, f]
    col = im2col(x)                     (N*OH*OW, kh*kw*c_in)
    y   = col @ W + b                   (N*OH*OW, filters) -> (N, OH, OW, filters)
Backward, with dy flattened the same way:
    dW = col^T @ dy      db = sum over rows of dy      dx = col2im(dy @ W^T)

A dilation_rate (dh, dw) spaces the kernel's taps dh rows and dw columns apart:
the window spans dh*(kh-1)+1 by dw*(kw-1)+1 pixels, and 'valid' / 'same' output
sizes and padding are those of a dense kernel that size (as Keras and TF compute
them); dilation 1 is the plain convolution. Only im2col's reads and col2im's
adds move; the products are the same. As in Keras, strides and dilation_rate
cannot both be above 1.

``ops.conv2d_forward`` and ``ops.conv2d_backward`` compute these lines; the
plain version is in ``minicnn/ops/reference.py``, the fast one (the bias as an
extra row of W, col kept in a reused buffer, dx one kernel offset at a time)
in ``minicnn/ops/conv.py``.
"""
from __future__ import annotations

from typing import Any, Callable

from minicnn import activations, initializers, ops, regularizers
from minicnn.backend import Array
from minicnn.layers.base import (Layer, check_data_format, check_padding, pair, plain,
                                 positive_int, regularizer_config, unsupported)
from minicnn.ops import windows as win


class Conv2D(Layer):
    input_ndim = 4

    def __init__(self, filters: int, kernel_size: int | tuple[int, int],
                 strides: int | tuple[int, int] = (1, 1), padding: str = "valid",
                 data_format: str | None = None, dilation_rate: int | tuple[int, int] = (1, 1),
                 activation: str | activations.ActivationFunction | None = None,
                 use_bias: bool = True, kernel_initializer: str | Callable = "glorot_uniform",
                 bias_initializer: str | Callable = "zeros", kernel_regularizer: Any = None,
                 bias_regularizer: Any = None, activity_regularizer: Any = None,
                 kernel_constraint: Any = None, bias_constraint: Any = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_data_format(data_format, "Conv2D")
        unsupported("Conv2D", kernel_constraint=kernel_constraint, bias_constraint=bias_constraint)
        self.kernel_regularizer = regularizers.get(kernel_regularizer, "Conv2D kernel_regularizer")
        self.bias_regularizer = regularizers.get(bias_regularizer, "Conv2D bias_regularizer")
        self.activity_regularizer = regularizers.get(activity_regularizer,
                                                     "Conv2D activity_regularizer")
        self.filters = positive_int(filters, "filters", "Conv2D")
        self.kernel_size = pair(kernel_size, "kernel_size", "Conv2D")
        self.strides = pair(strides, "strides", "Conv2D")
        self.dilation_rate = pair(dilation_rate, "dilation_rate", "Conv2D")
        if self.dilation_rate != (1, 1) and self.strides != (1, 1):
            raise ValueError(f"Conv2D: strides={self.strides} with dilation_rate="
                             f"{self.dilation_rate} is not supported: as in Keras, strides > 1 "
                             "cannot be combined with dilation_rate > 1")
        self.padding = check_padding(padding, "Conv2D")
        self.use_bias = bool(use_bias)
        self.kernel_initializer = initializers.get(kernel_initializer, "Conv2D kernel_initializer")
        self.bias_initializer = initializers.get(bias_initializer, "Conv2D bias_initializer")
        self.activation = activations.get(activation, "Conv2D") if activation is not None else None
        if self.activation is not None:
            # Our output is a new array nobody else holds: the activation may work in place.
            self.activation.overwrite_input = True
        self._workspace = ops.Workspace()  # col's memory, reused step after step
        self._cache: ops.ConvCache | None = None

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        n, h, w, _ = input_shape
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.strides, self.dilation_rate
        oh = win.output_length(h, win.dilated(kh, dh), sh, self.padding)
        ow = win.output_length(w, win.dilated(kw, dw), sw, self.padding)
        if oh < 1 or ow < 1:
            dilation = ("" if self.dilation_rate == (1, 1) else
                        f" and dilation_rate {self.dilation_rate} (a window of "
                        f"{win.dilated(kh, dh)}x{win.dilated(kw, dw)})")
            raise ValueError(f"{self.describe()}: kernel {self.kernel_size}{dilation} with "
                             f"padding 'valid' does not fit an input of {h}x{w}")
        return n, oh, ow, self.filters

    def im2col_shapes(self, input_shape: tuple[int, ...]
                      ) -> tuple[tuple[int, int], tuple[int, int]]:
        """Shapes of the forward product col @ W for a batch of ``input_shape`` (N, H, W, C)."""
        n, h, w, c = input_shape
        _, oh, ow, f = self.compute_output_shape(input_shape)
        kh, kw = self.kernel_size
        return (n * oh * ow, kh * kw * c), (kh * kw * c, f)

    def build(self, input_shape: tuple) -> None:
        self.add_weight("kernel", (*self.kernel_size, input_shape[-1], self.filters),
                        initializer=self.kernel_initializer, regularizer=self.kernel_regularizer)
        if self.use_bias:
            self.add_weight("bias", (self.filters,), initializer=self.bias_initializer,
                            regularizer=self.bias_regularizer)
        super().build(input_shape)

    def im2col_operands(self) -> tuple[Array, Array]:
        """(col, W): the operands of the last training forward's product y = col @ W
        (with the fast ops, col ends in a ones column and W in the bias row)."""
        if self._cache is None:
            raise RuntimeError(f"{self.describe()}: no forward with training=True yet")
        return ops.conv_col(self._cache, self.use_bias), self._cache.matrix

    def _forward(self, x, training):
        bias = self.params["bias"] if self.use_bias else None
        y, self._cache = ops.conv2d_forward(x, self.params["kernel"], bias, self.strides,
                                            self.padding, self.keep_cache, self._workspace,
                                            self.dilation_rate)
        return y

    def _backward(self, grad):
        if self._cache is None:
            raise RuntimeError(f"{self.describe()}: backward needs a forward with training=True")
        dx, self.grads["kernel"], d_bias = ops.conv2d_backward(
            grad, self.params["kernel"], self.use_bias, self._cache, self.input_grad,
            self._workspace)
        if self.use_bias:
            self.grads["bias"] = d_bias
        return dx

    def config(self) -> dict:
        return {"filters": self.filters, "kernel_size": self.kernel_size,
                "strides": self.strides, "padding": self.padding,
                "dilation_rate": self.dilation_rate, "use_bias": self.use_bias,
                "activation": activations.name_of(self.activation)}

    def get_config(self) -> dict:
        return plain({
            **super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size,
            "strides": self.strides, "padding": self.padding, "data_format": "channels_last",
            "dilation_rate": self.dilation_rate,
            "activation": activations.serialize(self.activation), "use_bias": self.use_bias,
            "kernel_initializer": initializers.serialize(self.kernel_initializer),
            "bias_initializer": initializers.serialize(self.bias_initializer),
            **regularizer_config(self, "kernel", "bias", "activity"),
            "kernel_constraint": None, "bias_constraint": None})
