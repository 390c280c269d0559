"""2-D convolution, channels-last, as one matrix product over im2col.

Forward (W reshaped to (kh*kw*c_in, filters)):
    col = im2col(x)                     (N*OH*OW, kh*kw*c_in)
    y   = col @ W + b                   (N*OH*OW, filters) -> (N, OH, OW, filters)
Backward, with dy flattened the same way:
    dW = col^T @ dy      db = sum over rows of dy      dx = col2im(dy @ W^T)
"""
from __future__ import annotations

from minicnn import backend, initializers
from minicnn.layers import im2col as win
from minicnn.layers.base import Layer, check_padding, pair


class Conv2D(Layer):
    def __init__(self, filters: int, kernel_size, strides=(1, 1), padding: str = "valid",
                 activation=None, use_bias: bool = True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", input_shape=None, data_format: str = "channels_last",
                 name: str | None = None) -> None:
        super().__init__(input_shape=input_shape, name=name, activation=activation)
        if not isinstance(filters, int) or filters < 1:
            raise ValueError(f"Conv2D: filters must be a positive int, got {filters!r}")
        if data_format != "channels_last":
            raise ValueError(f"Conv2D: data_format must be 'channels_last' (NHWC), got "
                             f"{data_format!r}; transpose channels-first data with "
                             "x.transpose(0, 2, 3, 1)")
        self.filters = filters
        self.kernel_size = pair(kernel_size, "kernel_size", "Conv2D")
        self.strides = pair(strides, "strides", "Conv2D")
        self.padding = check_padding(padding, "Conv2D")
        self.use_bias = use_bias
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)

    def expected_rank(self) -> int:
        return 3

    def output_shape(self, input_shape):
        h, w, _ = input_shape
        (kh, kw), (sh, sw) = self.kernel_size, self.strides
        oh = win.output_length(h, kh, sh, self.padding)
        ow = win.output_length(w, kw, sw, self.padding)
        if oh < 1 or ow < 1:
            raise ValueError(f"{self.describe()}: kernel {self.kernel_size} with padding "
                             f"'valid' does not fit an input of {h}x{w}")
        return oh, ow, self.filters

    def _build(self, input_shape) -> None:
        kh, kw = self.kernel_size
        rng = backend.host_rng()
        self.add_param("kernel", self.kernel_initializer((kh, kw, input_shape[2], self.filters), rng))
        if self.use_bias:
            self.add_param("bias", self.bias_initializer((self.filters,), rng))

    def _forward(self, x, training):
        n, h, w, c = x.shape
        oh, ow, f = self.output_shape((h, w, c))
        pads = (win.padding_amounts(h, self.kernel_size[0], self.strides[0], self.padding),
                win.padding_amounts(w, self.kernel_size[1], self.strides[1], self.padding))
        x_padded = win.pad(x, pads)
        col = win.im2col(x_padded, self.kernel_size, self.strides, (oh, ow))
        y = col @ self.params["kernel"].reshape(-1, f)
        if self.use_bias:
            y += self.params["bias"]
        self._cache = (col, x_padded.shape, pads, (oh, ow))
        return y.reshape(n, oh, ow, f)

    def _backward(self, grad):
        col, padded_shape, pads, out_hw = self._cache
        kernel = self.params["kernel"]
        dy = grad.reshape(-1, self.filters)
        # (dy^T col)^T, not col^T dy: the same numbers, but BLAS is far faster when
        # the long axis (N*OH*OW) is the inner one of both operands.
        self.grads["kernel"] = (dy.T @ col).T.reshape(kernel.shape)
        if self.use_bias:
            self.grads["bias"] = dy.sum(axis=0)
        if not self.input_grad:
            return None
        dcol = dy @ kernel.reshape(-1, self.filters).T
        dx = win.col2im(dcol, padded_shape, self.kernel_size, self.strides, out_hw)
        (top, bottom), (left, right) = pads
        return dx[:, top:padded_shape[1] - bottom, left:padded_shape[2] - right, :]

    def config(self) -> dict:
        return {"filters": self.filters, "kernel_size": self.kernel_size,
                "strides": self.strides, "padding": self.padding, "use_bias": self.use_bias}
