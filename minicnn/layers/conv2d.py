"""2-D convolution, channels-last, as one matrix product over im2col.

Forward (W reshaped to (kh*kw*c_in, filters)):
    col = im2col(x)                     (N*OH*OW, kh*kw*c_in)
    y   = col @ W + b                   (N*OH*OW, filters) -> (N, OH, OW, filters)
Backward, with dy flattened the same way:
    dW = col^T @ dy      db = sum over rows of dy      dx = col2im(dy @ W^T)

col2im adds each kernel offset's columns back onto its window, so the code
runs that last product one offset at a time on the host, dy @ W[i, j]^T, and
adds it as soon as it is made; on a GPU it makes all of dcol in one product and
hands it to im2col.col2im (one kernel there).

The bias rides along in the products. col gets a last column of ones and W a
last row holding b, so

    y = [col 1] @ [W; b]          [dW; db] = [col 1]^T @ dy

are one BLAS call each, and no extra pass over the output adds b or sums dy
(for the first layer's 29 MB output such a pass costs about as much as the
product itself).
"""
from __future__ import annotations

from typing import Any, Callable

from minicnn import activations, backend, initializers
from minicnn.layers import im2col as win
from minicnn.layers.base import (Layer, check_data_format, check_padding, pair, positive_int,
                                 unsupported)


