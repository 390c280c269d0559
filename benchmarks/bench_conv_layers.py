"""Each of the fast recipe's 3x3 convolutions alone, at several im2col block sizes.

    python benchmarks/bench_conv_layers.py
    python benchmarks/bench_conv_layers.py --block-rows 512 1024 2048 --layers conv1_2 conv2_1

For each layer of examples/cifar10_fast.py (its input size and channels at
``--batch`` images of random values), times ``minicnn.ops.conv``'s forward and
backward (with dx) on the host's blocked path, every block size of
``--block-rows`` in turn for ``--rounds`` rounds (the first untimed), with
``BLOCK_ROWS`` and ``NARROW_BLOCK_ROWS`` both set to it: which block size
suits which product shape. Prints the medians in ms; ``--json`` writes them.
``bench_conv_blocking.py`` measures the whole training step instead.
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

# name: (input height = width, input channels, filters), as in cifar10_fast.build_model
LAYERS = {"conv1_1": (31, 24, 64), "conv1_2": (15, 64, 64), "conv2_1": (15, 64, 256),
          "conv2_2": (7, 256, 256), "conv3_1": (7, 256, 256), "conv3_2": (3, 256, 256)}


def time_layer(name: str, batch: int, block_rows: list[int], rounds: int,
               rng: np.random.Generator) -> dict[int, tuple[float, float]]:
    """{rows: (forward ms, backward ms)}, medians over the timed rounds."""
    size, c_in, filters = LAYERS[name]
    x = rng.standard_normal((batch, size, size, c_in)).astype(np.float32)
    kernel = (rng.standard_normal((3, 3, c_in, filters)) * 0.05).astype(np.float32)
    dy = rng.standard_normal((batch, size, size, filters)).astype(np.float32)
    workspace = conv_ops.Workspace()
    times: dict[int, list[tuple[float, float]]] = {rows: [] for rows in block_rows}
    for r in range(rounds + 1):
        for rows in block_rows:
            conv_ops.BLOCK_ROWS = conv_ops.NARROW_BLOCK_ROWS = rows
            start = time.perf_counter()
            _, cache = conv_ops.conv2d_forward(x, kernel, None, (1, 1), "same", True, workspace)
            middle = time.perf_counter()
            conv_ops.conv2d_backward(dy, kernel, False, cache, True, workspace)
            end = time.perf_counter()
            if r:  # the first round sizes the buffers
                times[rows].append((middle - start, end - middle))
    return {rows: (1e3 * statistics.median(t[0] for t in v),
                   1e3 * statistics.median(t[1] for t in v)) for rows, v in times.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--rounds", type=int, default=3, help="timed rounds (one more untimed)")
    p.add_argument("--block-rows", type=int, nargs="+", default=[512, 1024, 2048, 4096])
    p.add_argument("--layers", nargs="+", choices=list(LAYERS), default=list(LAYERS))
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    if args.batch < 1 or args.rounds < 1 or min(args.block_rows) < 1:
        p.error("--batch, --rounds and --block-rows must be at least 1")
    saved = conv_ops.BLOCK_ROWS, conv_ops.NARROW_BLOCK_ROWS
    rng = np.random.default_rng(0)
    result: dict[str, dict[str, list[float]]] = {}
    try:
        for name in args.layers:
            times = time_layer(name, args.batch, args.block_rows, args.rounds, rng)
            result[name] = {str(rows): list(t) for rows, t in times.items()}
            for rows, (forward, backward) in times.items():
                print(f"{name} {LAYERS[name]}, block {rows:5d} rows: forward {forward:7.1f} ms, "
                      f"backward {backward:7.1f} ms, both {forward + backward:7.1f} ms", flush=True)
    finally:
        conv_ops.BLOCK_ROWS, conv_ops.NARROW_BLOCK_ROWS = saved
    if args.json:
        write_text_atomic(args.json, json.dumps(
            {"batch": args.batch, "rounds": args.rounds, "ms_forward_backward": result}, indent=1))


if __name__ == "__main__":
    main()
