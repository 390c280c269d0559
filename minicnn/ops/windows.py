"""Window maths shared by convolution and max-pooling, channels-last (N, H, W, C).

``im2col`` lays every kh x kw x C window of the input out as one row, so a
convolution becomes a single matrix product::

    col[(n, oy, ox), (i, j, c)] = x[n, oy*sh + i*dh, ox*sw + j*dw, c]

(dh, dw) is the dilation: the window's taps are dh rows and dw columns apart,
so it spans d*(k-1)+1 pixels along each axis (``dilated``); 1 is the plain,
dense window.

Channels-last makes this cheap: the view (N, OH, OW, KH, KW, C) of x is just
x with other strides, and its last axis (C) is already contiguous, so laying
it out as rows is one plain copy (no transposes) that BLAS can then eat.

``col2im`` is its adjoint: it adds each row back onto the window it came from,
a short loop over the kh*kw kernel offsets with strided slices (overlapping
windows add up, which is exactly the chain rule for a pixel used many times).

On the GPU each of im2col and col2im is one element-wise kernel (IM2COL and
COL2IM below, one thread per output element, each reading what it needs), so
a convolution costs two launches instead of dozens; the NumPy code is their
twin and the tests check that both give the same numbers.

``tiles`` is the special case max-pooling loves: when the windows do not
overlap (stride == window), the (N, OH, PH, OW, PW, C) view of x is x itself,
so a window's max is a reduction over two axes of a view.
"""
from __future__ import annotations

import math

from minicnn import backend
from minicnn.backend import Array
from minicnn.ops import kernels
from minicnn.ops.kernels import Kernel
from minicnn.ops.threads import over_batch

PADDINGS = ("valid", "same")


def dilated(window: int, dilation: int) -> int:
    """The span d*(k-1)+1 of a k-tap window whose taps are d apart (k itself when d is 1)."""
    return dilation * (window - 1) + 1


def output_length(size: int, window: int, stride: int, padding: str) -> int:
    """Keras's output length: floor((size - window) / stride) + 1, or ceil(size / stride).
    (For a dilated window, ``window`` is its span, ``dilated(k, d)``.)"""
    if padding == "same":
        return math.ceil(size / stride)
    return (size - window) // stride + 1


def padding_amounts(size: int, window: int, stride: int, padding: str) -> tuple[int, int]:
    """(before, after) zeros for one axis; 'same' puts the odd one after, as Keras does."""
    if padding == "valid":
        return 0, 0
    out = output_length(size, window, stride, padding)
    total = max((out - 1) * stride + window - size, 0)
    return total // 2, total - total // 2


def pad(x: Array, pads: tuple[tuple[int, int], tuple[int, int]], value: float = 0.0) -> Array:
    """Pad the two spatial axes of an NHWC array (no copy when there is nothing to pad)."""
    (top, bottom), (left, right) = pads
    if top == bottom == left == right == 0:
        return x
    xp = backend.get_array_module(x)
    return xp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=value)


def crop(x: Array, pads: tuple[tuple[int, int], tuple[int, int]]) -> Array:
    """Undo ``pad``: the view of x without its padding."""
    (top, bottom), (left, right) = pads
    return x[:, top:x.shape[1] - bottom, left:x.shape[2] - right, :]


def window(x: Array, i: int, j: int, strides: tuple[int, int], out_hw: tuple[int, int]
           ) -> Array:
    """The strided slice x[:, i + sh*oy, j + sw*ox, :] for all (oy, ox): kernel offset (i, j)
    (in pixels: the tap (i, j) of a dilated kernel is at offset (i*dh, j*dw))."""
    (sh, sw), (oh, ow) = strides, out_hw
    return x[:, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw, :]


def windows(x: Array, kernel: tuple[int, int], strides: tuple[int, int],
            out_hw: tuple[int, int], dilation: tuple[int, int] = (1, 1)) -> Array:
    """The strided view (N, OH, OW, KH, KW, C) of x: element [n, oy, ox, i, j, c] is
    x[n, oy*sh + i*dh, ox*sw + j*dw, c]. No copy: it shares x's memory."""
    n, _, _, c = x.shape
    (kh, kw), (sh, sw), (oh, ow), (dh, dw) = kernel, strides, out_hw, dilation
    s_n, s_h, s_w, s_c = x.strides
    return backend.as_strided(x, (n, oh, ow, kh, kw, c),
                              (s_n, s_h * sh, s_w * sw, s_h * dh, s_w * dw, s_c))


# Index maths the window kernels share (CUDA source, given to each as its preamble).
WINDOW_MATH = """
/* (img, y, x, c) of the flat index i into a C-contiguous (N, H, W, C) array */
__device__ inline void nhwc_of(ptrdiff_t i, int H, int W, int C,
                               ptrdiff_t& img, int& y, int& x, int& c) {
  c = i % C;
  x = (i / C) % W;
  y = (i / ((ptrdiff_t)C * W)) % H;
  img = i / ((ptrdiff_t)C * W * H);
}
/* Along one axis: the window (0 <= o < count) that holds pixel p at offset k
   (in pixels: tap * dilation), i.e. starts at p - k = o * stride; -1 when none does. */
__device__ inline int window_holding(int p, int k, int stride, int count) {
  const int start = p - k;
  if (start < 0 || start % stride != 0 || start / stride >= count) return -1;
  return start / stride;
}
"""

