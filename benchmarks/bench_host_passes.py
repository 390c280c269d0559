"""The host's blocked passes (GELU, BatchNormalization + GELU) at several block sizes.

    python benchmarks/bench_host_passes.py                       # 2**15 .. 2**18 values
    python benchmarks/bench_host_passes.py --block 32768 131072 --repeats 7 --json out.json

What is timed, for each --block (values per block, ``ops.normalization.BLOCK``),
with the host's threads ($MINICNN_NUM_THREADS, default the CPUs):

* ``gelu``: ops.gelu_forward and gelu_backward over the fast recipe's first
  activation, --batch x 31 x 31 x 24 float32 (after the whitening convolution);
* ``bn_gelu``: ops.batch_norm_act_forward (training, batch statistics) and its
  backward over --batch x 16 x 16 x 64 (the first conv group's BatchNormalization).

Each block of GELU's erf is some 25 NumPy calls; with two threads each call hands
the GIL over, so small blocks spend their time waiting for it, and large ones
fall out of the cache. Block sizes are interleaved round by round, each after one
untimed call; medians over --repeats rounds, in ms. Freed memory is kept for
reuse as in training (minicnn.ops.memory), so page faults do not blur the times.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from minicnn.fileio import write_text_atomic  # noqa: E402
from minicnn.ops import gelu, memory, normalization  # noqa: E402
from minicnn.ops.threads import host_threads  # noqa: E402

GELU_SHAPE = (31, 31, 24)  # per image
BN_SHAPE = (16, 16, 64)


def clock(fn) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


def passes(rng: np.random.Generator, batch: int) -> dict:
    """name -> (forward, backward) callables on fixed random inputs."""
    z = rng.standard_normal((batch, *GELU_SHAPE), dtype=np.float32)
    dz = rng.standard_normal((batch, *GELU_SHAPE), dtype=np.float32)
    x = rng.standard_normal((batch, *BN_SHAPE), dtype=np.float32)
    dx = rng.standard_normal((batch, *BN_SHAPE), dtype=np.float32)
    beta = np.zeros(BN_SHAPE[-1], np.float32)
    state: dict = {}

    def gelu_forward():
        state["gelu"] = gelu.gelu_forward(z, False)[1]

    def bn_forward():
        state["bn"] = normalization.batch_norm_act_forward(
            x, None, beta, None, None, 1e-12, "gelu", True)[3]
    return {
        "gelu": (gelu_forward, lambda: gelu.gelu_backward(dz, z, state["gelu"], False)),
        "bn_gelu": (bn_forward,
                    lambda: normalization.batch_norm_act_backward(dx, state["bn"], True, True)),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--block", type=int, nargs="+", default=[1 << 15, 1 << 16, 1 << 17, 1 << 18],
                   metavar="V", help="values per block (default 32768 65536 131072 262144)")
    p.add_argument("--repeats", type=int, default=5, help="rounds (default 5)")
    p.add_argument("--batch", type=int, default=1024, help="images (default 1024, the recipe's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="PATH", help="also write the numbers here")
    args = p.parse_args(argv)
    if min(args.repeats, args.batch, *args.block) < 1:
        p.error(f"--repeats, --batch and --block must be positive, got {args.repeats}, "
                f"{args.batch} and {args.block}")
    memory.keep_freed_memory()
    ops = passes(np.random.default_rng(args.seed), args.batch)
    default = normalization.BLOCK
    times: dict = {(b, name, part): [] for b in args.block for name in ops
                   for part in ("forward", "backward")}
    try:
        for r in range(args.repeats + 1):  # round 0: untimed
            for block in args.block:
                normalization.BLOCK = block
                for name, (forward, backward) in ops.items():
                    t_forward, t_backward = clock(forward), clock(backward)
                    if r:
                        times[(block, name, "forward")].append(t_forward)
                        times[(block, name, "backward")].append(t_backward)
    finally:
        normalization.BLOCK = default
    print(f"# host passes at batch {args.batch}, ms (medians of {args.repeats}), "
          f"{host_threads()} host threads, "
          f"freed memory kept: {memory.keeping_freed_memory()}; default block {default}")
    print(f"{'block':>8} {'gelu fwd':>9} {'bwd':>7} {'bn_gelu fwd':>12} {'bwd':>7}")
    rows = []
    for block in args.block:
        row = {"block": block, **{f"{name}_{part}_ms": statistics.median(times[(block, name, part)])
                                  for name in ops for part in ("forward", "backward")}}
        rows.append(row)
        print(f"{block:>8} {row['gelu_forward_ms']:>9.0f} {row['gelu_backward_ms']:>7.0f} "
              f"{row['bn_gelu_forward_ms']:>12.0f} {row['bn_gelu_backward_ms']:>7.0f}")
    if args.json:
        write_text_atomic(args.json, json.dumps(
            {"threads": host_threads(), "batch": args.batch, "default_block": default,
             "repeats": args.repeats,
             "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
