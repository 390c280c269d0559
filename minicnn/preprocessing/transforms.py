"""Geometric transforms of a whole batch of images at once, on the batch's own device.

Every function takes a channels-last batch ``x`` of shape (N, H, W, C) and works
with ``xp = backend.get_array_module(x)``: the same array operations run on
NumPy, on the strict test backend and on CuPy, with no Python loop over the
images. The per-image parameters (which images to flip, each image's shift or
affine matrix) are small host arrays; they are moved once to the batch's device.

* ``flip(x, mask, axis)``: mirror the images where ``mask`` is true, along the
  rows (``axis=1``, an upside-down flip) or the columns (``axis=2``, left-right).
* ``translate(x, rows, cols, fill_mode, cval)``: move image n's content down by
  ``rows[n]`` and right by ``cols[n]`` whole pixels, one index gather:
  ``out[n, i, j] = x[n, i - rows[n], j - cols[n]]``.
* ``affine(x, matrices, fill_mode, cval)``: ``out[n, i, j] = x[n, r, c]`` with
  ``(r, c, 1) = matrices[n] @ (i, j, 1)`` (a 3x3 matrix per image mapping an
  output pixel to the input point it samples, scipy.ndimage.affine_transform's
  convention), read by bilinear interpolation (spline order 1) from the four
  pixels around (r, c): with r0 = floor(r), fr = r - r0 (c0, fc alike)::

      top    = x[r0, c0]   + fc (x[r0, c0+1]   - x[r0, c0])
      bottom = x[r0+1, c0] + fc (x[r0+1, c0+1] - x[r0+1, c0])
      out    = top + fr (bottom - top)

* ``keras_matrices(...)``: Keras's matrices for rotation, shift, shear and zoom
  about the image centre, for ``affine``.

Points outside the image are filled as scipy.ndimage fills them (the fill modes
of Keras's ImageDataGenerator, which calls scipy), for n pixels along an axis:

* ``"nearest"``: the edge pixel (the coordinate is clamped to [0, n-1]);
* ``"constant"``: ``cval`` wherever the point lies outside [0, n-1] on an axis;
* ``"reflect"``: mirrored about the edge, the edge pixel repeated
  (d c b a | a b c d | d c b a), the same as numpy.pad's "symmetric";
* ``"mirror"``: mirrored about the edge pixel, not repeating it
  (d c b | a b c d | c b a), numpy.pad's "reflect";
* ``"wrap"``: scipy's wrap, whose period is n-1, not n: the first and last
  pixel coincide (a b c d | b c d | b c d). This is what Keras does.

These are plain array transforms with no gradient; they prepare training data.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from minicnn import backend
from minicnn.backend import Array
from minicnn.strict import DeviceArray

FILL_MODES = ("nearest", "constant", "reflect", "mirror", "wrap")


def like(x: Array, host: ArrayLike, dtype: Any = None) -> Array:
    """The host array ``host`` on the device (array module) of ``x``."""
    host = np.asarray(host, dtype=dtype)
    if isinstance(x, DeviceArray):
        return host.view(DeviceArray)
    if backend.is_device_array(x):
        return backend.get_array_module(x).asarray(host)
    return host


def _check_batch(x: Array, where: str) -> None:
    if getattr(x, "ndim", None) != 4:
        raise ValueError(f"{where}: expected a channels-last batch of images (N, H, W, C), "
                         f"got shape {getattr(x, 'shape', type(x).__name__)}")


def _check_per_image(values: np.ndarray, n: int, name: str, where: str) -> np.ndarray:
    values = np.asarray(values)
    if values.shape != (n,):
        raise ValueError(f"{where}: expected {name} of shape ({n},), one per image, "
                         f"got shape {values.shape}")
    return values


def _check_fill_mode(fill_mode: str, where: str) -> None:
    if fill_mode not in FILL_MODES:
        raise ValueError(f"{where}: unknown fill_mode {fill_mode!r}; expected one of "
                         f"{', '.join(FILL_MODES)}")


# ---------------------------------------------------------------- flips
def flip(x: Array, mask: ArrayLike, axis: int = 2) -> Array:
    """``x`` with image n mirrored along ``axis`` (1: rows, 2: columns) where ``mask[n]``."""
    _check_batch(x, "transforms.flip")
    if axis not in (1, 2):
        raise ValueError(f"transforms.flip: axis must be 1 (rows) or 2 (columns), got {axis!r}")
    mask = _check_per_image(mask, x.shape[0], "mask", "transforms.flip").astype(bool)
    if not mask.any():
        return x
    # one gather of every pixel from its source, indices built on the batch's device
    xp = backend.get_array_module(x)
    n, h, w, _ = x.shape
    size = h if axis == 1 else w
    forward = like(x, np.arange(size, dtype=np.int64))
    source = xp.where(like(x, mask)[:, None], forward[::-1], forward)  # (N, size)
    if axis == 1:
        pixels = source[:, :, None] * w + like(x, np.arange(w, dtype=np.int64))[None, None, :]
    else:
        pixels = like(x, np.arange(h, dtype=np.int64) * w)[None, :, None] + source[:, None, :]
    pixels += like(x, np.arange(n, dtype=np.int64) * (h * w))[:, None, None]
    return _gather(xp, x, pixels)


# ---------------------------------------------------------------- fill modes
def _map_coordinates(xp: Any, coord: Array, n: int, fill_mode: str) -> Array:
    """Float coordinates along an axis of ``n`` pixels, moved into [0, n-1] the way
    scipy.ndimage does for "nearest", "constant" (clamped; the caller masks) and "wrap"."""
    if fill_mode == "wrap":
        if n == 1:
            return xp.zeros_like(coord)
        period = n - 1
        # scipy maps points below 0 into (0, n-1] and points above n-1 into [0, n-1)
        below = period - xp.mod(-coord, period)
        above = xp.mod(coord, period)
        return xp.where(coord < 0, below, xp.where(coord > n - 1, above, coord))
    return xp.clip(coord, 0, n - 1)


def _map_indices(xp: Any, index: Array, n: int, fill_mode: str) -> Array:
    """Whole pixel indices, any integer, mapped to [0, n) by reflection (scipy's
    "reflect" and "mirror" extend the image index by index)."""
    if fill_mode == "reflect":
        k = xp.mod(index, 2 * n)
        return xp.where(k >= n, 2 * n - 1 - k, k)
    if n == 1:
        return xp.zeros_like(index)
    period = 2 * (n - 1)
    k = xp.mod(index, period)
    return xp.where(k >= n, period - k, k)


def _neighbours(xp: Any, coord: Array, n: int, fill_mode: str) -> tuple[Array, Array, Array]:
    """The two pixel indices around each coordinate and the weight of the second."""
    if fill_mode in ("reflect", "mirror"):
        low = xp.floor(coord)
        frac = coord - low
        low = low.astype(np.int64)
        return _map_indices(xp, low, n, fill_mode), _map_indices(xp, low + 1, n, fill_mode), frac
    coord = _map_coordinates(xp, coord, n, fill_mode)
    low = xp.floor(coord)
    frac = coord - low
    low = low.astype(np.int64)
    return low, xp.minimum(low + 1, n - 1), frac


def _outside(xp: Any, coord: Array, n: int) -> Array:
    return (coord < 0) | (coord > n - 1)


def _gather(xp: Any, x: Array, pixels: Array) -> Array:
    """``x``'s pixels (all channels) at flat pixel indices n*H*W + row*W + col; one
    take along the pixel axis, several times faster than fancy indexing in NumPy."""
    n, h, w, c = x.shape
    return xp.take(x.reshape(n * h * w, c), pixels, axis=0)


# ---------------------------------------------------------------- whole-pixel shifts
def translate(x: Array, rows: ArrayLike, cols: ArrayLike, fill_mode: str = "nearest",
              cval: float = 0.0) -> Array:
    """Image n's content moved down ``rows[n]`` and right ``cols[n]`` whole pixels
    (negative: up, left), the uncovered border filled by ``fill_mode``; one gather.

    ``translate(x, r, c, "reflect")`` is a random crop of the image padded by
    reflection when r and c are drawn from [-pad, pad]."""
    where = "transforms.translate"
    _check_batch(x, where)
    _check_fill_mode(fill_mode, where)
    n, h, w, _ = x.shape
    rows = _check_per_image(rows, n, "rows", where)
    cols = _check_per_image(cols, n, "cols", where)
    if not (np.all(rows == np.round(rows)) and np.all(cols == np.round(cols))):
        raise ValueError(f"{where}: shifts must be whole pixels; use transforms.affine for "
                         "fractional ones")
    xp = backend.get_array_module(x)
    src_r = like(x, np.arange(h)[None, :] - rows.astype(np.int64)[:, None])  # (N, H)
    src_c = like(x, np.arange(w)[None, :] - cols.astype(np.int64)[:, None])  # (N, W)
    if fill_mode in ("reflect", "mirror"):
        ir, ic = _map_indices(xp, src_r, h, fill_mode), _map_indices(xp, src_c, w, fill_mode)
    else:
        ir = _map_coordinates(xp, src_r, h, fill_mode).astype(np.int64)
        ic = _map_coordinates(xp, src_c, w, fill_mode).astype(np.int64)
    base = like(x, np.arange(n, dtype=np.int64) * (h * w))[:, None, None]
    out = _gather(xp, x, base + ir[:, :, None] * w + ic[:, None, :])
    if fill_mode == "constant":
        outside = _outside(xp, src_r, h)[:, :, None] | _outside(xp, src_c, w)[:, None, :]
        out = xp.where(outside[..., None], xp.asarray(cval, dtype=x.dtype), out)
    return out


# ---------------------------------------------------------------- affine warps
def affine(x: Array, matrices: ArrayLike, fill_mode: str = "nearest",
           cval: float = 0.0) -> Array:
    """Each image resampled through its own 3x3 matrix (output pixel -> input point),
    bilinearly, all images in one vectorised gather; see the module docstring."""
    where = "transforms.affine"
    _check_batch(x, where)
    _check_fill_mode(fill_mode, where)
    n, h, w, c = x.shape
    matrices = np.asarray(matrices, dtype=np.float64)
    if matrices.shape != (n, 3, 3):
        raise ValueError(f"{where}: expected matrices of shape ({n}, 3, 3), one per image, "
                         f"got shape {matrices.shape}")
    xp = backend.get_array_module(x)
    m = like(x, matrices[:, :2, :])  # coordinates in float64: edges land where scipy's do
    i = like(x, np.arange(h, dtype=np.float64))[None, :, None]
    j = like(x, np.arange(w, dtype=np.float64))[None, None, :]
    r = m[:, 0, 0, None, None] * i + m[:, 0, 1, None, None] * j + m[:, 0, 2, None, None]
    q = m[:, 1, 0, None, None] * i + m[:, 1, 1, None, None] * j + m[:, 1, 2, None, None]
    r0, r1, fr = _neighbours(xp, r, h, fill_mode)
    c0, c1, fc = _neighbours(xp, q, w, fill_mode)
    base = like(x, np.arange(n, dtype=np.int64) * (h * w))[:, None, None]
    fr = fr.astype(x.dtype)[..., None]
    fc = fc.astype(x.dtype)[..., None]
    row0, row1 = base + r0 * w, base + r1 * w
    # a + f (b - a) for the top pair, the bottom pair, then between them; in place on
    # the freshly gathered arrays, as every large temporary costs its page faults
    top, right = _gather(xp, x, row0 + c0), _gather(xp, x, row0 + c1)
    right -= top
    right *= fc
    top += right
    bottom, right = _gather(xp, x, row1 + c0), _gather(xp, x, row1 + c1)
    right -= bottom
    right *= fc
    bottom += right
    bottom -= top
    bottom *= fr
    out = top
    out += bottom
    if fill_mode == "constant":
        outside = _outside(xp, r, h) | _outside(xp, q, w)
        out = xp.where(outside[..., None], xp.asarray(cval, dtype=x.dtype), out)
    return out.astype(x.dtype, copy=False)


def keras_matrices(height: int, width: int, theta: ArrayLike = 0.0, tx: ArrayLike = 0.0,
                   ty: ArrayLike = 0.0, shear: ArrayLike = 0.0, zx: ArrayLike = 1.0,
                   zy: ArrayLike = 1.0) -> np.ndarray:
    """Keras's affine matrices (N, 3, 3) on the host, one per image, for ``affine``.

    As keras_preprocessing's ``apply_affine_transform``: rotation by ``theta``
    degrees, shift by ``tx`` rows and ``ty`` columns, shear by ``shear`` degrees
    and zoom ``zx`` (rows), ``zy`` (columns) compose as R @ T @ S @ Z, acting on
    (row, column) coordinates about the point (H/2 + 0.5, W/2 + 0.5), Keras's
    centre (half a pixel below and right of the true one, (H-1)/2). A positive
    shift samples from further down/right, so the content moves up/left.
    """
    theta, tx, ty, shear, zx, zy = np.broadcast_arrays(
        *(np.asarray(v, dtype=np.float64) for v in (theta, tx, ty, shear, zx, zy)))
    shape = np.atleast_1d(theta).shape
    theta, tx, ty, shear, zx, zy = (np.reshape(v, shape) for v in (theta, tx, ty, shear, zx, zy))
    n = shape[0]
    t, s = np.deg2rad(theta), np.deg2rad(shear)
    zero, one = np.zeros(n), np.ones(n)

    def stack(rows):
        return np.stack([np.stack(row, axis=-1) for row in rows], axis=-2)

    rotation = stack([[np.cos(t), -np.sin(t), zero], [np.sin(t), np.cos(t), zero],
                      [zero, zero, one]])
    shift = stack([[one, zero, tx], [zero, one, ty], [zero, zero, one]])
    shearing = stack([[one, -np.sin(s), zero], [zero, np.cos(s), zero], [zero, zero, one]])
    zoom = stack([[zx, zero, zero], [zero, zy, zero], [zero, zero, one]])
    matrix = rotation @ shift @ shearing @ zoom
    o_r, o_c = height / 2 + 0.5, width / 2 + 0.5
    to_centre = np.array([[1, 0, o_r], [0, 1, o_c], [0, 0, 1]], dtype=np.float64)
    from_centre = np.array([[1, 0, -o_r], [0, 1, -o_c], [0, 0, 1]], dtype=np.float64)
    return to_centre @ matrix @ from_centre
