"""The host's blocked passes (GELU, BatchNormalization + GELU) at several block sizes.

    python benchmarks/bench_host_passes.py                       # 2**16 .. 2**19 values
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


def interleaved_medians(settings: list, apply, ops: dict, repeats: int) -> dict:
    """{(setting, name, "forward" | "backward"): median ms}: each round calls
    ``apply(setting)`` for every setting in turn, then times each op's forward and
    backward; round 0 is untimed (it sizes the buffers)."""
    times: dict = {(setting, name, part): [] for setting in settings for name in ops
                   for part in ("forward", "backward")}
    for r in range(repeats + 1):
        for setting in settings:
            apply(setting)
            for name, (forward, backward) in ops.items():
                t_forward, t_backward = clock(forward), clock(backward)
                if r:
                    times[(setting, name, "forward")].append(t_forward)
                    times[(setting, name, "backward")].append(t_backward)
    return {key: statistics.median(values) for key, values in times.items()}


def report(title: str, args: argparse.Namespace, names: list[str], medians: dict,
           default: int, unit: str = "") -> None:
    """Print the medians, one row per --block (0 printed as "whole"), and write them
    to --json if given."""
    print(f"# {title} at batch {args.batch}, ms (medians of {args.repeats}), "
          f"{host_threads()} host threads, "
          f"freed memory kept: {memory.keeping_freed_memory()}; default block {default}{unit}")
    print(f"{'block':>8}" + "".join(f" {name + ' fwd':>12} {'bwd':>7}" for name in names))
    rows = []
    for block in args.block:
        row = {"block": block, **{f"{name}_{part}_ms": medians[(block, name, part)]
                                  for name in names for part in ("forward", "backward")}}
        rows.append(row)
        print(f"{block or 'whole':>8}" + "".join(
            f" {row[name + '_forward_ms']:>12.0f} {row[name + '_backward_ms']:>7.0f}"
            for name in names))
    if args.json:
        write_text_atomic(args.json, json.dumps(
            {"threads": host_threads(), "batch": args.batch, "default_block": default,
             "repeats": args.repeats, "rows": rows}, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--block", type=int, nargs="+", default=[1 << 16, 1 << 17, 1 << 18, 1 << 19],
                   metavar="V", help="values per block (default 65536 131072 262144 524288)")
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
    try:
        medians = interleaved_medians(args.block, lambda block: setattr(normalization, "BLOCK",
                                                                        block),
                                      ops, args.repeats)
    finally:
        normalization.BLOCK = default
    report("host passes", args, list(ops), medians, default)
    return 0


if __name__ == "__main__":
    sys.exit(main())
