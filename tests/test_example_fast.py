"""examples/cifar10_fast.py (airbench94's recipe in minicnn), end to end on a tiny
fake dataset, as a user runs it, and its network against the recipe's shapes."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

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


def test_a_short_run_writes_its_metrics(tmp_path):
    data = write_fake_cifar(tmp_path / "data", per_batch=64)
    env = dict(os.environ, MPLBACKEND="Agg", PYTHONPATH=str(ROOT))
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--data", str(data), "--batch-size", "64", "--epochs", "1.5",
         "--test-limit", "32", "--out", str(tmp_path / "out"), "--seed", "1"],
        capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    for key in ("test_accuracy", "test_accuracy_no_tta", "test_accuracy_mirror", "train_seconds"):
        assert key in metrics
        assert 0 <= metrics[key] <= (1 if "accuracy" in key else 3600)
    assert metrics["steps"] == 8  # ceil(1.5 epochs x (320 // 64) steps)
    assert metrics["test_accuracy"] == metrics["test_accuracy_tta"]
    assert (tmp_path / "out" / "loss.png").exists() and (tmp_path / "out" / "history.csv").exists()
    assert "Epoch 2/2" in result.stdout
