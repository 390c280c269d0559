"""Each of the fast recipe's 3x3 convolutions alone, at several im2col block sizes,
and by Winograd's F(m x m, 3x3) against im2col.

    python benchmarks/bench_conv_layers.py
    python benchmarks/bench_conv_layers.py --block-rows 512 1024 2048 --layers conv1_2 conv2_1
    python benchmarks/bench_conv_layers.py --winograd --block-rows 2048
    python benchmarks/bench_conv_layers.py --winograd --winograd-min-channels 64 \
        --layers conv2_1
    python benchmarks/bench_conv_layers.py --winograd --winograd-tile 2 --block-rows 0

For each layer of examples/cifar10_fast.py (its input size and channels at
``--batch`` images of random values), times ``minicnn.ops.conv``'s forward and
backward (with dx) on the host's blocked path, every block size of
``--block-rows`` in turn for ``--rounds`` rounds (the first untimed): R
output pixels' worth of images per block whatever the col's bytes
(``BLOCK_ROWS`` set to R, ``COL_BLOCK_BYTES`` unbounded), or with R = 0 the
default rule (a col of about ``COL_BLOCK_BYTES``, at most ``BLOCK_ROWS``
pixels): which block size suits which product shape. Prints the medians in
ms and the images per block; ``--json`` writes the medians.

With ``--winograd`` each block size is timed twice per round, interleaved: by
im2col alone, and as training runs, where ``winograd.applies`` sends the
layer's forward, dx and dW to Winograd's F(m x m, 3x3) (m: ``--winograd-tile``,
default ``winograd.OUTPUT_TILE``; ``--winograd-block-tiles`` its block size). ``--winograd-min-channels`` and
``--winograd-min-size`` lower the channels and the image side it asks for, to
see where it stops paying. ``bench_fast_recipe.py`` measures the whole training
step instead.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from minicnn.fileio import write_text_atomic  # noqa: E402
from minicnn.ops import conv as conv_ops  # noqa: E402
from minicnn.ops import winograd  # noqa: E402

# name: (input height = width, input channels, filters), as in cifar10_fast.build_model
LAYERS = {"conv1_1": (31, 24, 64), "conv1_2": (15, 64, 64), "conv2_1": (15, 64, 256),
          "conv2_2": (7, 256, 256), "conv3_1": (7, 256, 256), "conv3_2": (3, 256, 256)}


def time_layer(name: str, batch: int, block_rows: list[int], rounds: int,
               rng: np.random.Generator, paths: list[str]
               ) -> tuple[dict[tuple[str, int], tuple[float, float]], dict[int, int]]:
    """({(path, rows): (forward ms, backward ms)}, {rows: images per block}): medians
    over the timed rounds, on the blocked host path whatever the batch; path "im2col"
    or "winograd" (Winograd where ``winograd.applies``)."""
    size, c_in, filters = LAYERS[name]
    x = rng.standard_normal((batch, size, size, c_in)).astype(np.float32)
    kernel = (rng.standard_normal((3, 3, c_in, filters)) * 0.05).astype(np.float32)
    dy = rng.standard_normal((batch, size, size, filters)).astype(np.float32)
    workspace = conv_ops.Workspace()
    min_channels, keep_col_bytes = winograd.MIN_CHANNELS, conv_ops.KEEP_COL_BYTES
    default_blocks = conv_ops.BLOCK_ROWS, conv_ops.COL_BLOCK_BYTES
    times: dict[tuple[str, int], list[tuple[float, float]]] = {
        (path, rows): [] for rows in block_rows for path in paths}
    images: dict[int, int] = {}  # images per im2col block, by --block-rows value
    for r in range(rounds + 1):
        for path, rows in times:
            conv_ops.BLOCK_ROWS, conv_ops.COL_BLOCK_BYTES = (
                (rows, 1 << 62) if rows else default_blocks)
            winograd.MIN_CHANNELS = min_channels if path == "winograd" else 1 << 62
            conv_ops.KEEP_COL_BYTES = 0  # the blocked path at any --batch, as at 1024
            images[rows] = conv_ops._Geometry((3, 3), (1, 1), (size, size), (1, 1), False,
                                              filters, c_in, 4).images_per_block()
            try:
                start = time.perf_counter()
                _, cache = conv_ops.conv2d_forward(x, kernel, None, (1, 1), "same", True,
                                                   workspace)
                middle = time.perf_counter()
                conv_ops.conv2d_backward(dy, kernel, False, cache, True, workspace)
                end = time.perf_counter()
            finally:
                winograd.MIN_CHANNELS, conv_ops.KEEP_COL_BYTES = min_channels, keep_col_bytes
                conv_ops.BLOCK_ROWS, conv_ops.COL_BLOCK_BYTES = default_blocks
            if r:  # the first round sizes the buffers
                times[path, rows].append((middle - start, end - middle))
    return {key: (1e3 * statistics.median(t[0] for t in v),
                  1e3 * statistics.median(t[1] for t in v)) for key, v in times.items()}, images


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--rounds", type=int, default=3, help="timed rounds (one more untimed)")
    p.add_argument("--block-rows", type=int, nargs="+", default=[512, 1024, 2048, 4096])
    p.add_argument("--layers", nargs="+", choices=list(LAYERS), default=list(LAYERS))
    p.add_argument("--winograd", action="store_true",
                   help="also time each layer by Winograd's F(m x m, 3x3) where it applies")
    p.add_argument("--winograd-tile", type=int, choices=sorted(winograd._TRANSFORMS),
                   default=winograd.OUTPUT_TILE,
                   help=f"m, the output tile (default {winograd.OUTPUT_TILE}, as training)")
    p.add_argument("--winograd-block-tiles", type=int, default=winograd.BLOCK_TILES,
                   help=f"tiles per Winograd block (default {winograd.BLOCK_TILES}, as training)")
    p.add_argument("--winograd-min-channels", type=int, default=winograd.MIN_CHANNELS,
                   help="the channels (in and out) Winograd asks for "
                        f"(default {winograd.MIN_CHANNELS}, as training)")
    p.add_argument("--winograd-min-size", type=int, default=winograd.MIN_SIZE,
                   help="the image side Winograd asks for "
                        f"(default {winograd.MIN_SIZE}, as training)")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    if args.batch < 1 or args.rounds < 1 or min(args.block_rows) < 0 \
            or args.winograd_block_tiles < 1:
        p.error("--batch, --rounds and --winograd-block-tiles must be at least 1, "
                "--block-rows at least 0 (the default)")
    saved = (conv_ops.BLOCK_ROWS, conv_ops.COL_BLOCK_BYTES, winograd.MIN_CHANNELS,
             winograd.MIN_SIZE, winograd.OUTPUT_TILE, winograd.BLOCK_TILES)
    winograd.MIN_CHANNELS, winograd.MIN_SIZE = args.winograd_min_channels, args.winograd_min_size
    winograd.OUTPUT_TILE, winograd.BLOCK_TILES = args.winograd_tile, args.winograd_block_tiles
    paths = ["im2col", "winograd"] if args.winograd else ["im2col"]
    rng = np.random.default_rng(0)
    result: dict[str, dict[str, list[float]]] = {}
    winograd_result: dict[str, dict[str, list[float]]] = {}
    try:
        for name in args.layers:
            size, c_in, filters = LAYERS[name]
            applies = winograd.applies((size, size), (3, 3, c_in, filters), (1, 1), (1, 1),
                                       ((1, 1), (1, 1)))
            times, images = time_layer(name, args.batch, args.block_rows, args.rounds, rng,
                                       paths)
            for (path, rows), (forward, backward) in times.items():
                (result if path == "im2col" else winograd_result).setdefault(name, {})[
                    str(rows)] = [forward, backward]
                label = ("" if not args.winograd else
                         " im2col  " if path == "im2col" else
                         " winograd" if applies else " (im2col)")
                n = images[rows]
                block = ((f"{rows:5d} rows" if rows else "default")
                         + f" ({n} image{'' if n == 1 else 's'})")
                print(f"{name} {LAYERS[name]}, block {block}{label}: forward "
                      f"{forward:7.1f} ms, backward {backward:7.1f} ms, both "
                      f"{forward + backward:7.1f} ms", flush=True)
    finally:
        (conv_ops.BLOCK_ROWS, conv_ops.COL_BLOCK_BYTES, winograd.MIN_CHANNELS,
         winograd.MIN_SIZE, winograd.OUTPUT_TILE, winograd.BLOCK_TILES) = saved
    if args.json:
        report = {"batch": args.batch, "rounds": args.rounds, "ms_forward_backward": result}
        if args.winograd:
            report["winograd_min_channels"] = args.winograd_min_channels
            report["winograd_min_size"] = args.winograd_min_size
            report["winograd_tile"] = args.winograd_tile
            report["winograd_block_tiles"] = args.winograd_block_tiles
            report["ms_forward_backward_winograd"] = winograd_result
        write_text_atomic(args.json, json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
