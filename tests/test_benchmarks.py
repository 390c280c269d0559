"""The CPU benchmarks and the PyTorch peers run end to end (tiny sizes: they work, not speed)."""
from __future__ import annotations

import ast
import importlib.util
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from minicnn.ops import blas

from test_example_cifar10 import write_fake_cifar

ROOT = Path(__file__).resolve().parents[1]
# where minicnn.ops.memory can keep freed memory (glibc's mallopt)
GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
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
    assert results["malloc_keeps_freed_memory"] is (GLIBC and not real)
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


# ---------------------------------------------------------------- the airbench94 PyTorch peer

AIRBENCH = ROOT / "benchmarks" / "torch_airbench.py"


def load_airbench():
    """benchmarks/torch_airbench.py as a module, without running main()."""
    spec = importlib.util.spec_from_file_location("torch_airbench", AIRBENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_airbench(tmp_path: Path, *extra: str) -> tuple[subprocess.CompletedProcess, dict]:
    data = write_fake_cifar(tmp_path / "data", per_batch=16)  # 80 training, 16 test images
    out = tmp_path / "airbench.json"
    result = subprocess.run([sys.executable, str(AIRBENCH), "--data", str(data), "--threads", "1",
                             "--batch-size", "16", "--json", str(out), *extra],
                            capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    return result, json.loads(out.read_text())


def test_the_airbench_peer_trains_and_reports(tmp_path):
    pytest.importorskip("torch", reason="PyTorch is not installed: the optional peer is skipped")
    # 4.9 epochs of 5 steps: 25 steps, the lookahead starts at step 20 and updates at step 25
    result, res = run_airbench(tmp_path, "--epochs", "4.9", "--eval-each-epoch")
    assert res["steps"] == 25 and len(res["epoch_seconds"]) == 5
    assert res["train_images"] == 80 and res["test_images"] == 16
    for key in ("test_accuracy", "test_accuracy_no_tta", "test_accuracy_mirror"):
        assert 0 <= res[key] <= 1 and res[key] * 16 == round(res[key] * 16)
    assert res["train_seconds"] == pytest.approx(res["whitening_seconds"]
                                                 + sum(res["epoch_seconds"]))
    assert res["images_per_second"] == pytest.approx(25 * 16 / res["train_seconds"])
    assert res["epoch_images_per_second"][0] == pytest.approx(5 * 16 / res["epoch_seconds"][0])
    assert res["eval_seconds"] > 0 and res["peak_rss_bytes"] > 2**20
    assert result.stdout.count("test acc ") == 5 and "TTA level 2" in result.stdout


def test_the_airbench_peer_times_single_steps(tmp_path):
    pytest.importorskip("torch", reason="PyTorch is not installed: the optional peer is skipped")
    # 7 steps run past the 5 batches of one epoch: the loader starts a second one; NCHW layout
    result, res = run_airbench(tmp_path, "--steps-only", "4", "--warmup", "3",
                               "--no-channels-last")
    assert len(res["step_seconds"]) == 4 and "test_accuracy" not in res
    assert res["step_images_per_second"] == pytest.approx([16 / s for s in res["step_seconds"]])
    assert "median" in result.stdout


def test_the_airbench_peer_says_when_pytorch_is_missing(tmp_path):
    # torch made unimportable in the child, whether or not it is installed here
    code = ("import runpy, sys; sys.modules['torch'] = None; sys.argv = ['torch_airbench.py', "
            "'--steps-only', '1']; runpy.run_path("
            f"{str(AIRBENCH)!r}, run_name='__main__')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120, cwd=ROOT)
    assert result.returncode != 0
    assert "PyTorch is not installed" in result.stderr and "optional peer" in result.stderr


def test_the_airbench_peer_refuses_a_subset_smaller_than_a_batch(tmp_path):
    pytest.importorskip("torch", reason="PyTorch is not installed: the optional peer is skipped")
    data = write_fake_cifar(tmp_path / "data", per_batch=4)
    result = subprocess.run([sys.executable, str(AIRBENCH), "--data", str(data), "--batch-size",
                             "64"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode != 0 and "20 training images make no batch of 64" in result.stderr


def test_minicnn_never_imports_torch_or_the_benchmarks():
    for path in (ROOT / "minicnn").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            bad = [n for n in names if n.split(".")[0] in ("torch", "benchmarks", "torch_airbench")]
            assert not bad, f"{path.relative_to(ROOT)} imports {bad}"
    code = ("import sys, minicnn, minicnn.datasets.cifar10, minicnn.models; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'benchmarks', 'torch_airbench')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120, cwd=ROOT)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stdout + result.stderr


# The recipe's pieces, each against an independent computation.

def test_airbench_random_crop_takes_each_image_at_its_own_offset():
    torch = pytest.importorskip("torch", reason="PyTorch is not installed")
    ab = load_airbench()
    padded = torch.arange(6 * 3 * 36 * 36, dtype=torch.float32).reshape(6, 3, 36, 36)
    torch.manual_seed(3)
    out = ab.random_crop(torch, padded, 32)
    torch.manual_seed(3)
    shifts = torch.randint(-2, 3, size=(6, 2))  # the draws random_crop made
    for i, (dy, dx) in enumerate(shifts.tolist()):
        want = padded[i, :, 2 + dy:34 + dy, 2 + dx:34 + dx]
        assert torch.equal(out[i], want), (i, dy, dx)


def test_airbench_triangle_schedule_is_piecewise_linear():
    torch = pytest.importorskip("torch", reason="PyTorch is not installed")
    ab = load_airbench()
    steps = 476
    got = ab.triangle(torch, steps, start=0.2, end=0.07, peak=0.23).numpy()
    peak = int(0.23 * steps)
    want = [0.2 + (1 - 0.2) * t / peak if t < peak else 1 + (0.07 - 1) * (t - peak) / (steps - peak)
            for t in range(steps + 1)]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_airbench_whitening_decorrelates_the_patches():
    torch = pytest.importorskip("torch", reason="PyTorch is not installed")
    ab = load_airbench()
    torch.manual_seed(0)
    mix = torch.randn(3, 3)
    images = torch.einsum("cd,ndhw->nchw", mix, torch.randn(64, 3, 12, 12))
    layer = torch.nn.Conv2d(3, 24, 2, bias=True)
    ab.init_whitening(torch, layer, images)
    # patches by loops, covariance not centred, as the recipe
    patches = torch.stack([images[n, :, i:i + 2, j:j + 2].reshape(-1) for n in range(64)
                           for i in range(11) for j in range(11)]).double()
    cov = patches.T @ patches / len(patches)
    w = layer.weight.detach().reshape(24, 12).double()
    eigenvalues = torch.linalg.eigvalsh(cov).flip(0)
    whitened = w[:12] @ cov @ w[:12].T  # diag(lambda / (lambda + eps)) for the first half
    np.testing.assert_allclose(whitened.numpy(), torch.diag(eigenvalues / (eigenvalues + 5e-4)),
                               atol=2e-3)
    assert torch.equal(layer.weight[12:], -layer.weight[:12])


def test_airbench_optimizer_decays_every_group_alike():
    torch = pytest.importorskip("torch", reason="PyTorch is not installed")
    ab = load_airbench()
    net = ab.make_net(torch, channels_last=False)
    optimizer, _ = ab.make_optimizer(torch, net, 1024, 476)
    biases, others = optimizer.param_groups
    assert len(biases["params"]) == 6 and all(p.dim() == 1 for p in biases["params"])
    assert not any(p is net[0].weight for g in optimizer.param_groups for p in g["params"])
    assert biases["initial_lr"] == pytest.approx(64 * others["initial_lr"])
    kilostep_scale = 1024 * (1 + 1 / 0.15)
    for group in (biases, others):  # lr * weight_decay: the decay per step, the same for both
        assert group["initial_lr"] * group["weight_decay"] == pytest.approx(0.0153 * 1024
                                                                             / kilostep_scale)
    assert biases["nesterov"] and biases["momentum"] == 0.85


def test_airbench_tta_averages_the_six_views():
    torch = pytest.importorskip("torch", reason="PyTorch is not installed")
    ab = load_airbench()
    torch.manual_seed(1)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10))
    x = torch.randn(7, 3, 32, 32)
    labels = torch.randint(0, 10, (7,))
    acc = ab.evaluate(torch, net, x, labels, batch=3, channels_last=False)
    with torch.no_grad():
        def f(v):
            return net(v)
        padded = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="reflect")
        views = [x, padded[..., :32, :32], padded[..., 2:, 2:]]
        mirrored = [(f(v) + f(v.flip(-1))) / 2 for v in views]
        level2 = mirrored[0] / 2 + (mirrored[1] + mirrored[2]) / 4
    for level, logits in ((0, f(x)), (1, mirrored[0]), (2, level2)):
        assert acc[level] == float((logits.argmax(1) == labels).float().mean())


def test_the_fast_recipe_benchmark_runs(tmp_path):
    """benchmarks/bench_fast_recipe.py on random pixels at a small batch, minicnn only."""
    out = tmp_path / "fast.json"
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_fast_recipe.py"),
                             "--no-torch", "--rounds", "2", "--steps", "1", "--batch-size", "32",
                             "--profile", "--json", str(out)],
                            capture_output=True, text=True, timeout=600,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(out.read_text())
    assert len(report["minicnn_images_per_second"]) == 2 and report["minicnn_median"] > 0
    assert "whiten" in report["profile"] and "torch_median" not in report
    assert "round 2/2: minicnn" in result.stdout
    table = report["profile_table"]  # --no-torch: minicnn's table alone
    assert "side_by_side" not in report and "torch/minicnn" not in result.stdout
    assert [row["layer"] for row in table["layers"]] == list(report["profile"])
    assert table["steps"] == 3
    assert table["step_ms"][0] == pytest.approx(report["profile_step"] * 1e3)


def test_the_fast_recipe_benchmark_says_who_keeps_freed_memory(tmp_path):
    out = tmp_path / "fast.json"
    command = [sys.executable, str(ROOT / "benchmarks" / "bench_fast_recipe.py"), "--no-torch",
               "--rounds", "1", "--steps", "1", "--batch-size", "16", "--json", str(out)]
    for setting, kept in (("1", GLIBC), ("0", False)):
        result = subprocess.run(command, capture_output=True, text=True, timeout=600,
                                env=dict(os.environ, PYTHONPATH=str(ROOT),
                                         MINICNN_KEEP_FREED_MEMORY=setting))
        assert result.returncode == 0, result.stdout + result.stderr
        report = json.loads(out.read_text())
        assert report["minicnn_keeps_freed_memory"] is kept
        assert report["torch_keeps_freed_memory"] is None  # no peer ran
        assert report["openblas_kernel"] == blas.kernel()  # None where no OpenBLAS is found
        assert "minicnn keeps freed memory (minicnn.ops.memory" in result.stdout


@pytest.mark.parametrize("script,module,default,names,batch,blocks", [
    ("bench_host_passes.py", "normalization", "BLOCK", ("gelu", "bn_gelu"), 64, [65536, 131072]),
    ("bench_max_pool.py", "pooling", "TILE_BLOCK_BYTES", ("pool1", "pool2"), 8, [65536, 0])])
def test_the_host_pass_benchmarks_run(tmp_path, script, module, default, names, batch, blocks):
    """benchmarks/bench_host_passes.py and bench_max_pool.py: every block size timed
    (0: whole parts), the default reported; a negative block refused."""
    out = tmp_path / "passes.json"
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script),
                             "--repeats", "1", "--batch", str(batch), "--block",
                             *map(str, blocks), "--json", str(out)],
                            capture_output=True, text=True, timeout=600,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(out.read_text())
    import importlib
    assert report["default_block"] == getattr(importlib.import_module(f"minicnn.ops.{module}"),
                                              default)
    assert [row["block"] for row in report["rows"]] == blocks
    for row in report["rows"]:
        assert min(row[f"{name}_{part}_ms"] for name in names
                   for part in ("forward", "backward")) > 0
    assert f"freed memory kept: {GLIBC}" in result.stdout and report["batch"] == batch
    bad = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--block", "-1"],
                         capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert bad.returncode == 2 and "--block" in bad.stderr


