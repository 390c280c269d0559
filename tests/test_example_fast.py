"""examples/cifar10_fast.py (airbench94's recipe in minicnn), end to end on a tiny
fake dataset, as a user runs it, whole and stopped then resumed, and its network
against the recipe's shapes."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from minicnn.ops import blas

from conftest import assert_close
from test_example_cifar10 import write_fake_cifar

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "cifar10_fast.py"


def load_example():
    spec = importlib.util.spec_from_file_location("cifar10_fast", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_network_is_airbench94s():
    fast = load_example()
    images = np.random.default_rng(0).standard_normal((64, 32, 32, 3)).astype("float32")
    model = fast.build_model(fast.initializers.patch_whitening(images, kernel_size=2))
    # airbench94's PyTorch model has 1,972,792 parameters, counting BatchNorm's 1,152 frozen
    # scales (1.0) that scale=False leaves out here; here are the 2 x 1,152 moving statistics.
    assert model.count_params() == 1_972_792 - 1_152 + 2 * 1_152
    whiten = model.get_layer("whiten")
    assert whiten.params["kernel"].shape == (2, 2, 3, 24)
    assert "kernel" not in whiten.trained_params() and "bias" in whiten.trained_params()
    assert model.output_shape == (None, 10)


def run_example(data: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, MPLBACKEND="Agg", PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--data", str(data), "--batch-size", "48", "--epochs", "1.5",
         "--test-limit", "32", "--out", str(out), "--seed", "1", *extra],
        capture_output=True, text=True, env=env, timeout=600)


@pytest.fixture(scope="module")
def whole_run(tmp_path_factory):
    """A short run, uninterrupted: (the fake data, its output folder, its stdout). Its
    epochs of 6 steps end one step after the average was pulled into the weights
    (every 5 steps), so a resume must restore the average too."""
    tmp_path = tmp_path_factory.mktemp("fast")
    data = write_fake_cifar(tmp_path / "data", per_batch=64)
    result = run_example(data, tmp_path / "out")
    assert result.returncode == 0, result.stderr[-3000:]
    return data, tmp_path / "out", result.stdout


def test_a_short_run_writes_its_metrics(whole_run):
    _, out, stdout = whole_run
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("test_accuracy", "test_accuracy_no_tta", "test_accuracy_mirror", "train_seconds"):
        assert key in metrics
        assert 0 <= metrics[key] <= (1 if "accuracy" in key else 3600)
    assert metrics["steps"] == 9  # ceil(1.5 epochs x (320 // 48) steps)
    assert metrics["openblas_kernel"] == blas.kernel()  # what ran the products
    assert metrics["test_accuracy"] == metrics["test_accuracy_tta"]
    assert (out / "loss.png").exists() and (out / "history.csv").exists()
    assert (out / "weights.npz").exists() and not (out / "checkpoint.npz").exists()
    assert "Epoch 2/2" in stdout


def test_a_stopped_and_resumed_run_ends_as_the_whole_run(whole_run, tmp_path):
    data, whole, _ = whole_run
    out = tmp_path / "out"
    stopped = run_example(data, out, "--stop-after-epochs", "1")
    assert stopped.returncode == 0, stopped.stderr[-3000:]
    assert "Stopped after epoch 1 of 2" in stopped.stdout and not (out / "metrics.json").exists()
    meta = fast_checkpoint_meta(out / "checkpoint.npz")
    assert meta["epoch"] == 1
    first_seconds = next(record["state"]["train_seconds"] for record in meta["callbacks"]
                         if record["class"] == "RunClock")

    resumed = run_example(data, out, "--resume")  # a new process
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from epoch 2 of 2 (1 done" in resumed.stdout
    got, want = (json.loads((d / "metrics.json").read_text()) for d in (out, whole))
    for key in ("test_accuracy", "test_accuracy_no_tta", "test_accuracy_mirror", "steps"):
        assert got[key] == want[key], key
    assert got["train_seconds"] > first_seconds > 0  # both parts counted
    with np.load(out / "weights.npz") as mine, np.load(whole / "weights.npz") as theirs:
        assert set(mine.files) == set(theirs.files)
        for key in theirs.files:
            if key != "__meta__":
                assert_close(mine[key], theirs[key], err_msg=key)
    history, whole_history = (pd.read_csv(d / "history.csv") for d in (out, whole))
    assert list(history.columns) == list(whole_history.columns) and len(history) == 2
    assert_close(history["loss"].to_numpy(), whole_history["loss"].to_numpy())
    assert not (out / "checkpoint.npz").exists()  # the run is over


def fast_checkpoint_meta(path: Path) -> dict:
    with np.load(path) as f:
        return json.loads(str(f["__checkpoint__"]))


def test_resuming_with_other_settings_is_refused(whole_run, tmp_path):
    data, _, _ = whole_run
    out = tmp_path / "out"
    assert run_example(data, out, "--stop-after-epochs", "1").returncode == 0
    result = run_example(data, out, "--resume", "--batch-size", "32")
    assert result.returncode == 1 and "resume with that run's arguments" in result.stderr
    assert "'batch_size': 48" in result.stderr and "'batch_size': 32" in result.stderr


def test_train_seconds_add_up_over_the_parts():
    clock = load_example().RunClock({"seed": 0})
    clock.load_state_dict({"train_seconds": 100.0, "settings": {"seed": 0}})
    assert 100 < clock.seconds() < 200
    assert 100 < clock.state_dict()["train_seconds"] < 200


def test_resume_needs_out(capsys):
    fast = load_example()
    with pytest.raises(SystemExit):
        fast.parse_args(["--resume"])
    assert "--resume needs --out DIR" in capsys.readouterr().err
