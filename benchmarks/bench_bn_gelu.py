"""BatchNormalization + activation, fused against unfused: forward + backward time.

    python benchmarks/bench_bn_gelu.py                      # the two recipe shapes, 2 threads
    python benchmarks/bench_bn_gelu.py --threads 1 --repeats 9 --json out.json
    python benchmarks/bench_bn_gelu.py --shape 64x8x8x16 --activation relu

What is timed: one training forward and one backward of a BatchNormalization
(no scale, as airbench's) followed by Activation(gelu or relu), on float32
activations of each --shape (N x H x W x C), with host threads --threads:

* unfused: the two layers one after the other under the fast ops (what runs
  while a hook watches either layer), the normalization and the activation in
  their own passes (the GELU's blocked on the host's threads too, minicnn/ops/gelu.py);
* fused:   the pair as the model runs it under the fast ops
  (BatchNormalization.run_fused_forward/backward, minicnn/ops/normalization.py).

The two are interleaved round by round, each after one untimed call; medians
over --repeats rounds, with the spread, and the ratio unfused / fused (the
median of the per-round ratios). Both give the same numbers up to rounding
(checked here before timing).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import minicnn  # noqa: E402
from minicnn import activations, ops  # noqa: E402
from minicnn.layers import Activation, BatchNormalization  # noqa: E402

DEFAULT_SHAPES = ["1024x16x16x64", "1024x8x8x256"]


def parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        shape = ()
    if len(shape) != 4 or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"--shape must be NxHxWxC with positive sizes, "
                                         f"got {text!r}")
    return shape


def make_pair(shape: tuple[int, ...], activation: str) -> tuple[BatchNormalization, Activation]:
    norm = BatchNormalization(scale=False, epsilon=1e-12, momentum=0.6)
    norm.maybe_build((None, *shape[1:]))
    act = Activation(activation)
    act.maybe_build((None, *shape[1:]))
    return norm, act


def unfused_step(norm, act, x, dy):
    y = act.run_forward(norm.run_forward(x, training=True), training=True)
    dx = norm.run_backward(act.run_backward(dy))
    return y, dx


def fused_step(norm, act, x, dy):
    y = norm.run_fused_forward(x, True, act.activation)
    dx = norm.run_fused_backward(dy)
    return y, dx


def timed(step, *args) -> float:
    step(*args)  # untimed: warm caches and buffers
    start = time.perf_counter()
    step(*args)
    return time.perf_counter() - start


def bench(shape: tuple[int, ...], activation: str, repeats: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape, dtype=np.float32) * 2 + 0.5)
    dy = rng.standard_normal(shape, dtype=np.float32)
    norm, act = make_pair(shape, activation)
    y_plain, dx_plain = unfused_step(norm, act, x, dy)
    y_fused, dx_fused = fused_step(norm, act, x, dy)
    for name, a, b in (("y", y_fused, y_plain), ("dx", dx_fused, dx_plain)):
        # Up to rounding; a ReLU's z within rounding of 0 may fall on either side,
        # which changes those few dx entries: allow one in 10^4 beyond the tolerance.
        off = float((np.abs(a - b) > 1e-4 * float(np.abs(b).max())).mean())
        if off > 1e-4:
            raise SystemExit(f"bench_bn_gelu: fused and unfused {name} differ beyond "
                             f"rounding in {off:.2%} of the entries")
    del y_plain, dx_plain, y_fused, dx_fused
    times = {"unfused": [], "fused": []}
    for round_ in range(repeats):
        order = ["unfused", "fused"] if round_ % 2 == 0 else ["fused", "unfused"]
        for name in order:
            step = unfused_step if name == "unfused" else fused_step
            times[name].append(timed(step, norm, act, x, dy))
    ratios = [u / f for u, f in zip(times["unfused"], times["fused"])]
    return {"shape": list(shape), "activation": activation,
            "unfused_s": statistics.median(times["unfused"]),
            "fused_s": statistics.median(times["fused"]),
            "unfused_range": [min(times["unfused"]), max(times["unfused"])],
            "fused_range": [min(times["fused"]), max(times["fused"])],
            "ratio": statistics.median(ratios)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shape", type=parse_shape, action="append",
                        help="NxHxWxC (repeatable; default: " + ", ".join(DEFAULT_SHAPES) + ")")
    parser.add_argument("--activation", choices=["gelu", "relu"], action="append",
                        help="repeatable; default: gelu and relu")
    parser.add_argument("--threads", type=int, default=2, help="host threads (default 2)")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (default 5)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    if args.threads < 1 or args.repeats < 1:
        parser.error("--threads and --repeats must be positive")
    shapes = args.shape or [parse_shape(s) for s in DEFAULT_SHAPES]
    kinds = args.activation or ["gelu", "relu"]
    ops.set_host_threads(args.threads)
    ops.set_ops("fast")
    print(f"BatchNormalization(scale=False) + Activation, float32, training forward + "
          f"backward; {args.threads} host threads (OMP_NUM_THREADS="
          f"{os.environ.get('OMP_NUM_THREADS', 'unset')}), median of {args.repeats}")
    results = []
    for shape in shapes:
        for kind in kinds:
            r = bench(shape, kind, args.repeats, args.seed)
            results.append(r)
            print(f"{'x'.join(map(str, shape)):>16} {kind:5}  "
                  f"unfused {r['unfused_s'] * 1e3:8.1f} ms  fused {r['fused_s'] * 1e3:8.1f} ms  ratio {r['ratio']:.2f}x")
    if args.json is not None:
        from minicnn.fileio import write_text_atomic
        write_text_atomic(args.json, json.dumps({"threads": args.threads,
                                                 "repeats": args.repeats,
                                                 "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    activations.get("gelu")  # the names exist (a clear error here rather than mid-run)
    sys.exit(main())