# One thread per element col[r, q]: r = (n, oy, ox) is the output pixel and
# q = (ky, kx, c) the tap in its window, so the value is x[n, oy*SH+ky*DH, ox*SW+kx*DW, c].
IM2COL = Kernel(
    name="minicnn_im2col",
    in_params="raw T x, int32 H, int32 W, int32 C, int32 OH, int32 OW, int32 KH, int32 KW, "
              "int32 SH, int32 SW, int32 DH, int32 DW",
    out_params="T col",
    operation="""
const ptrdiff_t q = i % ((ptrdiff_t)KH * KW * C), r = i / ((ptrdiff_t)KH * KW * C);
const int c = q % C, kx = (q / C) % KW, ky = q / ((ptrdiff_t)C * KW);
const int ox = r % OW, oy = (r / OW) % OH;
const ptrdiff_t img = r / ((ptrdiff_t)OW * OH);
col = x[((img * H + oy * SH + ky * DH) * W + ox * SW + kx * DW) * C + c];
""")

# One thread per element dx[n, py, px, c]: the sum over the kernel taps (ky, kx)
# whose window covers the pixel, of the column that tap wrote. Gathering
# (not scattering) means no two threads write one element: no atomics.
COL2IM = Kernel(
    name="minicnn_col2im",
    in_params="raw T col, int32 H, int32 W, int32 C, int32 OH, int32 OW, int32 KH, int32 KW, "
              "int32 SH, int32 SW, int32 DH, int32 DW",
    out_params="T dx",
    operation="""
ptrdiff_t img;
int py, px, c;
nhwc_of(i, H, W, C, img, py, px, c);
T sum = 0;
for (int ky = 0; ky < KH; ++ky) {
  const int oy = window_holding(py, ky * DH, SH, OH);
  if (oy < 0) continue;
  for (int kx = 0; kx < KW; ++kx) {
    const int ox = window_holding(px, kx * DW, SW, OW);
    if (ox < 0) continue;
    const ptrdiff_t row = (img * OH + oy) * OW + ox;
    sum += col[row * ((ptrdiff_t)KH * KW * C) + (ky * KW + kx) * C + c];
  }
}
dx = sum;
""",
    preamble=WINDOW_MATH)


def im2col(x: Array, kernel: tuple[int, int], strides: tuple[int, int], out_hw: tuple[int, int],
           out: Array | None = None, dilation: tuple[int, int] = (1, 1)) -> Array:
    """(N, H, W, C) -> (N*OH*OW, KH*KW*C): one row per output pixel, no transposes
    (the taps of a window ``dilation`` pixels apart).

    ``out`` (a matrix of that shape, or a view of one, such as the first columns
    of a wider buffer) receives the rows, so a layer can reuse one buffer step
    after step instead of allocating (and page-faulting) a large new one.
    """
    n, h, w, c = x.shape
    (kh, kw), (oh, ow) = kernel, out_hw
    gpu = kernels.kernel(IM2COL, x)
    if gpu is not None:
        xp = backend.get_array_module(x)
        if out is None:
            out = xp.empty((n * oh * ow, kh * kw * c), dtype=x.dtype)
        gpu(xp.ascontiguousarray(x), h, w, c, oh, ow, kh, kw, *strides, *dilation, out)
        return out
    view = windows(x, kernel, strides, out_hw, dilation)
    if out is None:
        return view.reshape(n * oh * ow, kh * kw * c)  # the reshape makes the one copy
    # Splitting out's axes is always a view, so copyto writes into out itself;
    # over_batch lets the host's threads copy different images at the same time.
    xp, rows = backend.get_array_module(x), out.reshape(n, oh, ow, kh, kw, c)
    over_batch(lambda part: xp.copyto(rows[part], view[part]), x)
    return out


def col2im(col: Array, x_shape: tuple[int, ...], kernel: tuple[int, int],
           strides: tuple[int, int], out_hw: tuple[int, int],
           dilation: tuple[int, int] = (1, 1)) -> Array:
    """Adjoint of im2col: (N*OH*OW, KH*KW*C) -> (N, H, W, C), summing overlaps."""
    n, h, w, c = x_shape
    (kh, kw), (oh, ow), (dh, dw) = kernel, out_hw, dilation
    xp = backend.get_array_module(col)
    gpu = kernels.kernel(COL2IM, col)
    if gpu is not None:
        x = xp.empty((n, h, w, c), dtype=col.dtype)
        gpu(xp.ascontiguousarray(col), h, w, c, oh, ow, kh, kw, *strides, *dilation, x)
        return x
    cols = col.reshape(n, oh, ow, kh, kw, c)
    x = xp.zeros((n, h, w, c), dtype=col.dtype)
    for i in range(kh):
        for j in range(kw):
            add_into(window(x, i * dh, j * dw, strides, out_hw), cols[:, :, :, i, j, :])
    return x


def add_into(target: Array, source: Array) -> None:
    """target += source (NHWC arrays of one shape), the images split over the host's threads."""
    def add(images: slice) -> None:
        target[images] += source[images]
    over_batch(add, target)


def tiles(x: Array, pool: tuple[int, int]) -> Array:
    """Non-overlapping ph x pw tiles of x as a view (N, OH, PH, OW, PW, C), where
    OH = H // ph and OW = W // pw: rows and columns that fill no whole tile are left out."""
    n, h, w, c = x.shape
    ph, pw = pool
    s_n, s_h, s_w, s_c = x.strides
    return backend.as_strided(x, (n, h // ph, ph, w // pw, pw, c),
                              (s_n, s_h * ph, s_h, s_w * pw, s_w, s_c))
