"""Winograd's minimal filtering F(2x2, 3x3): a 3x3 convolution with 2.25x fewer products.

Lavin and Gray (2015), "Fast Algorithms for Convolutional Neural Networks".
The output is cut into 2x2 tiles; tile t needs the 4x4 patch d_t of the padded
input under it. For one input channel c and filter f,

    Y_t = A^T [ (G g G^T) (.) (B^T d_t B) ] A        (.) element-wise, 4x4

    B^T = [[1, 0, -1,  0],    G = [[ 1,    0,   0  ],    A^T = [[1, 1,  1,  0],
           [0, 1,  1,  0],         [1/2,  1/2, 1/2],           [0, 1, -1, -1]]
           [0, -1, 1,  0],         [1/2, -1/2, 1/2],
           [0, 1,  0, -1]]         [ 0,    0,   1  ]]

and the sum over c passes through A^T [...] A. So at each of the 16 positions
(xi, nu) of the transformed 4x4 tile, the sum over channels is a matrix product:

    V[xi nu] = (B^T d B)[xi nu]     (tiles, c_in)    the input, transformed
    U[xi nu] = (G g G^T)[xi nu]     (c_in, filters)  the kernel, transformed
    M[xi nu] = V[xi nu] @ U[xi nu]  (tiles, filters)
    Y        = A^T M A                               per tile, back to 2x2

Per tile and channel pair that is 16 multiplications instead of the 36 of the
direct sum (9 per output, 4 outputs). The transforms of d and M are additions
only; U costs a few products per kernel weight, once per call.

Backward: the input gradient of a stride-1 'same' 3x3 convolution is the same
kind of convolution, of dy with the kernel turned by 180 degrees and its
input and output channels swapped (``input_gradient``):

    dx[p, c] = sum over (i, j, f) of dy[p + (1 - i, 1 - j), f] g[i, j, c, f]

The kernel gradient stays an im2col product (conv.py): its Winograd form, the
sums over tiles of V^T dM (dM = A dY A^T), ran no faster in a trial at the
fast recipe's 256-channel shape, its products having the tiles as their
inner axis.

On the host the batch is cut into one part per thread, and each thread goes
through its images a block at a time (``BLOCK_TILES`` tiles, at least one
image: V and M 8 MB each at 256 channels), with BLAS single-threaded; the 16
products of a block are one stacked ``matmul``. conv.py takes this path on
its blocked host path (a col too big to keep, or inference) where it pays
(``applies``): 3x3 kernels, stride 1, 'same' padding, no dilation, at least
``MIN_CHANNELS`` channels in and out (narrower products run below BLAS's best
rate, and the transforms then cost more than the products save) and images
of at least ``MIN_SIZE`` pixels a side (a 3x3 image fills 2x2 tiles of 4x4:
16 outputs computed for 9). In float32 its error is of the order of a direct
sum's, relative to the output's scale (the transforms add and subtract
values of that scale). ``benchmarks/bench_conv_layers.py --winograd``
measures it against im2col (docs/performance.md).
"""
from __future__ import annotations

from minicnn import backend
from minicnn.backend import Array
from minicnn.ops.threads import over_batch, quiet_overflow, thread_buffer

MIN_CHANNELS = 128  # in and out; below it im2col's single product is faster
MIN_SIZE = 6        # pixels a side; below it the 2x2 tiles waste too much
BLOCK_TILES = 512   # output tiles per block and thread (at least one image's)

_G = ((1.0, 0.0, 0.0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0.0, 0.0, 1.0))


def applies(image_hw: tuple[int, int], kernel_shape: tuple[int, ...],
            strides: tuple[int, int], dilation: tuple[int, int],
            pads: tuple[tuple[int, int], tuple[int, int]]) -> bool:
    """Whether conv.py's blocked host path takes F(2x2, 3x3) for this convolution."""
    kh, kw, c_in, filters = kernel_shape
    return ((kh, kw) == (3, 3) and tuple(strides) == (1, 1) and tuple(dilation) == (1, 1)
            and tuple(map(tuple, pads)) == ((1, 1), (1, 1))
            and min(c_in, filters) >= MIN_CHANNELS and min(image_hw) >= MIN_SIZE)


def kernel_transform(kernel: Array) -> Array:
    """U = G g G^T for every channel pair: (16, c_in, filters), position xi*4 + nu first."""
    xp = backend.get_array_module(kernel)
    g_matrix = xp.asarray(_G, dtype=kernel.dtype)
    rows = xp.tensordot(g_matrix, kernel, axes=([1], [0]))    # (4 xi, 3 j, c_in, f)
    u = xp.tensordot(rows, g_matrix, axes=([1], [1]))        # (4 xi, c_in, f, 4 nu)
    return xp.ascontiguousarray(xp.moveaxis(u, -1, 1)).reshape(16, *kernel.shape[2:])


