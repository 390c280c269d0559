"""Winograd's minimal filtering F(m x m, 3 x 3): a 3x3 convolution with fewer products.

Lavin and Gray (2015), "Fast Algorithms for Convolutional Neural Networks".
The output is cut into m x m tiles; tile k needs the t x t patch d_k (t = m + 2)
of the zero-padded input under it. For one input channel c and filter f,

    Y_k = A^T [ (G g G^T) (.) (B^T d_k B) ] A        (.) element-wise, t x t

with B^T (t x t), G (t x 3) and A^T (m x t) fixed by m (``_TRANSFORMS``; for
m = 2: B^T = [[1,0,-1,0], [0,1,1,0], [0,-1,1,0], [0,1,0,-1]], G = [[1,0,0],
[1/2,1/2,1/2], [1/2,-1/2,1/2], [0,0,1]], A^T = [[1,1,1,0], [0,1,-1,-1]]), and
the sum over c passes through A^T [...] A. So at each of the t*t positions q
of the transformed tile, the sum over channels is one matrix product:

    V[q] = (B^T d B)[q]     (tiles, c_in)    the input, transformed
    U[q] = (G g G^T)[q]     (c_in, filters)  the kernel, transformed
    M[q] = V[q] @ U[q]      (tiles, filters)
    Y    = A^T M A                           per tile, back to m x m

Per tile and channel pair that is t*t multiplications instead of the 9*m*m of
the direct sum: 16 for 36 (2.25x fewer) at m = 2, 36 for 144 (4x) at m = 4.
(A side that is not a multiple of m wastes part of its last tiles: at 7x7,
2x2 tiles of 4x4 cover 8x8 pixels for 49 outputs, about 3.1x fewer.)
Written with Kronecker products, each transform of every tile and channel at
once is one small matrix product too (vec row-major, the t*t positions first):

    vec(B^T d B) = (B^T kron B^T) vec(d)     V = B2 @ P,  P (t*t, tiles * c_in)
    vec(A^T M A) = (A^T kron A^T) vec(M)     Y = A2 @ M,  M (t*t, tiles * filters)
    vec(G g G^T) = (G kron G) vec(g)         U = G2 @ W,  W (9, c_in * filters)

P holds the t*t input pixels of every tile's patch, gathered from the padded
input with one strided copy per position (patches overlap by two pixels).
m = 4 is the default (``OUTPUT_TILE``): its larger constants (up to 8 in A^T,
1/24 in G) leave a float32 result about 20x a direct sum's rounding from the
exact one (7.8e-6 of the output's scale at 256 channels, against 3.5e-7;
docs/performance.md has the command).

Backward: the input gradient of a stride-1 'same' 3x3 convolution is the same
kind of convolution, of dy with the kernel turned by 180 degrees and its
input and output channels swapped (``input_gradient``):

    dx[r, s, c] = sum over (i, j, f) of dy[r + 1 - i, s + 1 - j, f] g[i, j, c, f]

The kernel gradient runs forward's three linear maps backwards
(``kernel_gradient``). dY (m*m, tiles * filters), laid out as Y, is gathered
from dy by ``_tiles_of``, the transpose of forward's scatter into y (a tile's
outputs past the image's edge, which forward drops, get a gradient of 0):

    dM = A2^T dY,    dU[q] = sum over tiles of V[q]^T dM[q],    dW = G2^T dU

so the t*t products have the tiles as their inner axis, summed block by block.
The bias gradient, dy summed over the batch and pixels, is conv.py's.

On the host the batch goes a block of ``BLOCK_TILES`` tiles (at least one
image) at a time: the gathering of P and the scattering of Y's tiles into y are
split over the host's threads (``threads.over_batch``), and the three products
run on BLAS's threads, large enough to keep both cores busy (at 7x7 and 256
channels, 2,048 tiles make P, V and M 75 MB each: two work arrays, each used
twice, and a third for dM, held from call to call). Smaller blocks measured
slower: between them
BLAS's threads go to sleep (``OPENBLAS_THREAD_TIMEOUT``) and wake again.
conv.py takes this path on its blocked host path (a col too big to keep, or
inference) where it pays (``applies``): 3x3 kernels, stride 1, 'same' padding,
no dilation, at least ``MIN_CHANNELS`` channels in and out (narrower products
run below BLAS's best rate, and the transforms then cost more than the
products save) and images of at least ``MIN_SIZE`` pixels a side.
``benchmarks/bench_conv_layers.py --winograd`` measures it against im2col
(docs/performance.md).
"""
from __future__ import annotations

