"""Data-parallel training of the tutorial CNN: P ranks against one process on the same cores.

    python benchmarks/bench_distributed.py                  # 2 ranks x 1 thread vs 1 process x 2
    python benchmarks/bench_distributed.py --rounds 7 --json out.json

Each round launches, in turn (the order alternates from round to round, so a
machine that speeds up or slows down affects both alike):

* one process with P x T threads, training at batch P x B: the step the ranks
  take together (the same images, the same averaged gradient);
* one process with T threads at batch B: one worker alone, the compute time
  of a rank's step without communication (the "1 worker" of a scaling model);
* ``mpiexec -n P``, each rank with T threads, training at batch B through
  ``minicnn.distributed.DistributedOptimizer``.

Each launch times --steps training steps (forward, backward, update; random
pixels, float32, SGD) after --warmup untimed ones and reports images/s over
all ranks. The ranks also report the time per step spent in the gradient
Allreduce (one 1,288,842-float buffer; it includes waiting for the slower
rank), and the time of a bare Allreduce of the same buffer right after a
barrier: the transport alone. Medians over --rounds, with min-max.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INPUT_SHAPE, NUM_CLASSES = (32, 32, 3), 10


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ranks", type=int, default=2, help="MPI processes P (default 2)")
    p.add_argument("--threads", type=int, default=1, help="threads T per rank (default 1)")
    p.add_argument("--batch-size", type=int, default=32, help="batch B per rank (default 32)")
    p.add_argument("--rounds", type=int, default=5, help="launches of each contender (default 5)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per launch (default 2)")
    p.add_argument("--steps", type=int, default=5, help="timed steps per launch (default 5)")
    p.add_argument("--json", metavar="PATH", help="also write every number to this JSON file")
    p.add_argument("--worker", choices=["single", "one", "rank"], help=argparse.SUPPRESS)
    return p.parse_args(argv)


# ----------------------------------------------------------------------------- worker
def tutorial_network(optimizer):
    """The tutorial's network (as benchmarks/bench_cifar_cnn.py and the example build it)."""
    from minicnn.layers import Conv2D, Dense, Dropout, Flatten, MaxPooling2D  # noqa: PLC0415
    from minicnn.models import Sequential  # noqa: PLC0415

    model = Sequential()
    model.add(Conv2D(256, (3, 3), activation="relu", input_shape=INPUT_SHAPE))
    model.add(MaxPooling2D((2, 2)))
    model.add(Dropout(0.3))
    model.add(Conv2D(256, (3, 3), activation="relu"))
    model.add(MaxPooling2D((2, 2)))
    model.add(Dropout(0.3))
    model.add(Conv2D(128, (3, 3), activation="relu"))
    model.add(MaxPooling2D((2, 2)))
    model.add(Dropout(0.3))
    model.add(Flatten())
    model.add(Dense(512, activation="relu"))
    model.add(Dense(256, activation="relu"))
    model.add(Dense(NUM_CLASSES, activation="softmax"))
    model.compile(optimizer=optimizer, loss="categorical_crossentropy")
    return model


def worker(args: argparse.Namespace) -> None:
    """One launch: time the steps, print one JSON line (rank 0 only)."""
    import numpy as np  # noqa: PLC0415

    import minicnn  # noqa: PLC0415
    from minicnn import distributed  # noqa: PLC0415
    from minicnn.distributed import mpi  # noqa: PLC0415
    from minicnn.optimizers import SGD  # noqa: PLC0415

    optimizer = SGD(lr=0.05, decay=1e-4)
    ranks, batch, reduce_seconds = 1, args.batch_size, [0.0]
    if args.worker == "rank":
        distributed.init()
        ranks = distributed.size()
        optimizer = distributed.DistributedOptimizer(optimizer)
        plain = mpi.allreduce_inplace

        def timed_allreduce(buffer, average=True):  # the optimizer's one call per step
            start = time.perf_counter()
            plain(buffer, average)
            reduce_seconds[0] += time.perf_counter() - start

        mpi.allreduce_inplace = timed_allreduce
    elif args.worker == "single":
        batch *= args.ranks  # the step P ranks take together
    minicnn.set_seed(0)
    model = tutorial_network(optimizer)
    rng = np.random.default_rng(1 + (distributed.rank() if ranks > 1 else 0))
    x = rng.random((batch, *INPUT_SHAPE), dtype=np.float32)
    y = np.eye(NUM_CLASSES, dtype=np.float32)[rng.integers(0, NUM_CLASSES, batch)]
    for _ in range(args.warmup):
        model.train_on_batch(x, y)
    if ranks > 1:
        distributed.comm().Barrier()
    reduce_seconds[0] = 0.0
    start = time.perf_counter()
    for _ in range(args.steps):
        model.train_on_batch(x, y)
    seconds = (time.perf_counter() - start) / args.steps
    result = {"step_s": seconds, "img_s": batch * ranks / seconds, "ranks": ranks,
              "batch_per_process": batch, "params": model.count_params()}
    if ranks > 1:
        result["allreduce_in_step_s"] = reduce_seconds[0] / args.steps
        buffer = np.zeros(model.count_params(), dtype=np.float32)
        bare = []
        for _ in range(5):  # the transport alone: the ranks start together
            distributed.comm().Barrier()
            t = time.perf_counter()
            plain(buffer, True)
            bare.append(time.perf_counter() - t)
        result["bare_allreduce_s"] = statistics.median(bare)
        # Every rank's view; the slowest decides the step.
        result["step_s"] = max(distributed.comm().allgather(seconds))
        result["img_s"] = batch * ranks / result["step_s"]
        if distributed.rank() != 0:
            return
    print(json.dumps(result), flush=True)


