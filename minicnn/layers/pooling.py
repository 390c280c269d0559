"""Max-pooling over kh x kw windows, channels-last.

Forward:  y[n, oy, ox, c] = max over (i, j) of x[n, oy*sh + i, ox*sw + j, c]
Backward: the whole of dy goes to the one input that won the max (the first
one in row-major window order on ties); every other input gets zero.

Two ways to compute it:

* Tiles (stride == window, no padding: the usual 2x2 pooling). The windows
  do not overlap, so ``im2col.tiles`` views x as (N, OH, kh, OW, kw, C) and
  y is a max over the two window axes. A boolean mask of the same shape marks
  each window's winner, and backward is one product dx = mask * dy broadcast
  over the window. Rows or columns that fill no whole window (a 13x13 input
  under 2x2 pooling) get no gradient.
* Any windows (overlapping, or 'same' padding). Both passes loop over the
  kh*kw window offsets with strided slices; the winner of each window is kept
  as a small integer offset index, so backward needs neither x nor y.

On a GPU both passes are one kernel each for any windows (MAX_POOL and
MAX_POOL_BACKWARD below), with the windows path as their NumPy twin.
"""
from __future__ import annotations

from typing import Any

from minicnn import backend
from minicnn.layers import im2col as win
from minicnn.layers.base import Layer, check_data_format, check_padding, pair


# One thread per output y[n, oy, ox, c]: the max over its window, and which
# offset k = ky*PW + kx won (the first one on ties, as in the twin).
MAX_POOL = backend.Kernel(
    name="minicnn_max_pool",
    in_params="raw T x, int32 H, int32 W, int32 C, int32 OH, int32 OW, int32 PH, int32 PW, "
              "int32 SH, int32 SW",
    out_params="T y, int32 winner",
    operation="""
ptrdiff_t img;
int oy, ox, c;
nhwc_of(i, OH, OW, C, img, oy, ox, c);
const ptrdiff_t corner = ((img * H + oy * SH) * W + ox * SW) * C + c;
T best = x[corner];
int k_best = 0;
for (int ky = 0; ky < PH; ++ky) {
  for (int kx = 0; kx < PW; ++kx) {
    const T v = x[corner + ((ptrdiff_t)ky * W + kx) * C];
    if (v > best) { best = v; k_best = ky * PW + kx; }
    else if (v != v) best = v;  /* a NaN wins the max but not the winner, as in the twin */
  }
}
y = best;
winner = k_best;
""",
    preamble=win.WINDOW_MATH)

# One thread per input pixel dx[n, py, px, c]: the sum of dy over the windows
# that cover the pixel and were won by it (one at most unless windows overlap).
MAX_POOL_BACKWARD = backend.Kernel(
    name="minicnn_max_pool_backward",
    in_params="raw T dy, raw int32 winner, int32 H, int32 W, int32 C, int32 OH, int32 OW, "
              "int32 PH, int32 PW, int32 SH, int32 SW",
    out_params="T dx",
    operation="""
ptrdiff_t img;
int py, px, c;
nhwc_of(i, H, W, C, img, py, px, c);
T sum = 0;
for (int ky = 0; ky < PH; ++ky) {
  const int oy = window_holding(py, ky, SH, OH);
  if (oy < 0) continue;
  for (int kx = 0; kx < PW; ++kx) {
    const int ox = window_holding(px, kx, SW, OW);
    if (ox < 0) continue;
    const ptrdiff_t out = ((img * OH + oy) * OW + ox) * C + c;
    if (winner[out] == ky * PW + kx) sum += dy[out];
  }
}
dx = sum;
""",
    preamble=win.WINDOW_MATH)