import numpy

from minicnn import backend
from minicnn.backend import Array
from minicnn.ops.threads import over_batch, quiet_overflow, thread_buffer

MIN_CHANNELS = 128  # in and out; below it im2col's single product is faster
MIN_SIZE = 6        # pixels a side; below it the tiles waste too much
OUTPUT_TILE = 4     # m of F(m x m, 3 x 3): 2 or 4
BLOCK_TILES = 2048  # tiles per block (at least one image's)

# m -> (B^T, G, A^T) of F(m x m, 3 x 3), from the points 0, 1, -1 (and 2, -2 for
# m = 4) and infinity, as Lavin and Gray give them.
_TRANSFORMS = {
    2: (((1, 0, -1, 0), (0, 1, 1, 0), (0, -1, 1, 0), (0, 1, 0, -1)),
        ((1, 0, 0), (1 / 2, 1 / 2, 1 / 2), (1 / 2, -1 / 2, 1 / 2), (0, 0, 1)),
        ((1, 1, 1, 0), (0, 1, -1, -1))),
    4: (((4, 0, -5, 0, 1, 0), (0, -4, -4, 1, 1, 0), (0, 4, -4, -1, 1, 0),
         (0, -2, -1, 2, 1, 0), (0, 2, -1, -2, 1, 0), (0, 4, 0, -5, 0, 1)),
        ((1 / 4, 0, 0), (-1 / 6, -1 / 6, -1 / 6), (-1 / 6, 1 / 6, -1 / 6),
         (1 / 24, 1 / 12, 1 / 6), (1 / 24, -1 / 12, 1 / 6), (0, 0, 1)),
        ((1, 1, 1, 1, 1, 0), (0, 1, -1, 2, -2, 0), (0, 1, 1, 4, 4, 0), (0, 1, -1, 8, -8, 1))),
}


def applies(image_hw: tuple[int, int], kernel_shape: tuple[int, ...],
            strides: tuple[int, int], dilation: tuple[int, int],
            pads: tuple[tuple[int, int], tuple[int, int]]) -> bool:
    """Whether conv.py's blocked host path takes Winograd's for this convolution."""
    kh, kw, c_in, filters = kernel_shape
    return ((kh, kw) == (3, 3) and tuple(strides) == (1, 1) and tuple(dilation) == (1, 1)
            and tuple(map(tuple, pads)) == ((1, 1), (1, 1))
            and min(c_in, filters) >= MIN_CHANNELS and min(image_hw) >= MIN_SIZE)


def transform_matrices(m: int) -> tuple[numpy.ndarray, numpy.ndarray, numpy.ndarray]:
    """(B2, G2, A2) = (B^T kron B^T, G kron G, A^T kron A^T) of F(m x m, 3 x 3), float64:
    (t*t, t*t), (t*t, 9) and (m*m, t*t), t = m + 2."""
    if m not in _TRANSFORMS:
        raise ValueError(f"winograd: output tile m must be one of {sorted(_TRANSFORMS)}, got {m!r}")
    b_t, g, a_t = (numpy.array(matrix, dtype=numpy.float64) for matrix in _TRANSFORMS[m])
    return numpy.kron(b_t, b_t), numpy.kron(g, g), numpy.kron(a_t, a_t)


def kernel_transform(kernel: Array, m: int | None = None) -> Array:
    """U = G g G^T for every channel pair: (t*t, c_in, filters), position (a, b) at a*t + b."""
    xp = backend.get_array_module(kernel)
    g2 = xp.asarray(transform_matrices(OUTPUT_TILE if m is None else m)[1],
                    dtype=kernel.dtype)
    c_in, filters = kernel.shape[2:]
    return (g2 @ kernel.reshape(9, c_in * filters)).reshape(-1, c_in, filters)


