"""How the convolutions should lay out im2col at batch 1024: measured on the fast recipe.

    python benchmarks/bench_conv_blocking.py --data ../shared/datasets/cifar-10-python.tar.gz
    python benchmarks/bench_conv_blocking.py --rounds 5 --block-rows 512 2048 8192

On examples/cifar10_fast.py's network at ``--batch`` images:

* training, in interleaved rounds of ``--steps`` train_on_batch steps:
  ``keep`` (every convolution makes its whole col, one product with BLAS's
  own threads, and keeps col for backward) against ``blocked R`` for each R
  of ``--block-rows`` (minicnn's way above ``minicnn.ops.conv.KEEP_COL_BYTES``:
  the batch split over the host's threads, R output pixels' worth of images
  per im2col block, BLAS single-threaded, the padded input kept and col made
  again by backward), ``blocked default`` (whole images making a col of
  about ``COL_BLOCK_BYTES``, at most ``BLOCK_ROWS`` output pixels; the wide
  3x3 layers by Winograd's F(4x4, 3x3) where ``minicnn.ops.winograd.applies``,
  as in every blocked way) and ``blocked default, im2col only`` (the same
  without Winograd). Prints images per second and the bytes the convolutions
  hold between forward and backward;
* inference (``model.predict``), blocked with each R of ``--block-rows``:
  images per second (R for every convolution);
* with ``--winograd-ab K``, then K pairs of single training steps, the
  default way with and without Winograd in turn (which goes first alternates):
  the medians and how many pairs each way won. Finer-grained than the rounds
  above, for an effect smaller than the machine's drift between rounds.

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
from minicnn.ops import winograd  # noqa: E402


def held_bytes(model) -> int:
    """What the convolutions keep from forward to backward."""
    total = 0
    for layer in model.layers:
        cache = getattr(layer, "_cache", None)
        if isinstance(layer, Conv2D) and cache is not None:
            total += (cache.col if cache.col is not None else cache.x_padded).nbytes
    return total


def train_rate(model, batches, steps: int, start: int) -> float:
    seconds = 0.0
    for i in range(start, start + steps):
        xb, yb = batches[i % len(batches)]
        t = time.perf_counter()
        model.train_on_batch(xb, yb)
        seconds += time.perf_counter() - t
    return steps * len(xb) / seconds


def winograd_pairs(model, batches, pairs: int, step: int, min_channels: int) -> dict:
    """Images/s of single training steps with Winograd (``min_channels``) and without,
    in ``pairs`` pairs; which goes first alternates. Their medians and wins."""
    rates: dict[str, list[float]] = {"winograd": [], "im2col only": []}
    for k in range(pairs):
        order = ["winograd", "im2col only"][::1 if k % 2 == 0 else -1]
        for way in order:
            winograd.MIN_CHANNELS = min_channels if way == "winograd" else 1 << 62
            rates[way].append(train_rate(model, batches, 1, step))
            step += 1
        print(f"pair {k + 1}: winograd {rates['winograd'][-1]:.1f} img/s, im2col only "
              f"{rates['im2col only'][-1]:.1f} img/s", flush=True)
    winograd.MIN_CHANNELS = min_channels
    if not pairs:
        return {}
    wins = sum(a > b for a, b in zip(rates["winograd"], rates["im2col only"]))
    report = {"images_per_second": rates,
              "median": {way: statistics.median(v) for way, v in rates.items()},
              "winograd_wins": wins, "pairs": pairs}
    print(f"winograd: {report['median']['winograd']:.1f} img/s, im2col only: "
          f"{report['median']['im2col only']:.1f} img/s (medians of {pairs} pairs; "
          f"Winograd faster in {wins})", flush=True)
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", metavar="PATH", help="a CIFAR-10 archive (default: random pixels)")
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=2, help="training steps per round and way")
    p.add_argument("--block-rows", type=int, nargs="+", default=[1024, 2048, 4096],
                   help="output pixels per im2col block to try (BLOCK_ROWS, whatever the "
                        "col's bytes)")
    p.add_argument("--winograd-ab", type=int, default=0, metavar="K",
                   help="then K pairs of single steps, Winograd on and off (default 0)")
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args(argv)
    if min(args.batch, args.rounds, args.steps, *args.block_rows) < 1 or args.winograd_ab < 0:
        p.error("--batch, --rounds, --steps and --block-rows must be at least 1, "
                "--winograd-ab at least 0")
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

    saved = (conv_ops.KEEP_COL_BYTES, conv_ops.BLOCK_ROWS, conv_ops.COL_BLOCK_BYTES,
             winograd.MIN_CHANNELS)
    ways = {"keep": (1 << 62, *saved[1:]),
            "blocked default": saved,
            "blocked default, im2col only": (*saved[:3], 1 << 62),
            **{f"blocked {rows}": (saved[0], rows, 1 << 62, saved[3]) for rows in args.block_rows}}
    rates: dict[str, list[float]] = {way: [] for way in ways}
    held: dict[str, int] = {}
    step = 0
    try:
        for r in range(args.rounds):
            for way, setting in ways.items():
                (conv_ops.KEEP_COL_BYTES, conv_ops.BLOCK_ROWS, conv_ops.COL_BLOCK_BYTES,
                 winograd.MIN_CHANNELS) = setting
                train_rate(model, batches, 1, step)  # untimed: this way's buffers
                rates[way].append(train_rate(model, batches, args.steps, step + 1))
                held[way] = held_bytes(model)
                step += 1 + args.steps
                print(f"round {r + 1}: training, {way}: {rates[way][-1]:.1f} img/s, "
                      f"convolutions hold {held[way] / 1e6:.0f} MB", flush=True)
        conv_ops.KEEP_COL_BYTES, winograd.MIN_CHANNELS = saved[0], saved[3]
        inference: dict[int, list[float]] = {rows: [] for rows in args.block_rows}
        test = x[:args.batch]
        for r in range(args.rounds):
            for rows in args.block_rows:
                conv_ops.BLOCK_ROWS, conv_ops.COL_BLOCK_BYTES = rows, 1 << 62
                t = time.perf_counter()
                model.predict(test, batch_size=args.batch)
                inference[rows].append(len(test) / (time.perf_counter() - t))
        for rows in args.block_rows:
            print(f"inference, blocked {rows}: "
                  f"{statistics.median(inference[rows]):.1f} img/s", flush=True)
        conv_ops.BLOCK_ROWS, conv_ops.COL_BLOCK_BYTES = saved[1:3]
        pairs = winograd_pairs(model, batches, args.winograd_ab, step, saved[3])
    finally:
        (conv_ops.KEEP_COL_BYTES, conv_ops.BLOCK_ROWS, conv_ops.COL_BLOCK_BYTES,
         winograd.MIN_CHANNELS) = saved
    result = {"batch": args.batch, "rounds": args.rounds, "steps": args.steps,
              **({"winograd_ab": pairs} if args.winograd_ab else {}),
              "training_images_per_second": {w: statistics.median(v) for w, v in rates.items()},
              "training_held_bytes": held,
              "inference_images_per_second": {str(rows): statistics.median(v)
                                              for rows, v in inference.items()}}
    print("training: " + ", ".join(f"{w} {v:.1f} img/s ({held[w] / 1e6:.0f} MB held)"
                                   for w, v in result["training_images_per_second"].items()))
    if args.json:
        write_text_atomic(args.json, json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
