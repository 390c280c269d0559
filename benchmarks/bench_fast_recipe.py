"""The fast recipe's training steps, minicnn against PyTorch, interleaved on one machine.

    python benchmarks/bench_fast_recipe.py --data ../shared/datasets/cifar-10-python.tar.gz
    python benchmarks/bench_fast_recipe.py --rounds 3 --steps 3 --no-torch --profile

Each round times ``--steps`` training steps of examples/cifar10_fast.py's
network at batch 1024 (its optimizer, loss and crop/flip batches; after one
untimed warm-up step) in minicnn, then the same in PyTorch through
benchmarks/torch_airbench.py --steps-only (a separate process, so the two
never share a thread pool). Rounds alternate, so both see the same machine
load. Prints images per second per round and the medians. The steps are epoch
0's (the whitening bias trained); ``--late-steps`` times them as after epoch 3,
where the whitening convolution has nothing left to learn and both libraries
skip the backward below conv1_1.

``--profile`` then times each layer's forward and backward over
``--profile-steps`` more steps (medians) in minicnn (Model.profile_step) and
in PyTorch (torch_airbench.py --profile, module hooks), and prints them side
by side per minicnn layer with the ratio torch / minicnn (above 1: minicnn is
faster), the layers' total, the rest of the step (loss, optimizer, checks,
autograd's own work) and the whole step. minicnn runs each
BatchNormalization with the GELU after it as one fused op, which the layer
hooks do not see; the benchmark clocks that op itself and puts it on the
batch_normalization row (the activation row stays empty), and the PyTorch
peer groups its BatchNorm2d and the GELU after it the same way. Without
PyTorch the table is minicnn's alone.

minicnn's first training step tells glibc to keep freed memory for reuse
(minicnn.ops.memory), as in real training; the PyTorch peer runs with glibc's
defaults, as PyTorch does, unless ``--torch-keeps-freed-memory`` gives it the
same setting.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's minicnn

from minicnn.fileio import write_text_atomic  # noqa: E402
from minicnn.ops import blas, memory  # noqa: E402


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


def run_peer(args: argparse.Namespace, steps: int, *extra: str) -> dict | None:
    """torch_airbench.py --steps-only's JSON report, or None when PyTorch is missing."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "torch.json"
        command = [sys.executable, str(ROOT / "benchmarks" / "torch_airbench.py"),
                   "--steps-only", str(steps), "--warmup", "1", "--threads",
                   str(args.threads), "--seed", str(args.seed), "--batch-size",
                   str(args.batch_size), "--json", str(out), *extra]
        if args.late_steps:
            command.append("--late-steps")
        if args.torch_keeps_freed_memory:
            command.append("--keep-freed-memory")
        if args.data:
            command += ["--data", args.data]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            if "not installed" in (result.stdout + result.stderr):
                return None
            sys.exit(f"bench_fast_recipe: the PyTorch peer failed:\n{result.stderr[-2000:]}")
        return json.loads(out.read_text())


def torch_round(args: argparse.Namespace) -> tuple[float, bool] | None:
    """PyTorch's median images per second over ``--steps`` steps and whether its process
    kept freed memory, or None without torch."""
    report = run_peer(args, args.steps)
    if report is None:
        return None
    return float(report["median_step_images_per_second"]), bool(report["keeps_freed_memory"])