def conv3x3_same(x: Array, kernel: Array, bias: Array | None = None,
                 m: int | None = None) -> Array:
    """y = conv(x, kernel) + bias, 3x3 kernel, stride 1, 'same' zero padding, by
    F(m x m, 3 x 3) (m: ``OUTPUT_TILE`` unless given):
    x (N, H, W, c_in), kernel (3, 3, c_in, filters) -> y (N, H, W, filters)."""
    m = OUTPUT_TILE if m is None else m
    _check("conv3x3_same", x, kernel=kernel, bias=bias)
    xp = backend.get_array_module(x)
    b2, _, a2 = (xp.asarray(matrix, dtype=x.dtype) for matrix in transform_matrices(m))
    n, h, w, c_in = x.shape
    filters = kernel.shape[-1]
    t = m + 2
    tiles_hw, block, size = _blocks(x.shape, filters, m)
    u = kernel_transform(kernel.astype(x.dtype, copy=False), m)
    y = xp.empty((n, h, w, filters), dtype=x.dtype)
    # Two work arrays, each used twice: P then M in one, V then Y's tiles in the other.
    first, second = (thread_buffer(f"winograd {k}", (size,), x) for k in (1, 2))
    with quiet_overflow():
        for start in range(0, n, block):
            stop = min(start + block, n)
            images = x[start:stop]
            tiles = (stop - start) * tiles_hw[0] * tiles_hw[1]
            v = _input_transform(images, m, tiles_hw, b2, first, second)
            products = first[:t * t * tiles * filters].reshape(t * t, tiles, filters)
            xp.matmul(v, u, out=products)  # the t*t products, on BLAS's threads
            y_tiles = second[:m * m * tiles * filters].reshape(m, m, stop - start, *tiles_hw,
                                                              filters)
            xp.matmul(a2, products.reshape(t * t, -1), out=y_tiles.reshape(m * m, -1))
            over_batch(lambda part: _scatter(y_tiles[:, :, part], y[start:stop][part], bias),
                       images)
    return y


def kernel_gradient(x: Array, dy: Array, m: int | None = None) -> Array:
    """dW of y = conv3x3_same(x, kernel), (3, 3, c_in, filters), by F(m x m, 3 x 3)
    backwards: with dY's tiles gathered as forward scatters them (zero where a tile
    hangs over the edge), dM = A2^T dY, dU[q] = sum over the tiles of V[q]^T dM[q],
    and dW = G2^T dU (the transposes of forward's three linear maps)."""
    m = OUTPUT_TILE if m is None else m
    _check("kernel_gradient", x, dy=dy)
    xp = backend.get_array_module(x)
    b2, g2, a2 = (xp.asarray(matrix, dtype=x.dtype) for matrix in transform_matrices(m))
    n, c_in, filters = x.shape[0], x.shape[3], dy.shape[-1]
    t = m + 2
    tiles_hw, block, size = _blocks(x.shape, filters, m)
    first, second, third = (thread_buffer(f"winograd {k}", (size,), x) for k in (1, 2, 3))
    d_u = xp.zeros((t * t, c_in, filters), dtype=x.dtype)
    part_sum = xp.empty_like(d_u)
    with quiet_overflow():
        for start in range(0, n, block):
            stop = min(start + block, n)
            images, grads = x[start:stop], dy[start:stop]
            tiles = (stop - start) * tiles_hw[0] * tiles_hw[1]
            v = _input_transform(images, m, tiles_hw, b2, first, second)
            dy_tiles = first[:m * m * tiles * filters].reshape(m, m, stop - start, *tiles_hw,
                                                              filters)
            over_batch(lambda part: _tiles_of(grads[part], dy_tiles[:, :, part]), images)
            d_m = third[:t * t * tiles * filters].reshape(t * t, tiles, filters)
            xp.matmul(a2.T, dy_tiles.reshape(m * m, -1), out=d_m.reshape(t * t, -1))
            xp.matmul(v.transpose(0, 2, 1), d_m, out=part_sum)  # the t*t products
            d_u += part_sum
    return (g2.T @ d_u.reshape(t * t, -1)).reshape(3, 3, c_in, filters)


def input_gradient(dy: Array, kernel: Array, m: int | None = None) -> Array:
    """dx of y = conv3x3_same(x, kernel): dy convolved with the kernel turned by 180
    degrees, in and out channels swapped."""
    turned = kernel[::-1, ::-1].swapaxes(2, 3)
    _check("input_gradient", dy, kernel=turned)
    return conv3x3_same(dy, turned, m=m)


def _check(where: str, x: Array, kernel: Array | None = None, bias: Array | None = None,
           dy: Array | None = None) -> None:
    """Refuse what the transforms would get silently wrong: x not 4-D or not floating
    (G's 1/6 and 1/24 would round to 0), a kernel not (3, 3, c_in, filters), a bias
    not (filters,), a dy not x's (N, H, W) with its own channels."""
    shape = getattr(x, "shape", None)
    if shape is None or len(shape) != 4 or x.dtype.kind != "f":
        raise ValueError(f"winograd.{where}: expected x as floating images (N, H, W, C), got "
                         f"{getattr(x, 'dtype', type(x).__name__)} of shape {shape}")
    if kernel is not None and (kernel.ndim != 4 or kernel.shape[:3] != (3, 3, shape[3])):
        raise ValueError(f"winograd.{where}: expected a kernel of shape (3, 3, {shape[3]}, "
                         f"filters) for x's {shape[3]} channels, got {kernel.shape}")
    if bias is not None and tuple(bias.shape) != (kernel.shape[3],):
        raise ValueError(f"winograd.{where}: expected a bias of shape ({kernel.shape[3]},), "
                         f"got {bias.shape}")
    if dy is not None and (dy.ndim != 4 or dy.shape[:3] != shape[:3]):
        raise ValueError(f"winograd.{where}: expected dy of shape {tuple(shape[:3])} + "
                         f"(filters,), x's images, got {dy.shape}")


