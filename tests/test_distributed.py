"""minicnn.distributed: data-parallel training over MPI.

The collectives run for real: one ``mpiexec -n 2`` launch of tests/mpi_worker.py
(module fixture) trains on two ranks, and the tests below compare what the
ranks wrote with each other and with one process trained here. They skip,
saying why, where mpi4py or mpiexec is missing; ``pip install
"minicnn[distributed]"`` brings both.
"""
from __future__ import annotations

import builtins
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import assert_close
import minicnn
from minicnn import distributed, optimizers
from minicnn.optimizers import SGD

ROOT = Path(__file__).resolve().parents[1]


def mpiexec() -> str | None:
    """The mpiexec beside this Python (the mpich wheel puts it there), else on PATH."""
    beside = Path(sys.executable).parent / "mpiexec"
    return str(beside) if beside.exists() else shutil.which("mpiexec")


def mpi_missing() -> str | None:
    """Why the MPI tests cannot run here, or None when they can."""
    try:
        import mpi4py  # noqa: F401, PLC0415
    except ImportError:
        return 'mpi4py is not installed (pip install "minicnn[distributed]")'
    if mpiexec() is None:
        return "no mpiexec beside the Python or on PATH (the mpich wheel provides one)"
    return None


def run_mpi(*args: str, ranks: int = 2, timeout: int = 300) -> subprocess.CompletedProcess:
    """``mpiexec -n ranks python args...`` with this checkout first on the path; one
    thread per rank, as the ranks share this machine's cores."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), MINICNN_NUM_THREADS="1",
               OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    return subprocess.run([mpiexec(), "-n", str(ranks), sys.executable, *args],
                          capture_output=True, text=True, env=env, timeout=timeout)


needs_mpi = pytest.mark.skipif(mpi_missing() is not None, reason=str(mpi_missing()))


def data() -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """96 random 8x8x3 images of 4 classes, and the proof model's initial weights."""
    sys.path.insert(0, str(ROOT / "tests"))
    import mpi_worker  # noqa: PLC0415

    rng = np.random.default_rng(3)
    x = rng.random((96, 8, 8, 3), dtype=np.float32)
    y = np.eye(4, dtype=np.float32)[rng.integers(0, 4, 96)]
    minicnn.set_seed(0)
    initial = mpi_worker.small_model(SGD(lr=0.1, momentum=0.9, decay=0.01)).get_weights()
    return x, y, initial


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    """What each of the two ranks of one mpiexec launch of mpi_worker.py ended with."""
    reason = mpi_missing()
    if reason is not None:
        pytest.skip(reason)
    folder = tmp_path_factory.mktemp("mpi")
    x, y, initial = data()
    np.savez(folder / "data.npz", x=x, y=y, **{f"w{i}": w for i, w in enumerate(initial)})
    result = run_mpi(str(ROOT / "tests" / "mpi_worker.py"), str(folder / "data.npz"), str(folder))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return [dict(np.load(folder / f"rank{r}.npz")) for r in range(2)]


def group(result: dict, prefix: str) -> list[np.ndarray]:
    keys = sorted((k for k in result if k.startswith(prefix + "/")),
                  key=lambda k: int(k.rsplit("/", 1)[1]))
    return [result[k] for k in keys]


@needs_mpi
def test_two_ranks_at_batch_16_equal_one_process_at_batch_32(ranks):
    assert int(ranks[0]["size"]) == 2
    x, y, initial = data()
    import mpi_worker  # noqa: PLC0415  (data() put tests/ on the path)

    # One process, batch 32 of consecutive samples = the union of the ranks' batches of
    # 16 from x[0::2] and x[1::2]; the same initial weights, no shuffling.
    reference = mpi_worker.small_model(SGD(lr=0.1, momentum=0.9, decay=0.01))
    reference.set_weights(initial)
    history = reference.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0)
    first, second = group(ranks[0], "equivalence"), group(ranks[1], "equivalence")
    for a, b in zip(first, second):  # the ranks agree exactly
        np.testing.assert_array_equal(a, b)
    moved = [float(np.abs(w - w0).max()) for w, w0 in zip(first, initial)]
    assert min(moved) > 1e-3  # it trained: a test of untouched weights would prove nothing
    for a, w in zip(first, reference.get_weights()):  # and equal one big batch
        assert_close(a, w)
    for r in ranks:  # every rank logged the averaged loss: the whole data's mean
        # (float32 losses, summed in another order: float32's tolerance)
        assert_close(r["equivalence_loss"], np.array(history.history["loss"]), rtol=1e-5)
        assert_close(r["equivalence_acc"], np.array(history.history["acc"]))
        assert int(r["equivalence_iterations"]) == reference.optimizer.iterations == 6
        assert str(r["equivalence_class"]) == "SGD"


