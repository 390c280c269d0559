"""How the convolutions should lay out im2col at batch 1024: measured on the fast recipe.

    python benchmarks/bench_conv_blocking.py --data ../shared/datasets/cifar-10-python.tar.gz
    python benchmarks/bench_conv_blocking.py --rounds 5 --blocks 8 16 32 64 1024

On examples/cifar10_fast.py's network at ``--batch`` images:

* training, two ways, in interleaved rounds of ``--steps`` train_on_batch steps:
  ``keep`` (every convolution keeps its whole col for backward) against
  ``scratch`` (minicnn's default: a col over ``minicnn.ops.conv.KEEP_COL_BYTES``
  is made in one per-thread scratch memory shared by all layers, the padded
  input kept, and made again by backward). Prints images per second and the
  bytes the convolutions hold between forward and backward;
* inference (``model.predict``), with ``IMAGES_PER_BLOCK`` images per im2col
  block, for each of ``--blocks``: images per second.

Without ``--data`` the images are random. ``--json`` also writes the numbers.
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
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from bench_fast_recipe import load_example  # noqa: E402  (this folder is on sys.path)
from minicnn.fileio import write_text_atomic  # noqa: E402
from minicnn.layers import Conv2D  # noqa: E402
from minicnn.ops import conv as conv_ops  # noqa: E402


def held_bytes(model) -> int:
    """What the convolutions keep from forward to backward, plus the scratch col."""
    total = 0
    for layer in model.layers:
        cache = getattr(layer, "_cache", None)
        if isinstance(layer, Conv2D) and cache is not None:
            total += (cache.col if cache.col is not None else cache.x_padded).nbytes
    flat = getattr(conv_ops._scratch, "flat", None)
    return total + (0 if flat is None else flat.nbytes)


def train_rate(model, batches, steps: int, start: int) -> float:
    seconds = 0.0
    for i in range(start, start + steps):
        xb, yb = batches[i % len(batches)]
        t = time.perf_counter()
        model.train_on_batch(xb, yb)
        seconds += time.perf_counter() - t
    return steps * len(xb) / seconds


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", metavar="PATH", help="a CIFAR-10 archive (default: random pixels)")
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=2, help="training steps per round and way")
    p.add_argument("--blocks", type=int, nargs="+", default=[8, 16, 32, 64, 1024],
                   help="images per im2col block at inference")
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args(argv)
    if min(args.batch, args.rounds, args.steps, *args.blocks) < 1:
        p.error("--batch, --rounds, --steps and --blocks must be at least 1")
    fast = load_example()
    images = 2 * args.batch
    if args.data:
        from minicnn.datasets import cifar10
        (x, y), _ = cifar10.load_data(args.data, verbose=False)
        x, y = fast.normalize(x[:max(images, 5000)]), y[:max(images, 5000)]
    else:
        rng = np.random.default_rng(0)
        x = rng.standard_normal((max(images, 5000), 32, 32, 3)).astype(np.float32)
        y = rng.integers(0, 10, (len(x), 1))
    fast.minicnn.set_seed(0)
    model = fast.build_model(fast.initializers.patch_whitening(x[:5000], kernel_size=2))
    fast.compile_model(model, total_steps=1000, batch_size=args.batch)
    batches = fast.CropFlipSequence(x, fast.to_categorical(y, 10), args.batch, seed=0)

    saved = conv_ops.KEEP_COL_BYTES, conv_ops.IMAGES_PER_BLOCK
    ways = {"keep": 1 << 62, "scratch": saved[0]}
    rates: dict[str, list[float]] = {way: [] for way in ways}
    held: dict[str, int] = {}
    step = 0
    try:
        for r in range(args.rounds):
            for way, keep in ways.items():
                conv_ops.KEEP_COL_BYTES = keep
                conv_ops.release_scratch()
                train_rate(model, batches, 1, step)  # untimed: this way's buffers
                rates[way].append(train_rate(model, batches, args.steps, step + 1))
                held[way] = held_bytes(model)
                step += 1 + args.steps
                print(f"round {r + 1}: training, {way}: {rates[way][-1]:.1f} img/s, "
                      f"convolutions hold {held[way] / 1e6:.0f} MB", flush=True)
        conv_ops.KEEP_COL_BYTES = saved[0]
        inference: dict[int, list[float]] = {b: [] for b in args.blocks}
        test = x[:args.batch]
        for r in range(args.rounds):
            for block in args.blocks:
                conv_ops.IMAGES_PER_BLOCK = block
                t = time.perf_counter()
                model.predict(test, batch_size=args.batch)
                inference[block].append(len(test) / (time.perf_counter() - t))
        for block in args.blocks:
            print(f"inference, {block} images per block: "
                  f"{statistics.median(inference[block]):.1f} img/s", flush=True)
    finally:
        conv_ops.KEEP_COL_BYTES, conv_ops.IMAGES_PER_BLOCK = saved
    result = {"batch": args.batch, "rounds": args.rounds, "steps": args.steps,
              "training_images_per_second": {w: statistics.median(v) for w, v in rates.items()},
              "training_held_bytes": held,
              "inference_images_per_second": {str(b): statistics.median(v)
                                              for b, v in inference.items()}}
    print("training: " + ", ".join(f"{w} {v:.1f} img/s ({held[w] / 1e6:.0f} MB held)"
                                   for w, v in result["training_images_per_second"].items()))
    if args.json:
        write_text_atomic(args.json, json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