class Conv2D(Layer):
    IMAGES_PER_BLOCK = 16  # images per im2col block at inference (see _forward)

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
        if pair(dilation_rate, "dilation_rate", "Conv2D") != (1, 1):
            raise ValueError(f"Conv2D: dilation_rate={dilation_rate!r} is not supported; "
                             "minicnn takes dilation_rate=(1, 1) (Keras's default)")
        unsupported("Conv2D", kernel_regularizer=kernel_regularizer,
                    bias_regularizer=bias_regularizer, activity_regularizer=activity_regularizer,
                    kernel_constraint=kernel_constraint, bias_constraint=bias_constraint)
        self.filters = positive_int(filters, "filters", "Conv2D")
        self.kernel_size = pair(kernel_size, "kernel_size", "Conv2D")
        self.strides = pair(strides, "strides", "Conv2D")
        self.padding = check_padding(padding, "Conv2D")
        self.use_bias = bool(use_bias)
        self.kernel_initializer = initializers.get(kernel_initializer, "Conv2D kernel_initializer")
        self.bias_initializer = initializers.get(bias_initializer, "Conv2D bias_initializer")
        self.activation = activations.get(activation, "Conv2D") if activation is not None else None
        if self.activation is not None:
            # Our output is a new array nobody else holds: the activation may work in place.
            self.activation.overwrite_input = True
        self._buffers = {}
        self._cache = None

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        n, h, w, _ = input_shape
        (kh, kw), (sh, sw) = self.kernel_size, self.strides
        oh = win.output_length(h, kh, sh, self.padding)
        ow = win.output_length(w, kw, sw, self.padding)
        if oh < 1 or ow < 1:
            raise ValueError(f"{self.describe()}: kernel {self.kernel_size} with padding "
                             f"'valid' does not fit an input of {h}x{w}")
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
                        initializer=self.kernel_initializer)
        if self.use_bias:
            self.add_weight("bias", (self.filters,), initializer=self.bias_initializer)
        super().build(input_shape)

    def _buffer(self, name: str, shape, like):
        """A work array kept from step to step, one per name and shape (training and
        inference batches differ). A fresh 50 MB col every step would cost page faults
        each time; a reused one costs nothing. The oldest are dropped beyond a few."""
        key = (name, shape, like.dtype, type(like))
        buf = self._buffers.pop(key, None)
        if buf is None:
            buf = backend.get_array_module(like).empty(shape, dtype=like.dtype)
            if name == "col" and self.use_bias:
                buf[:, -1] = 1  # the ones column that carries the bias; im2col never touches it
        self._buffers[key] = buf  # now the most recently used
        while len(self._buffers) > 6:
            del self._buffers[next(iter(self._buffers))]
        return buf

    def _matrix(self):
        """[W; b]: the kernel as a (kh*kw*c_in, filters) matrix, with the bias as an extra last row."""
        w = self.params["kernel"].reshape(-1, self.filters)
        if not self.use_bias:
            return w
        xp = backend.get_array_module(w)
        return xp.concatenate([w, self.params["bias"].reshape(1, -1)])

    def _forward(self, x, training):
        xp = backend.get_array_module(x)
        n, h, w, c = x.shape
        _, oh, ow, f = self.compute_output_shape(x.shape)
        pads = (win.padding_amounts(h, self.kernel_size[0], self.strides[0], self.padding),
                win.padding_amounts(w, self.kernel_size[1], self.strides[1], self.padding))
        x_padded = win.pad(x, pads)
        k, rows = self.kernel_size[0] * self.kernel_size[1] * c, oh * ow  # col rows per image
        matrix = self._matrix()
        y = xp.empty((n * rows, f), dtype=x.dtype)
        # Training keeps all of col for backward: one block. Inference on the host goes
        # a few images at a time through one small col (a batch of 256 would otherwise
        # need 400 MB), and each block is still in cache when the product reads it.
        # A GPU has the memory and wants few, large launches: one block there too.
        block = n if training or backend.is_device_array(x) else min(n, self.IMAGES_PER_BLOCK)
        col = self._buffer("col", (block * rows, k + int(self.use_bias)), x)
        for start in range(0, n, block):
            stop = min(start + block, n)
            part = col[:(stop - start) * rows]
            win.im2col(x_padded[start:stop], self.kernel_size, self.strides, (oh, ow), out=part[:, :k])
            xp.matmul(part, matrix, out=y[start * rows:stop * rows])
        self._cache = (col, x_padded.shape, pads, (oh, ow)) if training else None
        return y.reshape(n, oh, ow, f)

    def _backward(self, grad):
        if self._cache is None:
            raise RuntimeError(f"{self.describe()}: backward needs a forward with training=True")
        col, padded_shape, pads, out_hw = self._cache
        kernel = self.params["kernel"]
        xp = backend.get_array_module(grad)
        dy = grad.reshape(-1, self.filters)
        k = kernel.size // self.filters
        # (dy^T col)^T, not col^T dy: the same numbers, but BLAS is far faster when
        # the long axis (N*OH*OW) is the inner one of both operands.
        d_matrix = (dy.T @ col).T  # [dW; db], a transposed view: copy into the params' layout
        self.grads["kernel"] = xp.ascontiguousarray(d_matrix[:k]).reshape(kernel.shape)
        if self.use_bias:
            self.grads["bias"] = xp.ascontiguousarray(d_matrix[k])
        if not self.input_grad:
            return None
        # dx = col2im(dy @ W^T).
        (n, oh, ow, _), c_in = grad.shape, kernel.shape[2]
        if backend.is_device_array(dy):
            # On a GPU the whole dcol is cheap to hold, and one product plus one
            # col2im kernel beat 2*kh*kw small launches.
            dcol = dy @ kernel.reshape(k, self.filters).T
            dx = win.col2im(dcol, padded_shape, self.kernel_size, self.strides, out_hw)
        else:
            # On the host, one kernel offset (i, j) at a time: dcol's columns for (i, j)
            # are dy @ W[i, j]^T, added onto the window at (i, j) right away. The same
            # sums as col2im, but the whole dcol (N*OH*OW, kh*kw*c_in), 50 MB for the
            # tutorial's second layer, is never written and read back.
            dx = xp.zeros(padded_shape, dtype=dy.dtype)
            part = self._buffer("dcol part", (dy.shape[0], c_in), dy)
            for i in range(self.kernel_size[0]):
                for j in range(self.kernel_size[1]):
                    xp.matmul(dy, kernel[i, j].T, out=part)
                    win.add_into(win.window(dx, i, j, self.strides, out_hw),
                                 part.reshape(n, oh, ow, c_in))
        (top, bottom), (left, right) = pads
        return dx[:, top:padded_shape[1] - bottom, left:padded_shape[2] - right, :]

    def config(self) -> dict:
        return {"filters": self.filters, "kernel_size": self.kernel_size,
                "strides": self.strides, "padding": self.padding, "use_bias": self.use_bias,
                "activation": activations.name_of(self.activation)}