def minicnn_profile(model: Any, batches: Any, steps: int, start: int) -> dict:
    """Medians over ``steps`` profile_step calls: seconds per layer and for the whole step.

    A BatchNormalization fused with its Activation (minicnn.plan) runs outside both
    layers' hooks, so profile_step counts it with the next hooked layer (forward: the one
    after the Activation; backward: the one before the normalization). Its own clock here
    moves that time to the normalization's row."""
    fused = sorted(move[1] for move in model.relu_moves() if isinstance(move, tuple))
    unhooked = {j for i in fused for j in (i, i + 1)}
    clocked: dict = {}

    def clock(i: int, part: str, run):
        def timed(*a, **k):
            t = time.perf_counter()
            out = run(*a, **k)
            clocked[(i, part)] = time.perf_counter() - t
            return out
        return timed

    for i in fused:
        layer = model.layers[i]
        layer.run_fused_forward = clock(i, "forward", layer.run_fused_forward)
        layer.run_fused_backward = clock(i, "backward", layer.run_fused_backward)
    profiles = []
    try:
        for b in range(start, start + steps):
            clocked.clear()
            profile = model.profile_step(*batches[b % len(batches)])
            for i in fused:
                for part, after in (("forward", range(i + 2, len(model.layers))),
                                    ("backward", range(i - 1, -1, -1))):
                    seconds = clocked[(i, part)]
                    counted_in = next((j for j in after if j not in unhooked), None)
                    if counted_in is not None:
                        profile[part][counted_in] -= seconds
                    profile[part][i] += seconds
            profiles.append(profile)
    finally:
        for i in fused:
            del model.layers[i].run_fused_forward, model.layers[i].run_fused_backward
    med = statistics.median
    return {"steps": steps, "step": med([p["step"] for p in profiles]),
            "layers": [{"name": layer.name,
                        "forward": med([p["forward"][i] for p in profiles]),
                        "backward": med([p["backward"][i] for p in profiles])}
                       for i, layer in enumerate(model.layers)],
            "fused": [model.layers[i].name for i in fused]}


def ratio(theirs: float, ours: float) -> float | None:
    return theirs / ours if ours > 0 else None