def test_the_inference_benchmark_times_every_slice(tmp_path):
    """benchmarks/bench_inference.py: each model at each slice (0: whole), the default
    slice reported and restored; a negative slice refused."""
    out = tmp_path / "inference.json"
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_inference.py"),
                             "--images", "6", "--batch", "4", "--slice", "2", "0",
                             "--repeats", "1", "--json", str(out)],
                            capture_output=True, text=True, timeout=600,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(out.read_text())
    from minicnn import plan
    assert report["default_slice"] == plan.INFERENCE_SLICE
    assert [(row["model"], row["slice"]) for row in report["rows"]] == [
        ("tutorial", 2), ("tutorial", 0), ("fast", 2), ("fast", 0)]
    assert min(row["images_per_s"] for row in report["rows"]) > 0
    assert "tutorial  slice      2:" in result.stdout and "slice  whole:" in result.stdout
    bad = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_inference.py"),
                          "--slice", "-1"], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert bad.returncode == 2 and "--slice" in bad.stderr


def minicnn_layer_names() -> list[str]:
    """The layer names of examples/cifar10_fast.py's model, built in a fresh process."""
    code = ("import importlib.util, json, numpy as np; "
            "spec = importlib.util.spec_from_file_location("
            f"'fast', {str(ROOT / 'examples' / 'cifar10_fast.py')!r}); "
            "fast = importlib.util.module_from_spec(spec); spec.loader.exec_module(fast); "
            "model = fast.build_model(np.zeros((2, 2, 3, 24), np.float32)); "
            "print(json.dumps([layer.name for layer in model.layers]))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_the_airbench_peer_profiles_each_minicnn_layer(tmp_path):
    pytest.importorskip("torch", reason="PyTorch is not installed: the optional peer is skipped")
    result, res = run_airbench(tmp_path, "--steps-only", "1", "--warmup", "1", "--profile",
                               "--profile-steps", "2")
    profile = res["profile"]
    names = minicnn_layer_names()
    assert [row["name"] for row in profile["layers"]] == names and profile["steps"] == 2
    assert "whiten" in names and "batch_normalization_6" in names
    for row in profile["layers"]:
        assert row["forward"] >= 0 and row["backward"] >= 0, row
    rows = {row["name"]: row for row in profile["layers"]}
    assert rows["whiten"]["backward"] > 0  # its bias gradient is timed, not lost
    # minicnn's fused pair: the GELU after each BatchNorm2d counts with it, its own group empty
    assert rows["batch_normalization_1"]["modules"] == ["4:BatchNorm2d", "5:GELU"]
    assert rows["activation_2"]["modules"] == [] and rows["activation_2"]["forward"] == 0
    assert rows["activation_1"]["modules"] == ["1:GELU"] and rows["activation_1"]["forward"] > 0
    assert sum(r["forward"] + r["backward"] for r in profile["layers"]) <= profile["step"]
    assert "Full backward hook" not in result.stderr


def test_the_airbench_peer_profiles_only_after_timed_steps(tmp_path):
    pytest.importorskip("torch", reason="PyTorch is not installed: the optional peer is skipped")
    result = subprocess.run([sys.executable, str(AIRBENCH), "--profile"], capture_output=True,
                            text=True, timeout=120, cwd=ROOT)
    assert result.returncode != 0 and "--profile needs --steps-only" in result.stderr


def test_the_fast_recipe_benchmark_side_by_side_with_pytorch(tmp_path):
    pytest.importorskip("torch", reason="PyTorch is not installed: the optional peer is skipped")
    data = write_fake_cifar(tmp_path / "data", per_batch=16)
    out = tmp_path / "fast.json"
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_fast_recipe.py"),
                             "--data", str(data), "--rounds", "1", "--steps", "1", "--batch-size",
                             "16", "--threads", "1", "--profile", "--profile-steps", "2",
                             "--torch-keeps-freed-memory", "--json", str(out)],
                            capture_output=True, text=True, timeout=600,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(out.read_text())
    assert report["torch_keeps_freed_memory"] is True  # as the peer reported it
    side = report["side_by_side"]
    names = minicnn_layer_names()
    assert list(report["profile"]) == names
    assert [row["layer"] for row in side["layers"]] == names
    assert [row["name"] for row in report["torch_profile"]["layers"]] == names
    for row in side["layers"]:
        assert all(t >= 0 for t in row["minicnn_ms"] + row["torch_ms"]), row
        mine, theirs = sum(row["minicnn_ms"]), sum(row["torch_ms"])
        assert row["ratio"] == (pytest.approx(theirs / mine) if mine > 0 else None)
    rows = {row["layer"]: row for row in side["layers"]}
    # the fused BatchNormalization + GELU is on the normalization's row, in both
    assert sum(rows["batch_normalization_1"]["minicnn_ms"]) > 0
    assert rows["activation_2"]["minicnn_ms"] == [0, 0] and rows["activation_2"]["ratio"] is None
    for k in (0, 1):
        assert side["layers_ms"][k] <= side["step_ms"][k]
        assert side["rest_ms"][k] == pytest.approx(side["step_ms"][k] - side["layers_ms"][k])
    assert side["ratio"] == pytest.approx(side["step_ms"][1] / side["step_ms"][0])
    assert side["steps"] == 2 and "GELU" in side["torch_grouping"]
    assert "torch/minicnn" in result.stdout and "rest of the step" in result.stdout


