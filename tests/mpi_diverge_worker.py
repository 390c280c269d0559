"""Run by tests/test_distributed.py under ``mpiexec -n 2``: only rank 1's third
batch overflows (finite inputs near float32's largest value, so fit's input
check passes and the forward pass makes inf, then NaN). Each rank writes what
happened to OUT/rank<r>.json; the job must end on both ranks.

    mpiexec -n 2 python tests/mpi_diverge_worker.py OUT
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

import minicnn
from minicnn import distributed
from minicnn.callbacks import TerminateOnNaN
from minicnn.optimizers import SGD
from minicnn.training.interrupts import TrainingDiverged

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mpi_worker import small_model  # noqa: E402


def data(rank: int) -> tuple[np.ndarray, np.ndarray]:
    """48 images per rank, 6 batches of 8; rank 1's batch 3 (samples 16-23) overflows."""
    rng = np.random.default_rng(7 + rank)
    x = rng.random((48, 8, 8, 3), dtype=np.float32)
    y = np.eye(4, dtype=np.float32)[rng.integers(0, 4, 48)]
    if rank == 1:
        x[16:24] = np.float32(3e38)
    return x, y


def main(out: str) -> None:
    distributed.init()
    rank = distributed.rank()
    x, y = data(rank)
    results: dict = {}

    # 1. The divergence check on every step: every rank must raise at step 3.
    minicnn.set_seed(0)
    model = small_model(distributed.DistributedOptimizer(SGD(lr=0.01)))
    try:
        model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
        results["checked"] = "no error"
    except TrainingDiverged as exc:
        results["checked"] = str(exc)
    results["checked_iterations"] = int(model.optimizer.iterations)

    # 2. No divergence check until the epoch's last step; TerminateOnNaN watches the
    # batch loss: every rank must stop after the same step.
    minicnn.set_seed(0)
    model = small_model(distributed.DistributedOptimizer(SGD(lr=0.01)))
    model.check_finite_every = 1000
    history = model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0,
                        callbacks=[TerminateOnNaN()])
    results["terminated_iterations"] = int(model.optimizer.iterations)
    results["terminated_epochs"] = len(history.history["loss"])
    Path(out, f"rank{rank}.json").write_text(json.dumps(results))


if __name__ == "__main__":
    main(*sys.argv[1:])
