"""The convolution's products, fast: one matrix product over im2col each way.

    y  = [col 1] @ [W; b]                  [dW; db] = [col 1]^T @ dy
    dx = col2im(dy @ W^T)

A dilation (dh, dw) changes only where im2col reads and col2im adds: the tap
(i, j) sits at pixel offset (i*dh, j*dw) of its window (see ``windows``).

The bias rides along in the products: col gets a last column of ones and W a
last row holding b, so each line is one BLAS call and no extra pass over the
output adds b or sums dy (for the first layer's 29 MB output such a pass costs
about as much as the product itself).

col2im adds each kernel offset's columns back onto its window, so for a kept
col on the host dx is made one offset at a time, dy @ W[i, j]^T, added as soon
as it is made; on a GPU all of dcol is one product and ``windows.col2im`` one
kernel.

A small col (the tutorial's layers, a GPU's) is made whole and kept for
backward, in a ``Workspace`` the layer keeps from step to step: a fresh 50 MB
col every step would cost page faults each time.

On the host, a col over ``KEEP_COL_BYTES`` (the fast recipe's at batch 1024:
kh*kw times the input, 2.9 GB for its six 3x3 convolutions) is never made
whole. The batch is split into one part per host thread, and each thread
goes through its images a block at a time (a col of about ``COL_BLOCK_BYTES``,
4 MB, that stays in cache, and at most ``BLOCK_ROWS`` output pixels): im2col of
the block, then its products, with BLAS single-threaded
(``threads.over_batch(blas=True)``).
The cache keeps the padded input, and backward makes each block's col
again: [dW; db] is the sum of the blocks' products (each thread's partial
sum, then the threads' in a fixed order), and dx is made block by block
and tap by tap, dy @ W[i, j]^T added onto the block's own images (padded, in a
buffer of the thread's whose inside is the block's dx). Narrow products (24 or
64 channels) run far faster this way than as one product over the whole
batch with BLAS's threads, and the memory held between forward and backward
is the input, not col. Inference on the host takes the same path.
benchmarks/bench_conv_blocking.py measures it (docs/performance.md).

On that path (a col too big to keep, or inference), a wide 3x3 'same'
convolution with stride 1 (``winograd.applies``: in the fast recipe conv2_2 and
conv3_1, 256 channels in and out at 7x7) computes y, dx and dW by Winograd's
F(4x4, 3x3) instead, with about 3x fewer multiplications at 7x7 (``winograd``).
"""
from __future__ import annotations

from typing import NamedTuple

from minicnn import backend
from minicnn.backend import Array
from minicnn.ops import windows as win
from minicnn.ops import winograd
from minicnn.ops.threads import over_batch, quiet_overflow, thread_buffer

# An im2col block on the host holds whole images, as many as make a col of about
# COL_BLOCK_BYTES (it stays in the core's cache while its products read it), and
# at most BLOCK_ROWS output pixels. Sizing by bytes gives a narrow col more rows:
# the fast recipe's conv1_1 (216 columns) gets 4 images of 31x31, whose kernel-gradient
# product (dy^T col, summed over the rows) then runs longer at a time: its forward and
# backward took a sixth less time than in blocks of 1 image; the 576- and 2304-column
# layers are as fast either way (benchmarks/bench_conv_layers.py, docs/performance.md).
COL_BLOCK_BYTES = 4 << 20
BLOCK_ROWS = 4096
KEEP_COL_BYTES = 64 << 20  # training keeps a col up to this size whole; above it, the input


class ConvCache(NamedTuple):
    """What backward needs from forward: col, or (for a big col on the host) the
    padded input to make col again."""
    col: Array | None               # im2col(x_padded), with a ones column when there is a bias
    matrix: Array                   # [W; b], the forward product's right operand
    padded_shape: tuple[int, ...]   # x's shape after padding
    strides: tuple[int, int]
    pads: tuple[tuple[int, int], tuple[int, int]]
    out_hw: tuple[int, int]
    dilation: tuple[int, int] = (1, 1)
    x_padded: Array | None = None   # set instead of col when col was too big to keep
    kernel_hw: tuple[int, int] = (0, 0)