def test_the_conv_layout_benchmark_runs(tmp_path):
    out = tmp_path / "layout.json"
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_conv_blocking.py"),
                             "--batch", "16", "--rounds", "1", "--steps", "1", "--block-rows",
                             "64", "4096", "--winograd-ab", "2", "--json", str(out)],
                            capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert set(report["training_images_per_second"]) == {
        "keep", "blocked default", "blocked default, im2col only", "blocked 64", "blocked 4096"}
    assert set(report["inference_images_per_second"]) == {"64", "4096"}
    assert all(v > 0 for v in report["training_images_per_second"].values())
    assert all(v > 0 for v in report["training_held_bytes"].values())
    assert "training: keep" in result.stdout
    pairs = report["winograd_ab"]
    assert pairs["pairs"] == 2 and 0 <= pairs["winograd_wins"] <= 2
    assert all(len(v) == 2 and min(v) > 0 for v in pairs["images_per_second"].values())
    assert "(medians of 2 pairs; Winograd faster in" in result.stdout


def test_the_fast_recipe_benchmark_times_late_steps(tmp_path):
    """--late-steps freezes the whitening bias in both libraries."""
    pytest.importorskip("torch", reason="PyTorch is not installed: the optional peer is skipped")
    data = write_fake_cifar(tmp_path / "data", per_batch=16)
    out = tmp_path / "late.json"
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_fast_recipe.py"),
                             "--data", str(data), "--rounds", "1", "--steps", "1",
                             "--batch-size", "16", "--threads", "1", "--late-steps", "--json",
                             str(out)], capture_output=True, text=True, timeout=600,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(out.read_text())
    assert report["late_steps"] is True and report["minicnn_median"] > 0
    assert report["torch_median"] > 0


