"""The fast recipe's training steps, minicnn against PyTorch, interleaved on one machine.

    python benchmarks/bench_fast_recipe.py --data ../shared/datasets/cifar-10-python.tar.gz
    python benchmarks/bench_fast_recipe.py --rounds 3 --steps 3 --no-torch --profile

Each round times ``--steps`` training steps of examples/cifar10_fast.py's
network at batch 1024 (its optimizer, loss and crop/flip batches; after one
untimed warm-up step) in minicnn, then the same in PyTorch through
benchmarks/torch_airbench.py --steps-only (a separate process, so the two
never share a thread pool). Rounds alternate, so both see the same machine
load. Prints images per second per round and the medians; ``--profile`` adds
minicnn's time per layer for one step (its hooks switch the BatchNormalization
+ GELU fusion off, so that step is slower than the timed ones).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def load_example():
    spec = importlib.util.spec_from_file_location("cifar10_fast", ROOT / "examples" / "cifar10_fast.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def minicnn_setup(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int):
    """The example's model, compiled, and its training batches."""
    fast = load_example()
    fast.minicnn.set_seed(seed)
    model = fast.build_model(fast.initializers.patch_whitening(x[:5000], kernel_size=2))
    fast.compile_model(model, total_steps=1000, batch_size=batch_size)
    batches = fast.CropFlipSequence(x, fast.to_categorical(y, 10), batch_size, seed=seed)
    return model, batches


def minicnn_round(model, batches, steps: int, start: int) -> float:
    """Images per second over ``steps`` train_on_batch calls."""
    total, images = 0.0, 0
    for i in range(start, start + steps):
        xb, yb = batches[i % len(batches)]
        t = time.perf_counter()
        model.train_on_batch(xb, yb)
        total += time.perf_counter() - t
        images += len(xb)
    return images / total


def torch_round(args: argparse.Namespace) -> float | None:
    """PyTorch's median images per second over ``--steps`` steps, or None without torch."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "torch.json"
        command = [sys.executable, str(ROOT / "benchmarks" / "torch_airbench.py"),
                   "--steps-only", str(args.steps), "--warmup", "1", "--threads",
                   str(args.threads), "--seed", str(args.seed), "--json", str(out)]
        if args.data:
            command += ["--data", args.data]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            if "not installed" in (result.stdout + result.stderr):
                return None
            sys.exit(f"bench_fast_recipe: the PyTorch peer failed:\n{result.stderr[-2000:]}")
        report = json.loads(out.read_text())
    return float(report["median_step_images_per_second"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", metavar="PATH", help="a CIFAR-10 archive (default: random pixels)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=3, help="timed steps per round")
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--threads", type=int, default=2, help="PyTorch's threads (minicnn: "
                   "$MINICNN_NUM_THREADS and BLAS's own, default the CPUs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--profile", action="store_true", help="minicnn's time per layer for one step")
    p.add_argument("--json", metavar="PATH", help="also write the numbers here")
    args = p.parse_args(argv)

    if args.data:
        from minicnn.datasets import cifar10
        (x, y), _ = cifar10.load_data(args.data, verbose=False)
        fast = load_example()
        x = fast.normalize(x)
    else:
        rng = np.random.default_rng(args.seed)
        x = rng.standard_normal((max(5000, 2 * args.batch_size), 32, 32, 3)).astype(np.float32)
        y = rng.integers(0, 10, (len(x), 1))
    model, batches = minicnn_setup(x, y, args.batch_size, args.seed)
    minicnn_round(model, batches, 1, 0)  # warm-up: buffers, thread pools
    ours, theirs = [], []
    for r in range(args.rounds):
        ours.append(minicnn_round(model, batches, args.steps, 1 + r * args.steps))
        line = f"round {r + 1}/{args.rounds}: minicnn {ours[-1]:.1f} img/s"
        if not args.no_torch:
            peer = torch_round(args)
            if peer is None:
                args.no_torch = True
                line += " | PyTorch not installed: minicnn only"
            else:
                theirs.append(peer)
                line += f" | PyTorch {peer:.1f} img/s"
        print(line, flush=True)
    result = {"batch_size": args.batch_size, "steps_per_round": args.steps,
              "minicnn_images_per_second": ours, "minicnn_median": statistics.median(ours)}
    summary = f"median: minicnn {result['minicnn_median']:.1f} img/s"
    if theirs:
        result.update(torch_images_per_second=theirs, torch_median=statistics.median(theirs),
                      ratio=statistics.median(ours) / statistics.median(theirs))
        summary += (f", PyTorch {result['torch_median']:.1f} img/s: minicnn at "
                    f"{result['ratio']:.2f}x PyTorch's speed")
    print(summary)
    if args.profile:
        xb, yb = batches[0]
        profile = model.profile_step(xb, yb)
        result["profile"] = {layer.name: {"forward": f, "backward": b} for layer, f, b in
                             zip(model.layers, profile["forward"], profile["backward"])}
        for layer, f, b in zip(model.layers, profile["forward"], profile["backward"]):
            print(f"  {layer.name:24s} forward {f:6.3f} s  backward {b:6.3f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
