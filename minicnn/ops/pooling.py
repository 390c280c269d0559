"""Max-pooling, fast: the winners kept by forward, the gradient sent to them.

    y[n, oy, ox, c] = max over (i, j) of x[n, oy*sh + i, ox*sw + j, c]
    dx              = dy at each window's winner (the first in row-major order on
                      ties), zero elsewhere; overlapping windows add up

Three paths:

* Tiles (stride == window, no padding, on the host: the usual 2x2 pooling). The
  windows do not overlap, so ``windows.tiles`` views x as (N, OH, kh, OW, kw, C)
  and y is an element-wise maximum over the window offsets. A boolean mask of
  that shape marks each window's winner, and backward is one product dx = mask
  * dy broadcast over the window. Rows or columns that fill no whole window (a
  13x13 input under 2x2 pooling) get no gradient. Each host thread takes its
  images about ``TILE_BLOCK_BYTES`` of x at a time, so that the mask's
  comparison finds x still in the cache.
* Any windows (overlapping, or 'same' padding), on the host. Both passes loop
  over the kh*kw window offsets with strided slices; the winner of each window
  is kept as a small integer offset index, so backward needs neither x nor y.
* On a GPU, one kernel each way for any windows (MAX_POOL and
  MAX_POOL_BACKWARD), with the windows path as their NumPy twin.
"""
from __future__ import annotations

from typing import Any, NamedTuple

from minicnn import backend
from minicnn.backend import Array
from minicnn.ops import windows as win
from minicnn.ops.kernels import Kernel, kernel
from minicnn.ops.threads import over_batch

# Input bytes per block of the host's tiles pass: x's block stays in the cache
# between the maxima and the winners' comparison (benchmarks/bench_max_pool.py).
TILE_BLOCK_BYTES = 1 << 20


class PoolCache(NamedTuple):
    """What backward needs from forward."""
    tiles: bool                     # True: winners is the tiles' boolean mask
    winners: Array                  # tiles: (N, OH, kh, OW, kw, C) mask; else offset index k
    padded_shape: tuple[int, ...]   # x's shape (after padding, on the windows paths)
    pool_size: tuple[int, int]
    strides: tuple[int, int]
    pads: tuple[tuple[int, int], tuple[int, int]]
    out_hw: tuple[int, int]


def offsets(pool_size: tuple[int, int]) -> list[tuple[int, int]]:
    """The window offsets (i, j) in row-major order: offset k is (k // pw, k % pw)."""
    ph, pw = pool_size
    return [(i, j) for i in range(ph) for j in range(pw)]


def max_pool_forward(x: Array, pool_size: tuple[int, int], strides: tuple[int, int],
                     padding: str, keep_cache: bool) -> tuple[Array, PoolCache | None]:
    """y = the max over each window; the cache (the winners) if asked."""
    n, h, w, c = x.shape
    pads = (win.padding_amounts(h, pool_size[0], strides[0], padding),
            win.padding_amounts(w, pool_size[1], strides[1], padding))
    out_hw = (win.output_length(h, pool_size[0], strides[0], padding),
              win.output_length(w, pool_size[1], strides[1], padding))
    gpu = kernel(MAX_POOL, x)  # on a GPU one kernel does all windows
    tiles = strides == pool_size and pads == ((0, 0), (0, 0)) and gpu is None
    if tiles:
        y, winners = _tiles_forward(x, pool_size, keep_cache)
    else:
        x = win.pad(x, pads, value=-backend.get_array_module(x).inf)  # padding never wins
        y, winners = _windows_forward(x, pool_size, strides, out_hw, gpu)
    if not keep_cache:
        return y, None
    return y, PoolCache(tiles, winners, x.shape, pool_size, strides, pads, out_hw)


def max_pool_backward(dy: Array, cache: PoolCache) -> Array:
    """dx: dy sent to each window's winner."""
    if cache.tiles:
        return _tiles_backward(dy, cache)
    xp = backend.get_array_module(dy)
    gpu = kernel(MAX_POOL_BACKWARD, dy)
    if gpu is not None:
        dx = xp.empty(cache.padded_shape, dtype=dy.dtype)
        gpu(xp.ascontiguousarray(dy), cache.winners, *cache.padded_shape[1:], *cache.out_hw,
            *cache.pool_size, *cache.strides, dx)
    else:
        dx = xp.zeros(cache.padded_shape, dtype=dy.dtype)
        for k, (i, j) in enumerate(offsets(cache.pool_size)):
            win.window(dx, i, j, cache.strides, cache.out_hw)[...] += dy * (cache.winners == k)
    return win.crop(dx, cache.pads)