def test_the_airbench_peer_times_late_steps_only_with_steps_only(tmp_path):
    result = subprocess.run([sys.executable, str(AIRBENCH), "--late-steps"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2 and "--late-steps needs --steps-only" in result.stderr


def test_the_conv_layer_benchmark_runs(tmp_path):
    out = tmp_path / "layers.json"
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_conv_layers.py"),
                             "--batch", "4", "--rounds", "1", "--block-rows", "16", "0", "4096",
                             "--layers", "conv1_2", "conv3_2", "--json", str(out)],
                            capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())["ms_forward_backward"]
    assert set(report) == {"conv1_2", "conv3_2"}
    assert all(set(v) == {"16", "0", "4096"} for v in report.values())
    assert all(ms > 0 for v in report.values() for pair in v.values() for ms in pair)
    assert "conv1_2 (15, 64, 64), block    16 rows (1 image)" in result.stdout
    # 0: the default rule, also for the layer after the others' settings (4 MB of col)
    assert "conv1_2 (15, 64, 64), block default (8 images)" in result.stdout
    assert "conv3_2 (3, 256, 256), block default (50 images)" in result.stdout
    assert "conv3_2 (3, 256, 256), block  4096 rows (455 images)" in result.stdout


def test_the_conv_layer_benchmark_compares_winograd(tmp_path):
    """--winograd: both paths timed and reported for each layer, on the blocked path
    even at a tiny batch; the 64-channel conv2_1 stays im2col (labelled so)."""
    out = tmp_path / "layers.json"
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_conv_layers.py"),
                             "--batch", "2", "--rounds", "1", "--block-rows", "64",
                             "--layers", "conv2_1", "conv2_2", "--winograd", "--json", str(out)],
                            capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert report["winograd_min_channels"] == 128 and report["winograd_tile"] == 4
    for key in ("ms_forward_backward", "ms_forward_backward_winograd"):
        assert set(report[key]) == {"conv2_1", "conv2_2"}
        assert all(ms > 0 for v in report[key].values() for pair in v.values() for ms in pair)
    assert "conv2_2 (7, 256, 256), block    64 rows (1 image) winograd:" in result.stdout
    assert "conv2_1 (15, 64, 256), block    64 rows (1 image) (im2col):" in result.stdout  # 64 in


