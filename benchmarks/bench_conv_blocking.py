"""How a training convolution should block im2col at a large batch: measured.

    python benchmarks/bench_conv_blocking.py                      # the fast recipe's convs
    python benchmarks/bench_conv_blocking.py --batch 256 --rounds 5 --blocks 8 16 32

For each 3x3 convolution of examples/cifar10_fast.py's network (at ``--batch``
images), times one training forward plus backward (kernel and input
gradients) through minicnn's fast ops in two ways:

* ``keep``: one im2col of the whole batch, kept for backward (what training
  does while col is at most ``minicnn.ops.conv.KEEP_COL_BYTES``);
* ``block B``: B images at a time through one small col, the padded input kept,
  each block's col made again in backward (what training does above it).

Prints the median time per way and layer over ``--rounds`` interleaved rounds,
and the bytes each way holds from forward to backward (col, or the padded
input). ``--json`` also writes them.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

import numpy as np  # noqa: E402

from minicnn.fileio import write_text_atomic  # noqa: E402
from minicnn.ops import conv as conv_ops  # noqa: E402

# examples/cifar10_fast.py's 3x3 convolutions: (name, input side, filters in, filters out)
RECIPE_CONVS = [("conv1_1", 31, 24, 64), ("conv1_2", 15, 64, 64), ("conv2_1", 15, 64, 256),
                ("conv2_2", 7, 256, 256), ("conv3_1", 7, 256, 256), ("conv3_2", 3, 256, 256)]


def step(x: np.ndarray, kernel: np.ndarray, dy: np.ndarray, keep_bytes: int, block: int,
         workspace: conv_ops.Workspace) -> tuple[float, int]:
    """Seconds for forward + backward, and the bytes the cache held in between."""
    conv_ops.KEEP_COL_BYTES, conv_ops.IMAGES_PER_BLOCK = keep_bytes, block
    start = time.perf_counter()
    _, cache = conv_ops.conv2d_forward(x, kernel, None, (1, 1), "same", True, workspace)
    conv_ops.conv2d_backward(dy, kernel, False, cache, True, workspace)
    seconds = time.perf_counter() - start
    held = cache.col if cache.col is not None else cache.x_padded
    return seconds, int(held.nbytes)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--blocks", type=int, nargs="+", default=[8, 16, 32, 64])
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args(argv)
    if args.batch < 1 or args.rounds < 1 or min(args.blocks) < 1:
        p.error("--batch, --rounds and --blocks must be at least 1")
    saved = conv_ops.KEEP_COL_BYTES, conv_ops.IMAGES_PER_BLOCK
    ways = [("keep", 1 << 62, args.batch)] + [(f"block {b}", 0, b) for b in args.blocks]
    rng = np.random.default_rng(0)
    results = {}
    try:
        for name, side, c_in, c_out in RECIPE_CONVS:
            x = rng.standard_normal((args.batch, side, side, c_in), dtype=np.float32)
            kernel = (rng.standard_normal((3, 3, c_in, c_out), dtype=np.float32)
                      / np.sqrt(9 * c_in)).astype(np.float32)
            dy = rng.standard_normal((args.batch, side, side, c_out), dtype=np.float32)
            workspaces = {way: conv_ops.Workspace() for way, _, _ in ways}
            times: dict[str, list[float]] = {way: [] for way, _, _ in ways}
            held: dict[str, int] = {}
            for way, keep, block in ways:  # untimed: page faults of new buffers
                step(x, kernel, dy, keep, block, workspaces[way])
            for _ in range(args.rounds):
                for way, keep, block in ways:
                    seconds, held[way] = step(x, kernel, dy, keep, block, workspaces[way])
                    times[way].append(seconds)
            results[name] = {way: {"ms": 1e3 * statistics.median(t), "held_mb": held[way] / 1e6}
                             for way, t in times.items()}
            row = "  ".join(f"{way} {r['ms']:6.0f} ms {r['held_mb']:5.0f} MB"
                            for way, r in results[name].items())
            print(f"{name} ({side}x{side}, {c_in}->{c_out}): {row}", flush=True)
    finally:
        conv_ops.KEEP_COL_BYTES, conv_ops.IMAGES_PER_BLOCK = saved
    totals = {way: sum(r[way]["ms"] for r in results.values()) for way, _, _ in ways}
    held_total = {way: sum(r[way]["held_mb"] for r in results.values()) for way, _, _ in ways}
    print("total: " + "  ".join(f"{way} {totals[way]:.0f} ms {held_total[way]:.0f} MB"
                                for way, _, _ in ways))
    if args.json:
        write_text_atomic(args.json, json.dumps({"batch": args.batch, "rounds": args.rounds,
                                                 "layers": results, "total_ms": totals,
                                                 "total_held_mb": held_total}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
