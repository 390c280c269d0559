"""The prepared GPU check's CPU-side parts (the GPU itself is not here)."""
from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path

import minicnn

ROOT = Path(__file__).resolve().parents[1]


def load_gpu_compare():
    spec = importlib.util.spec_from_file_location("gpu_compare", ROOT / "benchmarks" / "gpu_compare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_agreement_check_runs_with_the_strict_backend_standing_in_for_cupy(monkeypatch, capsys):
    module = load_gpu_compare()
    real = minicnn.use_backend
    monkeypatch.setattr(module.minicnn, "use_backend", lambda name: real("strict" if name == "cupy" else name))
    worst = module.compare(batch=2)
    out = capsys.readouterr().out
    # The strict backend takes the device paths (one product and col2im for a
    # convolution's input gradient, where the host adds one kernel offset at a time):
    # the same sums in another order, so float32 rounding only (about 3e-7), far
    # inside the script's tolerance; a real difference is 1e-3 (the next test).
    assert worst < 1e-5 <= module.TOLERANCE
    assert "within the tolerance" in out
    assert "grad conv2d_1/kernel" in out and "WORST cupy vs numpy relative difference" in out


def test_the_agreement_check_catches_a_difference(monkeypatch, capsys):
    module = load_gpu_compare()
    real = minicnn.use_backend
    monkeypatch.setattr(module.minicnn, "use_backend", lambda name: real("strict" if name == "cupy" else name))
    original = module.loss_and_grads

    def skewed(model, x, y):
        logits, loss, grads = original(model, x, y)
        if minicnn.get_backend() == "strict":
            grads["dense_1/kernel"] = grads["dense_1/kernel"] * 1.001
        return logits, loss, grads

    monkeypatch.setattr(module, "loss_and_grads", skewed)
    worst = module.compare(batch=2)
    assert 5e-4 < worst < 2e-3
    assert worst > module.TOLERANCE and "ABOVE the tolerance" in capsys.readouterr().out


def test_the_gpu_check_script_parses():
    result = subprocess.run(["bash", "-n", str(ROOT / "benchmarks" / "gpu_check.sh")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