@needs_mpi
def test_shuffled_ranks_stay_identical_and_a_rerun_repeats(ranks):
    for run in (1, 2):
        for a, b in zip(group(ranks[0], f"shuffled/{run}"), group(ranks[1], f"shuffled/{run}")):
            np.testing.assert_array_equal(a, b)
    for a, b in zip(group(ranks[0], "shuffled/1"), group(ranks[0], "shuffled/2")):
        np.testing.assert_array_equal(a, b)  # same seeds, same order of the same math
    # Each rank has its own stream (its own shuffles), the same in both runs.
    assert not np.array_equal(ranks[0]["stream/1"], ranks[1]["stream/1"])
    for r in ranks:
        np.testing.assert_array_equal(r["stream/1"], r["stream/2"])


@needs_mpi
def test_a_resumed_run_goes_on_as_the_uninterrupted_one_on_every_rank(ranks):
    """Rank 0 writes the checkpoint, rank 1's shuffling and dropout streams in it; a
    new fit resumes on rank 0 alone, and fit gives rank 1 its epoch, history, streams,
    callback states and learning rate: 2 + 2 epochs end where 4 epochs in one fit do."""
    for r in ranks:
        whole = group(r, "resume-whole")
        for a, w in zip(group(r, "resume-kept"), whole):
            assert_close(a, w)  # same math in the same order: only rounding could differ
        assert json.loads(str(r["resume-kept-warnings"])) == []
        # ReduceLROnPlateau lowered the rate in epoch 2; EarlyStopping counted 3 epochs.
        assert float(r["resume-kept-lr"]) == float(r["resume-whole-lr"]) == 0.05 / 2 ** 3
        assert int(r["resume-kept-wait"]) == int(r["resume-whole-wait"]) == 3
        assert_close(r["resume-kept-loss"], r["resume-whole-loss"])
        assert len(r["resume-whole-loss"]) == 4
        # Without rank 1's streams it shuffles and drops out as in epochs 1-2 again: the
        # check above fails then (it is a check that can fail).
        assert max(float(np.abs(a - w).max())
                   for a, w in zip(group(r, "resume-taken-out"), whole)) > 1e-3
    # Rank 1's callable checkpoint is called after each epoch, never before training.
    assert ranks[1]["resume-whole-checkpoints"].tolist() == [1, 2, 3, 4]
    assert ranks[1]["resume-kept-checkpoints"].tolist() == [3, 4]
    # A checkpoint with another number of ranks' streams: rank 0 says so, and goes on.
    said = json.loads(str(ranks[0]["resume-three-warnings"]))
    assert any("random streams of 3 ranks, this job has 2" in w for w in said), said
    assert json.loads(str(ranks[1]["resume-three-warnings"])) == []


@needs_mpi
def test_backup_and_restore_on_every_rank_is_written_by_one_and_resumed_by_all(ranks):
    """The same BackupAndRestore folder on both ranks (spelled two ways), the job
    stopped before epoch 3 and run again: rank 0 alone writes the file (before
    training, after epochs 1, 2, then 3, 4) and resumes from it, both ranks end as
    the uninterrupted run, and the folder is gone at the end."""
    assert ranks[0]["backup-writes"].tolist() == [0, 1, 2, 3, 4]
    assert ranks[1]["backup-writes"].tolist() == []
    for r in ranks:
        assert bool(r["backup-kept"]) and not bool(r["backup-left"])
        assert json.loads(str(r["backup-warnings"])) == []
        for a, w in zip(group(r, "backup"), group(r, "resume-whole")):
            assert_close(a, w)
        assert_close(r["backup-loss"], r["resume-whole-loss"])