# ------------------------------------------------- non-overlapping tiles
def _tiles_forward(x: Array, pool_size: tuple[int, int], keep_mask: bool
                   ) -> tuple[Array, Array | None]:
    xp = backend.get_array_module(x)
    t = win.tiles(x, pool_size)                  # (N, OH, kh, OW, kw, C), a view
    y = xp.empty((t.shape[0], t.shape[1], t.shape[3], t.shape[5]), dtype=x.dtype)
    mask = xp.empty(t.shape, dtype=bool) if keep_mask else None
    (i0, j0), *rest = offsets(pool_size)
    on_device = backend.is_device_array(x)
    # On the host a few images at a time, so that the mask's comparison reads x
    # from the cache the maxima just read it into (conv1's output, 250 MB at
    # batch 1024, would otherwise come from memory twice). A GPU takes it whole.
    image_bytes = x.nbytes // max(1, x.shape[0])
    block = max(1, t.shape[0] if on_device else TILE_BLOCK_BYTES // max(1, image_bytes))

    def pool_block(images: slice) -> None:
        ti, yi = t[images], y[images]
        # One element-wise maximum per window offset: about twice as fast as
        # t.max(axis=(2, 4)), a reduction over two strided axes.
        xp.copyto(yi, ti[:, :, i0, :, j0])  # start from the window's first element
        for i, j in rest:
            xp.maximum(yi, ti[:, :, i, :, j], out=yi)
        if not keep_mask:  # only backward needs to know who won
            return
        won = mask[images]
        xp.equal(ti, yi[:, :, None, :, None], out=won)  # each window's winners
        # Equal maxima come from flat image regions (equal pixels, equal conv
        # outputs). On the host, counting the winners (one or more per window;
        # none only where a NaN is, which ends training) lets a block without
        # ties skip settling them. On a GPU the count would be a device-to-host
        # read, which stalls it: always settle there.
        if on_device or int(xp.count_nonzero(won)) > yi.size:
            _keep_first_winners(xp, won, pool_size)

    def pool(images: slice) -> None:  # over_batch runs the images in parallel parts
        for start in range(images.start, images.stop, block):
            pool_block(slice(start, min(start + block, images.stop)))
    over_batch(pool, x)
    return y, mask


def _keep_first_winners(xp: Any, won: Array, pool_size: tuple[int, int]) -> None:
    """Keep only the first winner of each window (row-major offset order), in place.
    For booleans a > b means "a and not b", so a later offset loses to any
    earlier one that won."""
    taken = won[:, :, 0, :, 0].copy()
    for i, j in offsets(pool_size)[1:]:
        later = won[:, :, i, :, j]
        xp.greater(later, taken, out=later)
        taken |= later


def _tiles_backward(dy: Array, cache: PoolCache) -> Array:
    xp = backend.get_array_module(dy)
    (ph, pw), (_, h, w, _) = cache.pool_size, cache.padded_shape
    # Zeros only where some rows or columns fill no tile; the product writes the rest.
    dx = (xp.empty if h % ph == 0 and w % pw == 0 else xp.zeros)(cache.padded_shape,
                                                                 dtype=dy.dtype)
    # dy broadcast over each window, kept only at its winner. The mask is read as
    # uint8 (the same bytes): NumPy's float32-times-uint8 loop is about 1.6x
    # faster than its float32-times-bool one on conv1's 29 MB gradient.
    winners, dx_tiles = cache.winners.view(xp.uint8), win.tiles(dx, cache.pool_size)
    over_batch(lambda images: xp.multiply(
        dy[images, :, None, :, None], winners[images], out=dx_tiles[images]), dy)
    return dx


# ------------------------------------------------- any windows
def _windows_forward(x: Array, pool_size: tuple[int, int], strides: tuple[int, int],
                     out_hw: tuple[int, int], gpu: Any) -> tuple[Array, Array]:
    """y and the winning offset index of each window, x already padded."""
    xp = backend.get_array_module(x)
    if gpu is not None:
        y = xp.empty((x.shape[0], *out_hw, x.shape[3]), dtype=x.dtype)
        winner = xp.empty(y.shape, dtype=xp.int32)
        gpu(xp.ascontiguousarray(x), *x.shape[1:], *out_hw, *pool_size, *strides, y, winner)
        return y, winner
    (i0, j0), *rest = offsets(pool_size)
    y = win.window(x, i0, j0, strides, out_hw).copy()
    winner = xp.zeros(y.shape, dtype=xp.int8 if len(rest) < 127 else xp.int32)
    for k, (i, j) in enumerate(rest, start=1):
        candidate = win.window(x, i, j, strides, out_hw)
        better = candidate > y  # strict: on ties the earlier offset keeps the win
        xp.maximum(y, candidate, out=y)
        xp.copyto(winner, k, where=better)  # no boolean indexing: it syncs on a GPU
    return y, winner


# One thread per output y[n, oy, ox, c]: the max over its window, and which
# offset k = ky*PW + kx won (the first one on ties, as in the twin).
MAX_POOL = Kernel(
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
MAX_POOL_BACKWARD = Kernel(
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
