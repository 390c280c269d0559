"""Inference on the host: ``Model.predict`` at several slice sizes, for both example models.

    python benchmarks/bench_inference.py                          # slices 32 .. 2048 and whole
    python benchmarks/bench_inference.py --slice 32 1024 0 --images 4000 --json out.json

On the host, ``predict`` sends a large batch through the whole network
``minicnn.plan.INFERENCE_SLICE`` images at a time (its activations then take no more
memory than a training batch of that size). For each --slice (0: the batch whole),
this times ``predict(x, batch_size=--batch)`` over --images random images with

* ``tutorial``: examples/cifar10.py's network (3 conv + 3 dense, the Keras 2
  tutorial's);
* ``fast``: examples/cifar10_fast.py's network (airbench's, BatchNormalization +
  GELU, Winograd where it applies), with a random whitening kernel.

The slices are interleaved round by round (round 0 untimed); medians over
--repeats rounds, in images per second, on the host's threads
($MINICNN_NUM_THREADS, default the CPUs). Freed memory is kept for reuse
(minicnn.ops.memory), as after training, so page faults do not blur the times.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from minicnn import plan  # noqa: E402
from minicnn.fileio import write_text_atomic  # noqa: E402
from minicnn.ops import memory  # noqa: E402
from minicnn.ops.blas import kernel  # noqa: E402
from minicnn.ops.threads import host_threads  # noqa: E402

DEFAULT_SLICES = [32, 128, 512, 1024, 2048, 0]


def example(name: str):
    """examples/<name>.py as a module (the examples are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def models(rng: np.random.Generator) -> dict:
    """name -> an untrained model of each example, built and ready to predict."""
    tutorial = example("cifar10").build_model(0.05, 1e-4)
    fast = example("cifar10_fast")
    recipe = fast.build_model(0.1 * rng.standard_normal((2, 2, 3, 24)).astype(np.float32))
    fast.compile_model(recipe, 100, 1024)
    return {"tutorial": tutorial, "fast": recipe}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--slice", type=int, nargs="+", default=DEFAULT_SLICES,
                   help="images per slice (0: the batch whole); default %(default)s")
    p.add_argument("--images", type=int, default=4000, help="images predicted per round")
    p.add_argument("--batch", type=int, default=2000, help="predict's batch_size")
    p.add_argument("--repeats", type=int, default=3, help="timed rounds (one more untimed)")
    p.add_argument("--models", nargs="+", choices=["tutorial", "fast"],
                   default=["tutorial", "fast"])
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    args = p.parse_args(argv)
    if min(args.slice) < 0:
        p.error(f"--slice: images per slice must be >= 0 (0: whole), got {args.slice}")
    for name in ("images", "batch", "repeats"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    memory.keep_freed_memory()
    rng = np.random.default_rng(0)
    x = rng.random((args.images, 32, 32, 3), dtype=np.float32)
    built = {name: model for name, model in models(rng).items() if name in args.models}
    default = plan.INFERENCE_SLICE
    print(f"predict of {args.images} images, batch_size {args.batch}, {host_threads()} host "
          f"threads, OpenBLAS kernel {kernel()}, freed memory kept: {memory.keeping_freed_memory()}")
    seconds: dict = {(name, s): [] for name in built for s in args.slice}
    try:
        for r in range(args.repeats + 1):
            for s in args.slice:
                plan.INFERENCE_SLICE = s or args.images + args.batch  # 0: never sliced
                for name, model in built.items():
                    start = time.perf_counter()
                    model.predict(x, batch_size=args.batch)
                    if r:
                        seconds[(name, s)].append(time.perf_counter() - start)
    finally:
        plan.INFERENCE_SLICE = default
    rows = []
    for (name, s), times in seconds.items():
        rate = args.images / statistics.median(times)
        rows.append({"model": name, "slice": s, "images_per_s": rate})
        label = "whole" if s == 0 else f"{s}"
        mark = "  (default)" if s == default else ""
        print(f"{name:9s} slice {label:>6s}: {rate:8.1f} images/s{mark}")
    if args.json is not None:
        write_text_atomic(args.json, json.dumps(
            {"rows": rows, "default_slice": default, "images": args.images,
             "batch": args.batch, "repeats": args.repeats, "threads": host_threads(),
             "openblas_kernel": kernel()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
