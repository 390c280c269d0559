"""The CPU benchmark runs end to end (tiny sizes: this checks that it works, not its speed)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from test_example_cifar10 import write_fake_cifar

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--no-torch", "--repeats", "1", "--warmup", "1", "--steps", "1", "--batch-size", "4",
        "--infer-batch", "8"]


def run_bench(tmp_path: Path, *extra: str) -> tuple[str, dict]:
    out = tmp_path / "bench.json"
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_cifar_cnn.py"), *TINY,
                             "--json", str(out), *extra],
                            capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout, json.loads(out.read_text())


@pytest.mark.parametrize("real", [False, True], ids=["random-pixels", "cifar-archive"])
def test_the_cpu_benchmark_runs_and_reports(tmp_path, real):
    # the second case also leaves glibc's malloc at its defaults
    extra = (["--data", str(write_fake_cifar(tmp_path / "data")), "--release-freed-memory"]
             if real else [])
    stdout, results = run_bench(tmp_path, *extra)
    assert ("Data: the first images of" in stdout) == real
    assert results["malloc_keeps_freed_memory"] is (not real)
    assert results["train_page_faults_per_step"]["minicnn"]["median"] >= 0
    assert results["train_img_s"]["minicnn"]["median"] > 0
    assert results["infer_img_s"]["minicnn"]["median"] > 0
    assert "share of the step that is NOT conv matmul" in stdout
    assert "minicnn / PyTorch" not in stdout  # --no-torch: minicnn alone, said plainly


def test_the_benchmark_side_by_side_with_pytorch(tmp_path):
    pytest.importorskip("torch", reason="PyTorch is not installed: the optional peer is skipped")
    out = tmp_path / "bench.json"
    args = [a for a in TINY if a != "--no-torch"]
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_cifar_cnn.py"), *args,
                             "--json", str(out)], capture_output=True, text=True, timeout=300,
                            cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    results = json.loads(out.read_text())
    assert "minicnn / torch" in result.stdout and "## Side by side with torch" in result.stdout
    side = results["side_by_side"]
    assert [row["layer"] for row in side["layers"]][:2] == ["conv2d_1", "max_pooling2d_1"]
    assert len(side["layers"]) == 13
    for row in side["layers"]:
        assert all(t >= 0 for t in row["minicnn_ms"] + row["torch_ms"])
    conv1 = side["layers"][0]["torch_ms"]
    assert conv1[1] > 0  # the first conv's weight gradient is timed, not lost
    assert sum(sum(r["torch_ms"]) for r in side["layers"]) <= side["step_ms"][1]