def conv3x3_same(x: Array, kernel: Array, bias: Array | None = None) -> Array:
    """y = conv(x, kernel) + bias, 3x3 kernel, stride 1, 'same' zero padding:
    x (N, H, W, c_in), kernel (3, 3, c_in, filters) -> y (N, H, W, filters)."""
    n, h, w, c_in = x.shape
    filters = kernel.shape[-1]
    tiles_hw = ((h + 1) // 2, (w + 1) // 2)  # an odd side's last tile hangs over by one
    u = kernel_transform(kernel.astype(x.dtype, copy=False))
    xp = backend.get_array_module(x)
    y = xp.empty((n, h, w, filters), dtype=x.dtype)
    block = max(1, BLOCK_TILES // (tiles_hw[0] * tiles_hw[1]))

    def part(images: slice) -> None:
        with quiet_overflow():
            for start in range(images.start, images.stop, block):
                stop = min(start + block, images.stop)
                v = _input_transform(_padded(x[start:stop], tiles_hw), tiles_hw)
                m = thread_buffer("winograd m", (16, v.shape[1], filters), x)
                xp.matmul(v, u, out=m)  # the 16 products, one BLAS call each
                _output_transform(m, y[start:stop], tiles_hw, bias)
    over_batch(part, x, blas=True)
    return y


def input_gradient(dy: Array, kernel: Array) -> Array:
    """dx of y = conv3x3_same(x, kernel): dy convolved with the kernel turned by 180
    degrees, in and out channels swapped."""
    return conv3x3_same(dy, kernel[::-1, ::-1].swapaxes(2, 3))


def _padded(x: Array, tiles_hw: tuple[int, int]) -> Array:
    """x's images with one zero row and column around them (two below and right for
    an odd side), in this thread's buffer: (n, 2*th + 2, 2*tw + 2, c)."""
    n, h, w, c = x.shape
    out = thread_buffer("winograd d", (n, 2 * tiles_hw[0] + 2, 2 * tiles_hw[1] + 2, c), x)
    out[:, 0] = 0
    out[:, h + 1:] = 0
    out[:, 1:h + 1, 0] = 0
    out[:, 1:h + 1, w + 1:] = 0
    out[:, 1:h + 1, 1:w + 1] = x
    return out


def _input_transform(d: Array, tiles_hw: tuple[int, int]) -> Array:
    """V = B^T d B for every tile and channel: (16, n*th*tw, c), rows of B^T first
    (on the tiles' rows, a strided view: tile t's row a is padded row 2t + a), then
    the same on the columns."""
    (th, tw), n, c = tiles_hw, d.shape[0], d.shape[-1]
    rows = thread_buffer("winograd rows", (4, n, th, d.shape[2], c), d)
    _b_transpose([d[:, a:a + 2 * th:2] for a in range(4)], rows)
    v = thread_buffer("winograd v", (4, 4, n, th, tw, c), d)
    for xi in range(4):
        _b_transpose([rows[xi][:, :, b:b + 2 * tw:2] for b in range(4)], v[xi])
    return v.reshape(16, n * th * tw, c)


def _b_transpose(d: list[Array], out: Array) -> None:
    """out[k] = (B^T d)[k] over the first axis: d0 - d2, d1 + d2, d2 - d1, d1 - d3."""
    xp = backend.get_array_module(out)
    xp.subtract(d[0], d[2], out=out[0])
    xp.add(d[1], d[2], out=out[1])
    xp.subtract(d[2], d[1], out=out[2])
    xp.subtract(d[1], d[3], out=out[3])


def _output_transform(m: Array, y: Array, tiles_hw: tuple[int, int],
                      bias: Array | None) -> None:
    """y = A^T M A (+ bias) for a block of images: A^T's rows on M's xi axis, then on
    nu, each output phase (a, b) written into the strided view y[:, a::2, b::2]."""
    xp = backend.get_array_module(y)
    (th, tw), n, f = tiles_hw, y.shape[0], y.shape[-1]
    m = m.reshape(4, 4, n, th, tw, f)
    s = thread_buffer("winograd s", (2, 4, n, th, tw, f), y)
    for nu in range(4):  # s[0] = m0 + m1 + m2, s[1] = m1 - m2 - m3 (xi, for each nu)
        xp.add(m[1, nu], m[2, nu], out=s[0, nu])
        s[0, nu] += m[0, nu]
        xp.subtract(m[1, nu], m[2, nu], out=s[1, nu])
        s[1, nu] -= m[3, nu]
    for a in range(2):
        for b in range(2):
            out = y[:, a::2, b::2]  # outputs (2t + a, 2u + b): an odd side has one tile fewer
            s0, s1, s2, s3 = (s[a, nu][:, :out.shape[1], :out.shape[2]] for nu in range(4))
            if b == 0:
                xp.add(s1, s2, out=out)
                out += s0
            else:
                xp.subtract(s1, s2, out=out)
                out -= s3
            if bias is not None:
                out += bias