def _blocks(x_shape: tuple[int, ...], filters: int, m: int
            ) -> tuple[tuple[int, int], int, int]:
    """(tiles_hw, images per block, values per work array) for images x_shape: a side
    not a multiple of m has its last tile hanging over; a block holds about
    BLOCK_TILES tiles (at least one image); a work array holds a block's P, V, M or
    dM, whichever has the most channels."""
    n, h, w, c_in = x_shape
    tiles_hw = (-(-h // m), -(-w // m))
    block = max(1, BLOCK_TILES // (tiles_hw[0] * tiles_hw[1]))
    size = (m + 2) ** 2 * min(block, n) * tiles_hw[0] * tiles_hw[1] * max(c_in, filters)
    return tiles_hw, block, size


def _input_transform(images: Array, m: int, tiles_hw: tuple[int, int], b2: Array,
                     gathered: Array, out: Array) -> Array:
    """V = B2 @ P for a block of images, (t*t, tiles, c): P gathered over the host's
    threads into the work array ``gathered``, V written into ``out`` (flat arrays)."""
    xp = backend.get_array_module(images)
    t, c = m + 2, images.shape[-1]
    tiles = images.shape[0] * tiles_hw[0] * tiles_hw[1]
    patches = gathered[:t * t * tiles * c].reshape(t, t, images.shape[0], *tiles_hw, c)
    over_batch(lambda part: _gather(images[part], m, patches[:, :, part]), images)
    v = out[:t * t * tiles * c].reshape(t * t, tiles, c)
    xp.matmul(b2, patches.reshape(t * t, -1), out=v.reshape(t * t, -1))
    return v


def _gather(x: Array, m: int, out: Array) -> None:
    """out[r, s] = pixel (r, s) of every tile of x's images, zero outside them, for each
    of the t*t positions: out (t, t, n, th, tw, c). Tile (i, j) starts at pixel
    (m*i - 1, m*j - 1), so position (r, s) of all tiles is the strided view
    padded[:, r::m, s::m] of x padded with zeros (one row and column above and left,
    as many below and right as the last tiles need), its first th x tw pixels."""
    n, h, w, c = x.shape
    th, tw = out.shape[3:5]
    padded = thread_buffer("winograd padded", (n, m * th + 2, m * tw + 2, c), x)
    padded[:, 0] = 0
    padded[:, h + 1:] = 0
    padded[:, 1:h + 1, 0] = 0
    padded[:, 1:h + 1, w + 1:] = 0
    padded[:, 1:h + 1, 1:w + 1] = x
    for r in range(m + 2):
        for s in range(m + 2):
            out[r, s] = padded[:, r:r + m * th:m, s:s + m * tw:m]


def _tiles_of(dy: Array, out: Array) -> None:
    """out[a, b, :, i, j] = dy[:, m*i + a, m*j + b], 0 past the image's edge: the
    transpose of ``_scatter`` (out (m, m, n, th, tw, f))."""
    m = out.shape[0]
    for a in range(m):
        for b in range(m):
            phase = dy[:, a::m, b::m]
            out[a, b][:, :phase.shape[1], :phase.shape[2]] = phase
            out[a, b][:, phase.shape[1]:] = 0
            out[a, b][:, :phase.shape[1], phase.shape[2]:] = 0


def _scatter(y_tiles: Array, y: Array, bias: Array | None) -> None:
    """y[:, m*i + a, m*j + b] = y_tiles[a, b, :, i, j] (+ bias): each output phase
    (a, b) is the strided view y[:, a::m, b::m]; a tile that hangs over the
    image's edge has outputs there that are dropped."""
    m = y_tiles.shape[0]
    for a in range(m):
        for b in range(m):
            out = y[:, a::m, b::m]
            out[...] = y_tiles[a, b][:, :out.shape[1], :out.shape[2]]
            if bias is not None:
                out += bias
