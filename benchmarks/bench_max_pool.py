"""The host's 2x2 max-pooling (the tiles pass) at several block sizes.

    python benchmarks/bench_max_pool.py              # 2**18 .. 2**21 bytes, and whole parts
    python benchmarks/bench_max_pool.py --block 524288 0 --repeats 7 --json out.json

What is timed, for each --block (input bytes per block,
``ops.pooling.TILE_BLOCK_BYTES``; 0: each thread's part in one block), with the
host's threads ($MINICNN_NUM_THREADS, default the CPUs): ops.max_pool_forward
(training: the winners' mask kept) and max_pool_backward over the fast recipe's
two large pooled activations, --batch x 31 x 31 x 64 (conv1_1's output) and
--batch x 15 x 15 x 256 (conv2_1's). Forward takes the maxima, then compares x
with them for the mask: in blocks that fit a core's cache the comparison reads x
from the cache. Block sizes are interleaved round by round, after one untimed
round; medians over --repeats rounds, in ms. Freed memory is kept for reuse as
in training (minicnn.ops.memory), so page faults do not blur the times.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from minicnn.ops import memory, pooling  # noqa: E402

from bench_host_passes import interleaved_medians, report  # noqa: E402  (this folder)

SHAPES = {"pool1": (31, 31, 64), "pool2": (15, 15, 256)}  # per image, as in cifar10_fast


def passes(inputs: dict, grads: dict) -> dict:
    """name -> (forward, backward) callables: forward keeps the winners, backward uses
    the last forward's."""
    caches: dict = {}

    def forward(name: str):
        return lambda: caches.__setitem__(name, pooling.max_pool_forward(
            inputs[name], (2, 2), (2, 2), "valid", True)[1])

    def backward(name: str):
        return lambda: pooling.max_pool_backward(grads[name], caches[name])
    return {name: (forward(name), backward(name)) for name in inputs}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--block", type=int, nargs="+",
                   default=[1 << 18, 1 << 19, 1 << 20, 1 << 21, 0], metavar="BYTES",
                   help="input bytes per block, 0 for whole parts "
                        "(default 262144 524288 1048576 2097152 0)")
    p.add_argument("--repeats", type=int, default=5, help="rounds (default 5)")
    p.add_argument("--batch", type=int, default=1024, help="images (default 1024, the recipe's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="PATH", help="also write the numbers here")
    args = p.parse_args(argv)
    if min(args.repeats, args.batch) < 1 or min(args.block) < 0:
        p.error(f"--repeats and --batch must be positive and --block at least 0, got "
                f"{args.repeats}, {args.batch} and {args.block}")
    memory.keep_freed_memory()
    rng = np.random.default_rng(args.seed)
    inputs = {name: rng.standard_normal((args.batch, *shape), dtype=np.float32)
              for name, shape in SHAPES.items()}
    grads = {name: rng.standard_normal((args.batch, shape[0] // 2, shape[1] // 2, shape[2]),
                                       dtype=np.float32) for name, shape in SHAPES.items()}
    default = pooling.TILE_BLOCK_BYTES
    try:
        medians = interleaved_medians(
            args.block, lambda block: setattr(pooling, "TILE_BLOCK_BYTES", block or 1 << 62),
            passes(inputs, grads), args.repeats)
    finally:
        pooling.TILE_BLOCK_BYTES = default
    report("2x2 max-pooling", args, list(SHAPES), medians, default, " bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