@needs_mpi
def test_broadcast_weights_carries_weights_and_optimizer_state(ranks):
    a, b = ranks
    for key in [k for k in a if k.startswith(("broadcast/", "velocity/"))]:
        np.testing.assert_array_equal(a[key], b[key])
    assert any(k.startswith("velocity/") for k in a)
    assert int(a["broadcast_iterations"]) == int(b["broadcast_iterations"]) == 2  # the root's


@needs_mpi
def test_allreduce_and_epoch_logs_average_over_the_ranks(ranks):
    for r in ranks:
        assert float(r["allreduce_number"]) == 1.5  # (1 + 2) / 2
        np.testing.assert_array_equal(r["allreduce_sum"], np.arange(3.0) * 3)
        np.testing.assert_array_equal(r["logs"], [1.0, 1.0])


def test_init_without_mpi4py_says_what_to_install(monkeypatch):
    real_import = builtins.__import__

    def no_mpi4py(name, *args, **kwargs):
        if name == "mpi4py" or name.startswith("mpi4py."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_mpi4py)
    monkeypatch.delitem(sys.modules, "mpi4py", raising=False)
    monkeypatch.delitem(sys.modules, "mpi4py.MPI", raising=False)
    with pytest.raises(ImportError, match=r'pip install "minicnn\[distributed\]"'):
        distributed.init()


def test_everything_before_init_says_to_call_init():
    if distributed.is_initialized():
        pytest.skip("MPI was initialised in this process by another test")
    for call in (distributed.rank, distributed.size, distributed.local_rank, distributed.comm,
                 lambda: distributed.DistributedOptimizer(SGD()),
                 lambda: distributed.allreduce(1.0)):
        with pytest.raises(RuntimeError, match=r"call minicnn\.distributed\.init\(\) first"):
            call()


def test_distributed_optimizer_wants_a_minicnn_optimizer():
    with pytest.raises(TypeError, match="DistributedOptimizer: expected a minicnn optimizer"):
        distributed.DistributedOptimizer("sgd")
    assert not distributed.is_distributed(SGD())
    assert optimizers.serialize(SGD())["class_name"] == "SGD"


@needs_mpi
def test_strict_backend_arrays_are_averaged_too(ranks):
    first, second = group(ranks[0], "strict"), group(ranks[1], "strict")
    assert first
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    for r in ranks:
        np.testing.assert_array_equal(r["strict_array"], [0.5, 0.5])


@needs_mpi
def test_distributed_optimizer_is_a_copy_of_the_same_class(ranks):
    for r in ranks:
        assert r["copy_same_config"] and r["copy_same_state"] and r["copy_is_sgd"]
        assert not r["copy_shares_state"]
        assert "already averages over the ranks" in str(r["wrapped_twice"])


@needs_mpi
def test_the_distributed_benchmark_runs_and_reports(tmp_path):
    out = tmp_path / "bench.json"
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_distributed.py"),
                             "--rounds", "1", "--warmup", "1", "--steps", "1", "--batch-size", "2",
                             "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["params"] == 1_288_842 and report["ranks"] == 2
    for key in ("single_img_s", "one_img_s", "ranks_img_s", "allreduce_in_step_s",
                "bare_allreduce_s"):
        assert report[key]["median"] > 0, key
    assert "of which gradient Allreduce" in result.stdout


@needs_mpi
def test_a_rank_that_diverges_alone_stops_every_rank(tmp_path):
    """Only rank 1's third batch overflows. The check reads the gradients averaged
    over the ranks, so both raise at that step (a rank raising alone would leave the
    other in the next Allreduce for ever: the timeout turns such a hang into a
    failure); TerminateOnNaN sees the averaged loss, so both stop at the same step."""
    try:
        result = run_mpi(str(ROOT / "tests" / "mpi_diverge_worker.py"), str(tmp_path),
                         timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("the MPI job hung: one rank stopped while the other waited")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for rank in ranks:
        assert "training diverged in epoch 1, step 3/6" in rank["checked"], rank["checked"]
        assert rank["checked_iterations"] == 2  # the weights untouched by the bad step
        assert rank["terminated_epochs"] == 1
        assert rank["terminated_iterations"] == 3  # the bad step's update ran, then the stop