class Workspace:
    """Work arrays kept from step to step, one per name and shape (training and
    inference batches differ); the oldest are dropped beyond a few."""

    SIZE = 6

    def __init__(self) -> None:
        self._arrays: dict[tuple, Array] = {}

    def get(self, name: str, shape: tuple[int, ...], like: Array,
            ones_column: bool = False) -> Array:
        """An uninitialised array of ``shape`` and like's dtype and device (with its
        last column set to 1 once, when it is made, if ``ones_column``)."""
        key = (name, shape, like.dtype, type(like), ones_column)
        buf = self._arrays.pop(key, None)
        if buf is None:
            buf = backend.get_array_module(like).empty(shape, dtype=like.dtype)
            if ones_column:
                buf[:, -1] = 1  # im2col never writes that column
        self._arrays[key] = buf  # now the most recently used
        while len(self._arrays) > self.SIZE:
            del self._arrays[next(iter(self._arrays))]
        return buf


def weight_matrix(kernel: Array, bias: Array | None) -> Array:
    """[W; b]: the kernel as a (kh*kw*c_in, filters) matrix, the bias as an extra last row."""
    w = kernel.reshape(-1, kernel.shape[-1])
    if bias is None:
        return w
    return backend.get_array_module(w).concatenate([w, bias.reshape(1, -1)])


def conv2d_forward(x: Array, kernel: Array, bias: Array | None, strides: tuple[int, int],
                   padding: str, keep_cache: bool, workspace: Workspace,
                   dilation: tuple[int, int] = (1, 1)) -> tuple[Array, ConvCache | None]:
    """y = [col 1] @ [W; b], reshaped to (N, OH, OW, filters); the cache if asked."""
    xp = backend.get_array_module(x)
    n, h, w, c = x.shape
    kh, kw, _, f = kernel.shape
    span_h, span_w = win.dilated(kh, dilation[0]), win.dilated(kw, dilation[1])
    pads = (win.padding_amounts(h, span_h, strides[0], padding),
            win.padding_amounts(w, span_w, strides[1], padding))
    oh, ow = (win.output_length(h, span_h, strides[0], padding),
              win.output_length(w, span_w, strides[1], padding))
    k, rows = kh * kw * c, oh * ow  # col's columns (before the ones), col's rows per image
    matrix = weight_matrix(kernel, bias)
    # A GPU has the memory and wants few, large launches: col whole, kept. So does
    # a small col on the host; a big one, or inference, goes by blocks (docstring),
    # or by Winograd's tiles where those pay.
    keep_col = backend.is_device_array(x) or (
        keep_cache and n * rows * (k + 1) * x.dtype.itemsize <= KEEP_COL_BYTES)
    by_winograd = not keep_col and winograd.applies((h, w), kernel.shape, strides, dilation,
                                                    pads)
    # Winograd pads a block at a time; the padded batch is then kept only for backward,
    # whose Winograd dW crops it again.
    x_padded = win.pad(x, pads) if keep_cache or not by_winograd else None
    if keep_col:
        col = workspace.get("col", (n * rows, k + int(bias is not None)), x,
                            ones_column=bias is not None)
        win.im2col(x_padded, (kh, kw), strides, (oh, ow), out=col[:, :k], dilation=dilation)
        y = xp.matmul(col, matrix, out=xp.empty((n * rows, f), dtype=x.dtype))
    elif by_winograd:
        y = winograd.conv3x3_same(x, kernel, bias)
    else:
        y = xp.empty((n * rows, f), dtype=x.dtype)
        _blocked_forward(x_padded, matrix, y,
                         _Geometry((kh, kw), strides, (oh, ow), dilation, bias is not None, f,
                                   c, x.dtype.itemsize))
    cache = None
    if keep_cache:
        # x_padded must outlive this step's input buffer (a batch source may reuse it)
        kept_input = None if keep_col else (x_padded if x_padded is not x else x.copy())
        cache = ConvCache(col if keep_col else None, matrix, x_padded.shape, strides, pads,
                          (oh, ow), dilation, kept_input, (kh, kw))
    return y.reshape(n, oh, ow, f), cache


