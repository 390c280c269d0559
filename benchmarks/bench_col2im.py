"""A convolution's input gradient for one block of images: tap by tap, against one product.

    python benchmarks/bench_col2im.py                  # the recipe's blocked 3x3 layers
    python benchmarks/bench_col2im.py --repeats 50 --json out.json

What is timed, for the blocks that the host's blocked path gives each thread
(``ops.conv``'s block sizes: 4 images of 31x31 for ``conv1_1``, 8 of 15x15 for
``conv1_2`` and ``conv2_1``, 50 of 3x3 for ``conv3_2``), with
BLAS single-threaded as on that path, dx = col2im(dy @ W^T) two ways:

* tap by tap (what minicnn runs, ``conv._block_input_gradient``): for each
  kernel offset (i, j), dy @ W[i, j]^T into a buffer, added onto the
  offset's window of the padded images; then the inside copied out;
* one product: dcol = dy @ W^T for all offsets at once, then each offset's
  columns of dcol (c_in values every kh*kw*c_in) added onto its window (dcol
  and the padded images in buffers made once, as a thread's would be).

Both give the same dx up to rounding (checked before timing). The two are
interleaved call by call after one untimed call each; medians over
--repeats calls, in ms, and one / taps (above 1: tap by tap is faster).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from minicnn.fileio import write_text_atomic  # noqa: E402
from minicnn.ops import conv  # noqa: E402
from minicnn.ops import windows as win  # noqa: E402
from minicnn.ops.blas import single_threaded  # noqa: E402

from bench_host_passes import clock  # noqa: E402  (this folder)

# name: (side, channels in, filters), the 3x3 'same' layers cifar10_fast runs by im2col
LAYERS = {"conv1_1": (31, 24, 64), "conv1_2": (15, 64, 64), "conv2_1": (15, 64, 256),
          "conv3_2": (3, 256, 256)}


def block_case(side: int, c_in: int, filters: int, rng: np.random.Generator):
    """(dy of one block, kernel, cache, geometry, dx to fill), the block as many images
    as the blocked path gives it (``_Geometry.images_per_block``)."""
    geometry = conv._Geometry((3, 3), (1, 1), (side, side), (1, 1), False, filters, c_in, 4)
    images = geometry.images_per_block()
    kernel = (rng.standard_normal((3, 3, c_in, filters)) / np.sqrt(9 * c_in)).astype(np.float32)
    dy = rng.standard_normal((images * side * side, filters)).astype(np.float32)
    cache = conv.ConvCache(None, kernel.reshape(-1, filters), (images, side + 2, side + 2, c_in),
                           (1, 1), ((1, 1), (1, 1)), (side, side), (1, 1), None, (3, 3))
    return dy, kernel, cache, geometry, np.empty((images, side, side, c_in), np.float32)


def one_product(dy: np.ndarray, kernel: np.ndarray, cache, dcol: np.ndarray,
                padded: np.ndarray, dx: np.ndarray) -> None:
    """dcol = dy @ W^T for every offset at once, then col2im from dcol's scattered columns."""
    images, side, c_in = dx.shape[0], dx.shape[1], dx.shape[3]
    np.matmul(dy, kernel.reshape(-1, kernel.shape[-1]).T, out=dcol)
    taps = dcol.reshape(images, side, side, 3, 3, c_in)
    padded.fill(0)
    for i in range(3):
        for j in range(3):
            win.window(padded, i, j, (1, 1), (side, side))[...] += taps[:, :, :, i, j, :]
    dx[...] = win.crop(padded, cache.pads)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layers", nargs="+", choices=list(LAYERS), default=list(LAYERS))
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error(f"--repeats must be at least 1, got {args.repeats}")
    rng = np.random.default_rng(0)
    rows = []
    print(f"# one block's dx on one thread (BLAS single-threaded), ms, medians of {args.repeats}")
    print(f"{'layer':>8} {'block':>16} {'tap by tap':>11} {'one product':>12} {'one / taps':>11}")
    with single_threaded():
        for name in args.layers:
            side, c_in, filters = LAYERS[name]
            dy, kernel, cache, geometry, dx = block_case(side, c_in, filters, rng)
            images = dx.shape[0]
            dcol = np.empty((len(dy), 9 * c_in), np.float32)
            padded = np.empty(cache.padded_shape, np.float32)
            want = np.empty_like(dx)
            one_product(dy, kernel, cache, dcol, padded, want)
            conv._block_input_gradient(dy, kernel, cache, geometry, dx)
            np.testing.assert_allclose(dx, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
            taps, whole = [], []
            for _ in range(args.repeats):
                taps.append(clock(lambda: conv._block_input_gradient(dy, kernel, cache,
                                                                     geometry, dx)))
                whole.append(clock(lambda: one_product(dy, kernel, cache, dcol, padded, dx)))
            row = {"layer": name, "images": images, "side": side, "channels_in": c_in,
                   "filters": filters, "taps_ms": statistics.median(taps),
                   "one_product_ms": statistics.median(whole)}
            row["one_over_taps"] = row["one_product_ms"] / row["taps_ms"]
            rows.append(row)
            shape = f"{images}x{side}x{side}x{c_in}"
            print(f"{name:>8} {shape:>16} {row['taps_ms']:>11.3f} {row['one_product_ms']:>12.3f} "
                  f"{row['one_over_taps']:>10.2f}x")
    if args.json:
        write_text_atomic(args.json, json.dumps({"repeats": args.repeats, "rows": rows},
                                                indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