def report_profile(ours: dict, theirs: dict | None) -> dict:
    """The per-layer table (ms), minicnn's alone or beside PyTorch's; returns it for --json."""
    def ms(row: dict) -> list[float]:
        return [row["forward"] * 1e3, row["backward"] * 1e3]

    def text(r: float | None) -> str:
        return f"{r:8.2f}" if r is not None else f"{'-':>8s}"

    if theirs is not None:
        base = [re.sub(r"_\d+$", "", row["name"]) for row in ours["layers"]]
        if base != [re.sub(r"_\d+$", "", row["name"]) for row in theirs["layers"]]:
            sys.exit("bench_fast_recipe: the PyTorch peer's profile groups "
                     f"{[row['name'] for row in theirs['layers']]} do not match minicnn's "
                     f"layers {[row['name'] for row in ours['layers']]}")
    print(f"\n## Time per layer (ms per training step, medians of {ours['steps']} instrumented "
          "steps; BatchNormalization + GELU run fused: on the batch_normalization row"
          + ("; PyTorch timed through module hooks, which add a little, its BatchNorm2d and "
             "the GELU after it grouped the same way)" if theirs else ")"))
    header = f"  {'layer':24s} {'minicnn fwd':>11s} {'bwd':>8s}"
    if theirs:
        header += f"   {'torch fwd':>9s} {'bwd':>8s}   {'torch/minicnn':>13s}"
    print(header)
    rows, totals = [], [0.0, 0.0]
    for i, row in enumerate(ours["layers"]):
        mine = ms(row)
        line = f"  {row['name']:24s} {mine[0]:11.2f} {mine[1]:8.2f}"
        entry = {"layer": row["name"], "minicnn_ms": mine}
        totals[0] += sum(mine)
        if theirs:
            peer = ms(theirs["layers"][i])
            totals[1] += sum(peer)
            entry.update(torch_ms=peer, ratio=ratio(sum(peer), sum(mine)))
            line += f"   {peer[0]:9.2f} {peer[1]:8.2f}   {text(entry['ratio']):>13s}"
        rows.append(entry)
        print(line)
    steps = [ours["step"] * 1e3] + ([theirs["step"] * 1e3] if theirs else [])
    rest = [step - total for step, total in zip(steps, totals)]
    for label, values in (("all layers", totals[:len(steps)]), ("rest of the step", rest),
                          ("whole step", steps)):
        line = f"  {label:24s} {values[0]:11.2f} {'':8s}"
        if theirs:
            line += f"   {values[1]:9.2f} {'':8s}   {text(ratio(values[1], values[0])):>13s}"
        if label == "rest of the step":
            line += "   (loss, optimizer, checks, autograd's own work)"
        print(line)
    table = {"layers": rows, "layers_ms": totals[:len(steps)], "rest_ms": rest, "step_ms": steps,
             "steps": ours["steps"]}
    if theirs:
        table.update(ratio=ratio(steps[1], steps[0]), torch_grouping=theirs["grouping"])
    return table


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
    p.add_argument("--late-steps", action="store_true",
                   help="time steps as after epoch 3, the whitening bias frozen (both libraries "
                        "then skip the backward below conv1_1); default: epoch 0's steps")
    p.add_argument("--profile", action="store_true",
                   help="time per layer, minicnn beside PyTorch, over --profile-steps steps")
    p.add_argument("--profile-steps", type=int, default=3, metavar="K",
                   help="instrumented steps for --profile (default 3; medians are reported)")
    p.add_argument("--torch-keeps-freed-memory", action="store_true",
                   help="the PyTorch peer, too, tells glibc to keep freed memory for reuse, "
                        "as minicnn's training does by itself (minicnn.ops.memory)")
    p.add_argument("--json", metavar="PATH", help="also write the numbers here")
    args = p.parse_args(argv)
    for name in ("rounds", "steps", "batch_size", "threads", "profile_steps"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be a positive integer, "
                    f"got {getattr(args, name)}")

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
    if args.late_steps:  # as after epoch 3: nothing below conv1_1 trains any more
        model.get_layer("whiten").set_trainable("bias", False)
    minicnn_round(model, batches, 1, 0)  # warm-up: buffers, thread pools
    print(f"minicnn keeps freed memory (minicnn.ops.memory; $MINICNN_KEEP_FREED_MEMORY=0 "
          f"turns it off): {memory.keeping_freed_memory()}; the PyTorch peer: "
          f"{args.torch_keeps_freed_memory} (--torch-keeps-freed-memory); NumPy's OpenBLAS "
          f"runs its {blas.kernel() or 'unknown (no OpenBLAS found)'} kernels", flush=True)
    ours, theirs, torch_kept = [], [], []
    for r in range(args.rounds):
        ours.append(minicnn_round(model, batches, args.steps, 1 + r * args.steps))
        line = f"round {r + 1}/{args.rounds}: minicnn {ours[-1]:.1f} img/s"
        if not args.no_torch:
            peer = torch_round(args)
            if peer is None:
                args.no_torch = True
                line += " | PyTorch not installed: minicnn only"
            else:
                theirs.append(peer[0])
                torch_kept.append(peer[1])
                line += f" | PyTorch {peer[0]:.1f} img/s"
        print(line, flush=True)
    result = {"batch_size": args.batch_size, "steps_per_round": args.steps,
              "late_steps": args.late_steps,
              "minicnn_keeps_freed_memory": memory.keeping_freed_memory(),
              "openblas_kernel": blas.kernel(),
              "torch_keeps_freed_memory": all(torch_kept) if torch_kept else None,
              "minicnn_images_per_second": ours, "minicnn_median": statistics.median(ours)}
    summary = f"median: minicnn {result['minicnn_median']:.1f} img/s"
    if theirs:
        result.update(torch_images_per_second=theirs, torch_median=statistics.median(theirs),
                      ratio=statistics.median(ours) / statistics.median(theirs))
        summary += (f", PyTorch {result['torch_median']:.1f} img/s: minicnn at "
                    f"{result['ratio']:.2f}x PyTorch's speed")
    print(summary)
    if args.profile:
        ours = minicnn_profile(model, batches, args.profile_steps, 1 + args.rounds * args.steps)
        result["profile"] = {row["name"]: {"forward": row["forward"], "backward": row["backward"]}
                             for row in ours["layers"]}
        result["profile_step"] = ours["step"]
        theirs = None
        if not args.no_torch:
            peer = run_peer(args, 1, "--profile", "--profile-steps", str(args.profile_steps))
            theirs = None if peer is None else peer["profile"]
            if theirs is not None:
                result["torch_profile"] = theirs
        result["side_by_side" if theirs else "profile_table"] = report_profile(ours, theirs)
    if args.json:
        write_text_atomic(args.json, json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
