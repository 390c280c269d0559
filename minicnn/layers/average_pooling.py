"""Average-pooling over kh x kw windows, channels-last.

Forward:  y[n, oy, ox, c] = 1/count[oy, ox] * sum over (i, j) in the window of
          x[n, oy*sh + i - top, ox*sw + j - left, c]
Backward: dx[n, y, x, c] = sum over the windows (oy, ox) that hold (y, x) of
          dy[n, oy, ox, c] / count[oy, ox]

With padding 'valid' every window lies inside the image and count = kh*kw.
With 'same' the image is padded as for MaxPooling2D (the odd one after), and,
as in Keras 2.2.4 on TensorFlow (tf.nn.avg_pool), count is the number of
window positions inside the image: the padding is left out of the average, so
a corner window of a 3x3 pool averages its 4 real pixels, not 9 with 5 zeros.

The code is a short loop over the kh*kw window offsets with strided slices
(``ops.windows.window``): each adds one shifted copy of x (forward) or of
dy / count (backward).
"""
from __future__ import annotations


from minicnn import backend
from minicnn.layers.pooling import Pooling2D
from minicnn.ops import windows as win


class AveragePooling2D(Pooling2D):
    _cache = None  # the input geometry, kept by a forward for backward

    def _geometry(self, h: int, w: int):
        (ph, pw), (sh, sw) = self.pool_size, self.strides
        pads = (win.padding_amounts(h, ph, sh, self.padding),
                win.padding_amounts(w, pw, sw, self.padding))
        out = (win.output_length(h, ph, sh, self.padding),
               win.output_length(w, pw, sw, self.padding))
        return pads, out

    def _window_sum(self, x, pads, out):
        """sum over the window offsets (i, j) of the padded x's strided slices."""
        padded = win.pad(x, pads)
        total = None
        for i in range(self.pool_size[0]):
            for j in range(self.pool_size[1]):
                part = win.window(padded, i, j, self.strides, out)
                total = part.copy() if total is None else total + part
        return total

    def _forward(self, x, training):
        xp = backend.get_array_module(x)
        n, h, w, c = x.shape
        pads, out = self._geometry(h, w)
        # The number of real pixels in each window: the same window sum over ones.
        count = self._window_sum(xp.ones((1, h, w, 1), dtype=x.dtype), pads, out)
        self._cache = (x.shape, pads, out, count) if self.keep_cache else None
        return self._window_sum(x, pads, out) / count

    def _backward(self, grad):
        if self._cache is None:
            raise RuntimeError(f"{self.describe()}: backward needs a forward with training=True")
        (n, h, w, c), pads, out, count = self._cache
        xp = backend.get_array_module(grad)
        (top, bottom), (left, right) = pads
        dpadded = xp.zeros((n, h + top + bottom, w + left + right, c), dtype=grad.dtype)
        share = grad / count
        for i in range(self.pool_size[0]):
            for j in range(self.pool_size[1]):
                win.window(dpadded, i, j, self.strides, out)[...] += share
        return win.crop(dpadded, pads).copy()