# ----------------------------------------------------------------------------- driver
def mpiexec() -> str:
    beside = Path(sys.executable).parent / "mpiexec"
    found = str(beside) if beside.exists() else shutil.which("mpiexec")
    if found is None:
        sys.exit('bench_distributed.py: no mpiexec; pip install "minicnn[distributed]"')
    return found


def launch(args: argparse.Namespace, kind: str) -> dict:
    threads = args.threads * (args.ranks if kind == "single" else 1)  # "one", "rank": T
    env = dict(os.environ, PYTHONPATH=str(ROOT), MINICNN_NUM_THREADS=str(threads),
               OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads))
    command = [sys.executable, __file__, "--worker", kind, "--batch-size", str(args.batch_size),
               "--ranks", str(args.ranks), "--warmup", str(args.warmup),
               "--steps", str(args.steps)]
    if kind == "rank":
        command = [mpiexec(), "-n", str(args.ranks), *command]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1800)
    if result.returncode != 0:
        sys.exit(f"bench_distributed.py: {kind} launch failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.worker:
        worker(args)
        return {}
    p, t, b = args.ranks, args.threads, args.batch_size
    print(f"# Data-parallel minicnn: the tutorial CNN, {p} ranks x {t} thread(s) at batch {b} "
          f"per rank vs 1 process x {p * t} threads at batch {p * b}, float32 SGD")
    print(f"CPU: {cpu_name()}, {os.cpu_count()} logical cores; "
          f"Python {platform.python_version()}; {args.rounds} rounds of {args.steps} steps "
          f"after {args.warmup} warm-up steps")
    runs: dict[str, list[dict]] = {"single": [], "one": [], "rank": []}
    for r in range(args.rounds):
        order = ["single", "rank", "one"]
        for kind in order[r % 3:] + order[:r % 3]:  # each contender leads in turn
            runs[kind].append(launch(args, kind))
    results = {
        "ranks": p, "threads_per_rank": t, "batch_per_rank": b, "rounds": args.rounds,
        "params": runs["rank"][0]["params"],
        "single_img_s": summary([x["img_s"] for x in runs["single"]]),
        "single_step_s": summary([x["step_s"] for x in runs["single"]]),
        "one_img_s": summary([x["img_s"] for x in runs["one"]]),
        "one_step_s": summary([x["step_s"] for x in runs["one"]]),
        "ranks_img_s": summary([x["img_s"] for x in runs["rank"]]),
        "ranks_step_s": summary([x["step_s"] for x in runs["rank"]]),
        "allreduce_in_step_s": summary([x["allreduce_in_step_s"] for x in runs["rank"]]),
        "bare_allreduce_s": summary([x["bare_allreduce_s"] for x in runs["rank"]]),
        "speedup": statistics.median(a["img_s"] / s["img_s"]
                                     for a, s in zip(runs["rank"], runs["single"])),
        "scaling": statistics.median(a["img_s"] / o["img_s"]
                                     for a, o in zip(runs["rank"], runs["one"])),
    }

    def row(name: str, key: str, scale: float = 1.0, unit: str = "") -> None:
        s = results[key]
        print(f"{name:<44} {s['median'] * scale:10.3f}{unit}   "
              f"({s['min'] * scale:.3f} - {s['max'] * scale:.3f})")

    print(f"{'':<44} {'median':>10}   (min - max)")
    row(f"1 process x {p * t} threads, images/s", "single_img_s")
    row(f"{p} ranks x {t} thread(s), images/s", "ranks_img_s")
    row(f"1 process x {t} thread(s) at batch {b}, images/s", "one_img_s")
    row("1 process, seconds per step", "single_step_s")
    row(f"{p} ranks, seconds per step", "ranks_step_s")
    row(f"1 process x {t} thread(s), seconds per step", "one_step_s")
    row("  of which gradient Allreduce (incl. waiting), ms", "allreduce_in_step_s", 1e3)
    row(f"bare Allreduce of {results['params']:,} floats, ms", "bare_allreduce_s", 1e3)
    print(f"ranks / single images/s (median of per-round ratios): {results['speedup']:.3f}")
    print(f"ranks / one worker images/s (median of per-round ratios): {results['scaling']:.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
