"""The real example, end to end, as a user runs it (in a subprocess)."""
from __future__ import annotations

import importlib.util
import json
import math
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import assert_same_accuracy

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets" / "cifar-10-python.tar.gz"
FILES = ["samples.png", "loss.png", "accuracy.png", "confusion_matrix.png", "history.csv",
         "metrics.json", "weights.npz"]


def write_fake_cifar(root: Path, per_batch: int = 8) -> Path:
    """A tiny dataset in the official python layout (random pixels, cycling labels)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                 b"labels": [k % 10 for k in range(per_batch)], b"batch_label": name.encode(),
                 b"filenames": [f"{k}.png".encode() for k in range(per_batch)]}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
    return folder


def run_example(out: Path, data: Path, *extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, MPLBACKEND="Agg", PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, str(ROOT / "examples" / "cifar10.py"), "--data", str(data),
                           "--out", str(out), "--seed", "0", "--verbose", "2", *extra],
                          capture_output=True, text=True, env=env, timeout=600)


def load_example():
    """examples/cifar10.py as a module, without running main()."""
    spec = importlib.util.spec_from_file_location("cifar10_example", ROOT / "examples" / "cifar10.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    return example


def example_test_outputs(out: Path, data: Path, test_limit: int | None) -> np.ndarray:
    """The saved network's outputs on the run's test images, computed here."""
    from minicnn.datasets import cifar10

    example = load_example()
    (_, _), (x_test, _) = cifar10.load_data(str(data))
    model = example.build_model(0.05, 1e-4)
    model.load_weights(out / "weights.npz")
    return model.predict(example.scale_pixels(x_test[:test_limit], "float32"))


def check_outputs(out: Path, epochs: int, result: subprocess.CompletedProcess, data: Path,
                  test_limit: int | None = None) -> None:
    assert result.returncode == 0, result.stderr[-3000:]
    for name in FILES:
        assert (out / name).stat().st_size > 0, f"{name} missing or empty"
    assert not [p for p in out.iterdir() if p.name.startswith(".tmp-")], "temporary file left"
    history = pd.read_csv(out / "history.csv")
    assert list(history.columns) == ["epoch", "loss", "acc", "val_loss", "val_acc"]
    assert len(history) == epochs
    assert np.isfinite(history[["loss", "acc", "val_loss", "val_acc"]].to_numpy()).all()
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["test_accuracy"] <= 1.0 and math.isfinite(metrics["final"]["val_loss"])
    # The accuracy the report computed from predictions matches fit's last validation
    # accuracy: the same predictions, except where the other batching's rounding breaks
    # a near-tie between two classes.
    outputs = example_test_outputs(out, data, test_limit)
    assert_same_accuracy(metrics["test_accuracy"], history["val_acc"].iloc[-1], len(outputs),
                         outputs)
    text = result.stdout
    for expected in ("train samples", "First ten training labels", "Total params: 1,288,842",
                     "Epoch 1/", "val_acc", "ground truth", "Confusion matrix", "precision",
                     "Test accuracy"):
        assert expected in text, f"{expected!r} not printed"


def test_example_on_a_tiny_fake_dataset(tmp_path):
    data = write_fake_cifar(tmp_path / "data")
    out = tmp_path / "run"
    result = run_example(out, data, "--epochs", "2", "--batch-size", "16", "--explain",
                         "--trace-gradients", "2")
    check_outputs(out, 2, result, data)
    for name in ("filters.png", "feature_maps.png", "saliency.png", "misclassified.png",
                 "gradient_traces.png", "gradient_stats.csv"):
        assert (out / name).stat().st_size > 0, f"{name} missing or empty"
    stats = pd.read_csv(out / "gradient_stats.csv")
    assert {"layer", "grad_norm", "update_ratio", "dead_relu"} <= set(stats.columns)
    assert np.isfinite(stats.dropna(subset=["grad_norm"])["grad_norm"]).all()


def test_example_on_the_shared_dataset(tmp_path):
    if not SHARED.exists():
        pytest.skip(f"the shared CIFAR-10 copy is absent ({SHARED}); this test needs it")
    out = tmp_path / "run"
    result = run_example(out, SHARED, "--epochs", "1", "--train-limit", "512", "--test-limit", "256")
    check_outputs(out, 1, result, SHARED, test_limit=256)
    assert "512 train samples, 256 test samples" in result.stdout


def test_example_rejects_bad_flags(tmp_path):
    result = run_example(tmp_path / "run", tmp_path, "--epochs", "0")
    assert result.returncode != 0 and "--epochs must be at least 1" in result.stderr


def test_example_reports_a_missing_dataset(tmp_path):
    result = run_example(tmp_path / "run", tmp_path / "nowhere.tar.gz", "--epochs", "1")
    assert result.returncode != 0
    assert "nowhere.tar.gz" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()  # the folder it made for the run is gone again
    run_example(tmp_path / "a" / "b" / "c", tmp_path / "nowhere.tar.gz", "--epochs", "1")
    assert not (tmp_path / "a").exists()  # and so are the folders made on the way
    (tmp_path / "kept").mkdir()  # a folder the user gave, already there, stays
    run_example(tmp_path / "kept", tmp_path / "nowhere.tar.gz", "--epochs", "1")
    assert (tmp_path / "kept").is_dir()


def test_example_checkpoint_messages_and_saved_files(tmp_path):
    data = write_fake_cifar(tmp_path / "data", per_batch=4)
    out = tmp_path / "run"
    first = run_example(out, data, "--epochs", "1", "--no-plots", "--checkpoint-dir",
                        str(out / "ck"), "--resume")
    assert first.returncode == 0, first.stderr[-2000:]
    assert f"no checkpoint in {out / 'ck'} yet: starting at epoch 1" in first.stdout
    saved = re.search(r"Saved (.*) in ", first.stdout).group(1).split(", ")
    assert saved == ["history.csv", "metrics.json", "weights.npz"]  # files only, not ck/
    again = run_example(out, data, "--epochs", "1", "--no-plots", "--checkpoint-dir", str(out / "ck"))
    assert again.returncode == 0, again.stderr[-2000:]
    assert "checkpoint.npz will be overwritten by this run (add --resume" in again.stdout


def test_example_help_explains_every_flag_and_its_real_default():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    text = subprocess.run([sys.executable, str(ROOT / "examples" / "cifar10.py"), "--help"],
                          capture_output=True, text=True, env=env, check=True).stdout
    options = text[text.index("options:"):text.index("examples:")]
    # One entry per flag: its first line starts with "  -", its help follows.
    entries = re.split(r"\n(?=  -)", options.split("\n", 1)[1].rstrip())
    assert len(entries) == 20  # -h and the 19 flags
    for entry in entries:
        flag, _, rest = entry.strip().partition("  ")
        assert len(rest.split()) >= 4, f"{flag!r} has no sentence of help"
        assert entry.count("default") <= 1, f"{flag!r} shows two defaults"
    assert "(default: None)" not in text and "(default: False)" not in text
    for shown in ("(default: 20)", "(default: 32)", "(default: 0.05)", "(default: numpy)",
                  "the flag alone traces every 20", "runs/<timestamp>"):
        assert shown in " ".join(text.split()), shown


def test_trace_gradients_alone_traces_every_20_steps():
    example = load_example()
    assert example.parse_args([]).trace_gradients == 0
    assert example.parse_args(["--trace-gradients"]).trace_gradients == 20
    assert example.parse_args(["--trace-gradients", "5"]).trace_gradients == 5


def test_example_distributed_on_two_ranks_with_resume(tmp_path):
    """``mpiexec -n 2 ... --distributed``: one report from rank 0, and --resume
    continues the run that rank 0 checkpointed."""
    from test_distributed import mpi_missing, run_mpi

    reason = mpi_missing()
    if reason is not None:
        pytest.skip(reason)
    data = write_fake_cifar(tmp_path / "data")  # 40 training and 8 test images
    out, ck = tmp_path / "run", tmp_path / "ck"

    def example(*extra: str) -> subprocess.CompletedProcess:
        result = run_mpi(str(ROOT / "examples" / "cifar10.py"), "--distributed", "--data",
                         str(data), "--out", str(out), "--seed", "0", "--verbose", "2",
                         "--batch-size", "8", "--checkpoint-dir", str(ck), *extra, timeout=600)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
        return result

    first = example("--epochs", "1")
    assert "Data-parallel on 2 ranks: 20 training images and batches of 8 per rank" in first.stdout
    assert first.stdout.count("Total params: 1,288,842") == 1  # rank 1 prints nothing
    assert first.stdout.count("Epoch 1/1") == 1
    resumed = example("--epochs", "2", "--resume")
    assert "Resuming from" in resumed.stdout and "1 epoch(s) done" in resumed.stdout
    assert "Epoch 2/2" in resumed.stdout and "Epoch 1/2" not in resumed.stdout
    # The report of the resumed run covers both epochs (the first run printed epoch 1).
    both = subprocess.CompletedProcess(resumed.args, 0, first.stdout + resumed.stdout, "")
    check_outputs(out, 2, both, data)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["ranks"] == 2 and metrics["train_samples"] == 40
    assert sorted(p.name for p in ck.iterdir()) == ["checkpoint.npz"]  # rank 0's only