def test_the_conv_layer_benchmark_takes_the_winograd_tile(tmp_path):
    """--winograd-tile 2 times F(2x2, 3x3), --winograd-block-tiles sets the block, both
    reported; a tile it has no matrices for is refused."""
    out = tmp_path / "layers.json"
    script = str(ROOT / "benchmarks" / "bench_conv_layers.py")
    result = subprocess.run([sys.executable, script, "--batch", "2", "--rounds", "1",
                             "--block-rows", "0", "--layers", "conv2_2", "--winograd",
                             "--winograd-tile", "2", "--winograd-block-tiles", "16",
                             "--json", str(out)],
                            capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert report["winograd_tile"] == 2 and report["winograd_block_tiles"] == 16
    bad = subprocess.run([sys.executable, script, "--winograd-tile", "3"],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert bad.returncode == 2 and "--winograd-tile" in bad.stderr


def test_the_col2im_benchmark_runs(tmp_path):
    """benchmarks/bench_col2im.py: both ways timed per layer (after checking they agree),
    the ratio reported; a repeat count below 1 refused."""
    out = tmp_path / "col2im.json"
    script = str(ROOT / "benchmarks" / "bench_col2im.py")
    result = subprocess.run([sys.executable, script, "--layers", "conv1_1", "conv3_2",
                             "--repeats", "1", "--json", str(out)],
                            capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = json.loads(out.read_text())["rows"]
    assert [(r["layer"], r["images"], r["channels_in"]) for r in rows] == [
        ("conv1_1", 4, 24), ("conv3_2", 50, 256)]  # blocks of about COL_BLOCK_BYTES
    for row in rows:
        assert row["taps_ms"] > 0 and row["one_product_ms"] > 0
        assert row["one_over_taps"] == pytest.approx(row["one_product_ms"] / row["taps_ms"])
    assert "conv1_1" in result.stdout and "4x31x31x24" in result.stdout
    bad = subprocess.run([sys.executable, script, "--repeats", "0"],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert bad.returncode == 2 and "--repeats" in bad.stderr