class MaxPooling2D(Layer):
    input_ndim = 4
    commutes_with_relu = True  # max(relu(z)) == relu(max(z)): see minicnn.plan

    def __init__(self, pool_size: int | tuple[int, int] = (2, 2),
                 strides: int | tuple[int, int] | None = None, padding: str = "valid",
                 data_format: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_data_format(data_format, "MaxPooling2D")
        self.pool_size = pair(pool_size, "pool_size", "MaxPooling2D")
        self.strides = pair(strides if strides is not None else self.pool_size, "strides",
                            "MaxPooling2D")
        self.padding = check_padding(padding, "MaxPooling2D")

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        n, h, w, c = input_shape
        (ph, pw), (sh, sw) = self.pool_size, self.strides
        oh = win.output_length(h, ph, sh, self.padding)
        ow = win.output_length(w, pw, sw, self.padding)
        if oh < 1 or ow < 1:
            raise ValueError(f"{self.describe()}: pool {self.pool_size} with padding 'valid' "
                             f"does not fit an input of {h}x{w}")
        return n, oh, ow, c

    def _offsets(self):
        ph, pw = self.pool_size
        return [(i, j) for i in range(ph) for j in range(pw)]

    def _pads(self, h: int, w: int):
        return (win.padding_amounts(h, self.pool_size[0], self.strides[0], self.padding),
                win.padding_amounts(w, self.pool_size[1], self.strides[1], self.padding))

    def _forward(self, x, training):
        pads = self._pads(x.shape[1], x.shape[2])
        tiles = self.strides == self.pool_size and pads == ((0, 0), (0, 0))
        gpu = backend.kernel(MAX_POOL, x)  # on a GPU one kernel does all windows
        if tiles and gpu is None:
            return self._forward_tiles(x, training)
        return self._forward_windows(x, pads, gpu)

    def _backward(self, grad):
        if self._cache[0] == "tiles":
            return self._backward_tiles(grad)
        return self._backward_windows(grad)

    # ------------------------------------------------- non-overlapping tiles
    def _forward_tiles(self, x, training):
        xp = backend.get_array_module(x)
        t = win.tiles(x, self.pool_size)                  # (N, OH, kh, OW, kw, C), a view
        y = xp.empty((t.shape[0], t.shape[1], t.shape[3], t.shape[5]), dtype=x.dtype)
        mask = xp.empty(t.shape, dtype=bool) if training else None
        (i0, j0), *rest = self._offsets()
        on_device = backend.is_device_array(x)

        def pool(images: slice) -> None:  # over_batch runs the images in parallel parts
            ti, yi = t[images], y[images]
            # One element-wise maximum per window offset: about twice as fast as
            # t.max(axis=(2, 4)), a reduction over two strided axes.
            xp.copyto(yi, ti[:, :, i0, :, j0])  # start from the window's first element
            for i, j in rest:
                xp.maximum(yi, ti[:, :, i, :, j], out=yi)
            if not training:  # only backward needs to know who won
                return
            won = mask[images]
            xp.equal(ti, yi[:, :, None, :, None], out=won)  # each window's winners
            # Equal maxima come from flat image regions (equal pixels, equal conv
            # outputs). On the host, counting the winners (one or more per window;
            # none only where a NaN is, which ends training) lets a part without
            # ties skip settling them. On a GPU the count would be a device-to-host
            # read, which stalls it: always settle there.
            if on_device or int(xp.count_nonzero(won)) > yi.size:
                self._keep_first_winners(xp, won)
        backend.over_batch(pool, x)
        self._cache = ("tiles", mask, x.shape)  # no mask after an inference forward
        return y

    def _keep_first_winners(self, xp, won) -> None:
        """Keep only the first winner of each window (row-major offset order), in place.
        For booleans a > b means "a and not b", so a later offset loses to any
        earlier one that won."""
        taken = won[:, :, 0, :, 0].copy()
        for i, j in self._offsets()[1:]:
            later = won[:, :, i, :, j]
            xp.greater(later, taken, out=later)
            taken |= later

    def _backward_tiles(self, grad):
        xp = backend.get_array_module(grad)
        _, mask, x_shape = self._cache
        if mask is None:
            raise RuntimeError(f"{self.describe()}: backward needs a forward with training=True")
        (ph, pw), (_, h, w, _) = self.pool_size, x_shape
        # Zeros only where some rows or columns fill no tile; the product writes the rest.
        dx = (xp.empty if h % ph == 0 and w % pw == 0 else xp.zeros)(x_shape, dtype=grad.dtype)
        # dy broadcast over each window, kept only at its winner. The mask is read as
        # uint8 (the same bytes): NumPy's float32-times-uint8 loop is about 1.6x
        # faster than its float32-times-bool one on conv1's 29 MB gradient.
        winners, dx_tiles = mask.view(xp.uint8), win.tiles(dx, self.pool_size)
        backend.over_batch(lambda images: xp.multiply(
            grad[images, :, None, :, None], winners[images], out=dx_tiles[images]), grad)
        return dx

    # ------------------------------------------------- any windows
    def _forward_windows(self, x, pads, gpu):
        xp = backend.get_array_module(x)
        n, h, w, c = x.shape
        _, oh, ow, _ = self.compute_output_shape(x.shape)
        x = win.pad(x, pads, value=-xp.inf)  # padding never wins a max
        if gpu is not None:
            y = xp.empty((n, oh, ow, c), dtype=x.dtype)
            winner = xp.empty(y.shape, dtype=xp.int32)
            gpu(xp.ascontiguousarray(x), *x.shape[1:], oh, ow, *self.pool_size, *self.strides,
                y, winner)
            self._cache = ("windows", winner, x.shape, pads, (oh, ow))
            return y
        offsets = self._offsets()
        y = win.window(x, *offsets[0], self.strides, (oh, ow)).copy()
        winner = xp.zeros(y.shape, dtype=xp.int8 if len(offsets) <= 127 else xp.int32)
        for k, (i, j) in enumerate(offsets[1:], start=1):
            candidate = win.window(x, i, j, self.strides, (oh, ow))
            better = candidate > y  # strict: on ties the earlier offset keeps the win
            xp.maximum(y, candidate, out=y)
            xp.copyto(winner, k, where=better)  # no boolean indexing: it syncs on a GPU
        self._cache = ("windows", winner, x.shape, pads, (oh, ow))
        return y

    def _backward_windows(self, grad):
        xp = backend.get_array_module(grad)
        _, winner, padded_shape, pads, out_hw = self._cache
        gpu = backend.kernel(MAX_POOL_BACKWARD, grad)
        if gpu is not None:
            dx = xp.empty(padded_shape, dtype=grad.dtype)
            gpu(xp.ascontiguousarray(grad), winner, *padded_shape[1:], *out_hw, *self.pool_size,
                *self.strides, dx)
        else:
            dx = self._scatter_to_winners(xp, grad, winner, padded_shape, out_hw)
        (top, bottom), (left, right) = pads
        return dx[:, top:padded_shape[1] - bottom, left:padded_shape[2] - right, :]

    def _scatter_to_winners(self, xp, grad, winner, padded_shape, out_hw):
        dx = xp.zeros(padded_shape, dtype=grad.dtype)
        for k, (i, j) in enumerate(self._offsets()):
            win.window(dx, i, j, self.strides, out_hw)[...] += grad * (winner == k)
        return dx

    def config(self) -> dict:
        return {"pool_size": self.pool_size, "strides": self.strides, "padding": self.padding}
