"""benchmarks/bench_bn_gelu.py runs end to end on tiny shapes (that it works, not its speed)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_fusion_benchmark_runs_and_reports(tmp_path):
    out = tmp_path / "bench.json"
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_bn_gelu.py"),
                             "--shape", "8x4x4x16", "--shape", "4x2x2x32", "--repeats", "2",
                             "--threads", "2", "--json", str(out)],
                            capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert report["threads"] == 2 and len(report["results"]) == 4
    for row in report["results"]:
        assert row["fused_s"] > 0 and row["unfused_s"] > 0 and row["ratio"] > 0
    assert "ratio" in result.stdout


def test_bad_shape_is_refused():
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_bn_gelu.py"),
                             "--shape", "8x4x4"], capture_output=True, text=True, timeout=120,
                            cwd=ROOT)
    assert result.returncode != 0 and "--shape must be NxHxWxC" in result.stderr