class _Geometry(NamedTuple):
    kernel_hw: tuple[int, int]
    strides: tuple[int, int]
    out_hw: tuple[int, int]
    dilation: tuple[int, int]
    bias: bool
    filters: int
    channels_in: int
    itemsize: int

    def images_per_block(self) -> int:
        """Whole images per im2col block: a col of about COL_BLOCK_BYTES, at most
        BLOCK_ROWS output pixels, at least one image."""
        columns = self.kernel_hw[0] * self.kernel_hw[1] * self.channels_in + int(self.bias)
        rows = min(BLOCK_ROWS, COL_BLOCK_BYTES // (columns * self.itemsize))
        return max(1, rows // (self.out_hw[0] * self.out_hw[1]))


def _block_col(x_padded: Array, start: int, stop: int, g: _Geometry) -> Array:
    """[col 1] of images start:stop, in this thread's col buffer."""
    c = x_padded.shape[-1]
    k, rows = g.kernel_hw[0] * g.kernel_hw[1] * c, g.out_hw[0] * g.out_hw[1]
    col = thread_buffer("conv col", ((stop - start) * rows, k + int(g.bias)), x_padded)
    if g.bias:
        col[:, -1] = 1
    # Splitting col's axes is a view, so copyto writes the windows into col itself.
    backend.get_array_module(col).copyto(
        col[:, :k].reshape(stop - start, *g.out_hw, *g.kernel_hw, c),
        win.windows(x_padded[start:stop], g.kernel_hw, g.strides, g.out_hw, g.dilation))
    return col


def _blocked_forward(x_padded: Array, matrix: Array, y: Array, g: _Geometry) -> None:
    """y = [col 1] @ [W; b], a block of images at a time, the images split over threads."""
    xp, rows, block = backend.get_array_module(y), g.out_hw[0] * g.out_hw[1], g.images_per_block()

    def part(images: slice) -> None:
        with quiet_overflow():
            for start in range(images.start, images.stop, block):
                stop = min(start + block, images.stop)
                xp.matmul(_block_col(x_padded, start, stop, g), matrix,
                          out=y[start * rows:stop * rows])
    over_batch(part, x_padded, blas=True)


def _blocked_backward(dy: Array, kernel: Array, cache: ConvCache, g: _Geometry,
                      input_grad: bool) -> tuple[Array, Array | None]:
    """([dW; db], dx or None) from the padded input the cache keeps, a block of
    images at a time: col made again, its product with dy added to the thread's
    partial sum, and (with ``input_grad``) the block's dx (``_block_input_gradient``)."""
    xp, rows, block = backend.get_array_module(dy), g.out_hw[0] * g.out_hw[1], g.images_per_block()
    n, padded_h, padded_w, c_in = cache.padded_shape
    (top, bottom), (left, right) = cache.pads
    dx = (xp.empty((n, padded_h - top - bottom, padded_w - left - right, c_in), dtype=dy.dtype)
          if input_grad else None)
    def part(images: slice) -> Array:
        total = None
        with quiet_overflow():
            for start in range(images.start, images.stop, block):
                stop = min(start + block, images.stop)
                dy_block = dy[start * rows:stop * rows]
                product = dy_block.T @ _block_col(cache.x_padded, start, stop, g)  # (f, k [+1])
                total = product if total is None else xp.add(total, product, out=total)
                if input_grad:
                    _block_input_gradient(dy_block, kernel, cache, g, dx[start:stop])
        return total
    partial_sums = over_batch(part, cache.x_padded, blas=True)  # in the batch's order
    d_matrix = partial_sums[0]
    for other in partial_sums[1:]:  # a fixed order: the same sum every run
        d_matrix = d_matrix + other
    return d_matrix.T, dx


def _block_input_gradient(dy_block: Array, kernel: Array, cache: ConvCache, g: _Geometry,
                          dx: Array) -> None:
    """dx of a few images = col2im(dy @ W^T), one kernel tap (i, j) at a time: its
    columns of dcol, dy @ W[i, j]^T, added onto its window of the images padded, in a
    buffer of the thread's, whose inside is then dx (overlapping windows add up: the
    chain rule for a pixel used many times). Tap by tap, each product lands in
    whole rows that the window's add reads straight through; one product for all
    taps would leave each tap's c_in columns scattered along dcol's rows, a slower
    add for narrow layers (benchmarks/bench_col2im.py)."""
    xp = backend.get_array_module(dy_block)
    (kh, kw), (dh, dw) = g.kernel_hw, g.dilation
    images, c_in = dx.shape[0], kernel.shape[2]
    padded = thread_buffer("conv padded dx", (images, *cache.padded_shape[1:]), dy_block)
    padded.fill(0)
    tap = thread_buffer("conv dx tap", (dy_block.shape[0], c_in), dy_block)
    for i in range(kh):
        for j in range(kw):
            xp.matmul(dy_block, kernel[i, j].T, out=tap)
            win.window(padded, i * dh, j * dw, g.strides, g.out_hw)[...] += \
                tap.reshape(images, *g.out_hw, c_in)
    dx[...] = win.crop(padded, cache.pads)


def _make_col(cache: ConvCache, has_bias: bool) -> Array:
    """[col 1] of the whole batch again, from the padded input the cache keeps."""
    (kh, kw), c = cache.kernel_hw, cache.x_padded.shape[-1]
    k = kh * kw * c
    rows = cache.x_padded.shape[0] * cache.out_hw[0] * cache.out_hw[1]
    out = backend.get_array_module(cache.x_padded).empty(
        (rows, k + int(has_bias)), dtype=cache.x_padded.dtype)
    if has_bias:
        out[:, -1] = 1
    win.im2col(cache.x_padded, (kh, kw), cache.strides, cache.out_hw, out=out[:, :k],
               dilation=cache.dilation)
    return out


def full_col(cache: ConvCache, has_bias: bool) -> Array:
    """The forward product's left operand [col 1] (a new array when the cache does not
    hold it, made again from the padded input)."""
    return cache.col if cache.col is not None else _make_col(cache, has_bias)


def conv2d_backward(dy: Array, kernel: Array, has_bias: bool, cache: ConvCache,
                    input_grad: bool, workspace: Workspace
                    ) -> tuple[Array | None, Array, Array | None]:
    """(dx, dW, db): [dW; db] = [col 1]^T @ dy and dx = col2im(dy @ W^T) (None unless
    ``input_grad``); db is None without a bias. Where forward took Winograd's path,
    so do dW and dx (``winograd.kernel_gradient``, ``winograd.input_gradient``), and
    db is the sum of dy over the batch and pixels."""
    xp = backend.get_array_module(dy)
    kh, kw, c_in, f = kernel.shape
    n, oh, ow, _ = dy.shape
    dy = dy.reshape(-1, f)
    k = kh * kw * c_in
    dx = None
    if cache.col is None and winograd.applies((oh, ow), kernel.shape, cache.strides,
                                              cache.dilation, cache.pads):
        # forward took Winograd's path: so do dW and dx, from dy and x directly
        dy = dy.reshape(n, oh, ow, f)
        d_kernel = winograd.kernel_gradient(win.crop(cache.x_padded, cache.pads), dy)
        d_bias = xp.ones(n * oh * ow, dtype=dy.dtype) @ dy.reshape(-1, f) if has_bias else None
        dx = winograd.input_gradient(dy, kernel) if input_grad else None
        return dx, d_kernel, d_bias
    if cache.col is None:  # the host's blocked path (see conv2d_forward)
        geometry = _Geometry((kh, kw), cache.strides, (oh, ow), cache.dilation, has_bias, f,
                             c_in, cache.x_padded.dtype.itemsize)
        d_matrix, dx = _blocked_backward(dy, kernel, cache, geometry, input_grad)
    else:
        # (dy^T [col 1])^T: the same numbers as [col 1]^T dy, but BLAS is far faster
        # when the long axis (N*OH*OW) is the inner one of both operands.
        d_matrix = (dy.T @ cache.col).T
    d_kernel = xp.ascontiguousarray(d_matrix[:k]).reshape(kernel.shape)
    d_bias = xp.ascontiguousarray(d_matrix[k]) if has_bias else None
    if not input_grad:
        return None, d_kernel, d_bias
    if dx is None:
        dx = win.crop(_dx_of_kept_col(dy.reshape(n, oh, ow, f), kernel, cache, workspace),
                      cache.pads)
    return dx, d_kernel, d_bias


def _dx_of_kept_col(dy: Array, kernel: Array, cache: ConvCache, workspace: Workspace) -> Array:
    """dx (padded) = col2im(dy @ W^T) for a kept col's layer."""
    xp = backend.get_array_module(dy)
    kh, kw, c_in, f = kernel.shape
    n, oh, ow, _ = dy.shape
    dy = dy.reshape(-1, f)
    if backend.is_device_array(dy):
        # On a GPU the whole dcol is cheap to hold, and one product plus one
        # col2im kernel beat 2*kh*kw small launches.
        return win.col2im(dy @ kernel.reshape(-1, f).T, cache.padded_shape, (kh, kw),
                          cache.strides, cache.out_hw, cache.dilation)
    # On the host, one kernel offset (i, j) at a time: dcol's columns for (i, j)
    # are dy @ W[i, j]^T, added onto the window at (i, j) right away. The same
    # sums as col2im, but the whole dcol (N*OH*OW, kh*kw*c_in), 50 MB for the
    # tutorial's second layer, is never written and read back.
    dx = xp.zeros(cache.padded_shape, dtype=dy.dtype)
    part = workspace.get("dcol part", (dy.shape[0], c_in), dy)
    dh, dw = cache.dilation
    for i in range(kh):
        for j in range(kw):
            xp.matmul(dy, kernel[i, j].T, out=part)
            win.add_into(win.window(dx, i * dh, j * dw, cache.strides, cache.out_hw),
                         part.reshape(n, oh, ow, c_in))
    return dx
