"""CuPy backend check: agreement with NumPy, and epoch timing against PyTorch (CUDA).

    python benchmarks/gpu_compare.py                 # needs CuPy and a GPU
    python benchmarks/gpu_compare.py --epoch-images 50000 --no-torch

1. Builds the tutorial network once, copies the same weights to a NumPy and a
   CuPy model, runs the same batch through both (Dropout as at inference, so
   both see the same function) and prints the largest relative difference of
   the logits and of every parameter gradient. The two devices add in other
   orders, so the numbers agree only up to float32 rounding: the check passes
   at TOLERANCE (1e-4) and the script exits with status 1 above it.
2. Times minicnn on the GPU: training images/s at batch 32 (device
   synchronised), and one full epoch of ``fit`` on ``--epoch-images`` random
   images with validation on 10,000, as the example runs it.
3. When PyTorch with CUDA is importable, the identical network in PyTorch
   (cuDNN, channels-last, benchmark mode) over the same epoch, and the ratio.
PyTorch is an optional peer; minicnn never imports it.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

import minicnn  # noqa: E402
from minicnn.layers import Dropout  # noqa: E402
from minicnn.utils import to_categorical  # noqa: E402

from cifar10 import build_model  # noqa: E402

# Largest relative difference (max |a - b| / max |a|) allowed between the GPU and
# NumPy: float32 rounding of other summation orders is about 1e-6; a wrong kernel
# or a lost term moves the numbers by far more.
TOLERANCE = 1e-4


def loss_and_grads(model, x, y):
    """Logits and parameter gradients with Dropout as the identity (deterministic)."""
    h = x
    for layer in model.layers[:-1]:
        h = layer.run_forward(h, training=not isinstance(layer, Dropout))
    logits = model.layers[-1].run_forward(h, training=True, activate=False)
    loss = model.loss_function()
    value = loss.forward(logits, y)
    model.backward(loss.backward(), relu_moves=frozenset())  # the layers ran as written
    grads = {f"{l.name}/{k}": minicnn.to_host(g) for l in model.layers for k, g in l.grads.items()}
    return minicnn.to_host(logits), float(value), grads


def rel(a, b) -> float:
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(a)), 1e-30))


def compare(batch: int) -> float:
    """Worst relative difference to NumPy, with the GPU kernels and with their twins."""
    worst = 0.0
    for kernels in (True, False):
        print(f"-- cupy {'with the GPU kernels' if kernels else 'running the NumPy twins'} "
              "vs numpy")
        with minicnn.ops.use_kernels(kernels):
            worst = max(worst, compare_once(batch))
    return worst


def compare_once(batch: int) -> float:
    minicnn.set_seed(0)
    rng = np.random.default_rng(0)
    x = rng.random((batch, 32, 32, 3), dtype=np.float32)
    y = to_categorical(rng.integers(0, 10, batch), 10)
    with minicnn.use_backend("numpy"):
        cpu = build_model(0.05, 1e-4)
        ref = loss_and_grads(cpu, x, y)
    with minicnn.use_backend("cupy"):
        gpu = build_model(0.05, 1e-4)
        for a, b in zip(cpu.layers, gpu.layers):
            for k in a.params:
                b.params[k][...] = minicnn.to_device(a.params[k])
        got = loss_and_grads(gpu, minicnn.to_device(x), minicnn.to_device(y))
    worst = rel(ref[0], got[0])
    print(f"logits: max relative difference {worst:.2e}")
    print(f"loss: numpy {ref[1]:.6f}  cupy {got[1]:.6f}")
    for key in ref[2]:
        d = rel(ref[2][key], got[2][key])
        worst = max(worst, d)
        print(f"grad {key:24s} max relative difference {d:.2e}")
    print(f"WORST cupy vs numpy relative difference: {worst:.2e} "
          f"({'within' if worst <= TOLERANCE else 'ABOVE'} the tolerance {TOLERANCE:g})")
    return worst


def step_time(model, x, y, steps: int) -> float:
    """Seconds per training step at batch 32, device synchronised."""
    import cupy

    for i in range(20):  # warm-up: kernels compiled, memory pool filled
        model.train_on_batch(x[i * 32:(i + 1) * 32], y[i * 32:(i + 1) * 32])
    cupy.cuda.Device().synchronize()
    start = time.perf_counter()
    for i in range(steps):
        j = (i * 32) % (x.shape[0] - 32)
        model.train_on_batch(x[j:j + 32], y[j:j + 32])
    cupy.cuda.Device().synchronize()
    return (time.perf_counter() - start) / steps


def minicnn_timing(epoch_images: int, steps: int) -> dict:
    import cupy

    minicnn.set_backend("cupy")
    minicnn.set_seed(0)
    model = build_model(0.05, 1e-4)
    rng = cupy.random.default_rng(0)
    x = rng.random((epoch_images, 32, 32, 3), dtype=cupy.float32)
    y = cupy.asarray(to_categorical(np.random.default_rng(1).integers(0, 10, epoch_images), 10))
    xv, yv = x[:10000], y[:10000]
    with minicnn.ops.use_kernels(False):
        twins = step_time(model, x, y, steps)
    per_step = step_time(model, x, y, steps)
    print(f"training step at batch 32: {per_step * 1e3:.2f} ms with the GPU kernels, "
          f"{twins * 1e3:.2f} ms with the NumPy twins as composed CuPy operations")
    start = time.perf_counter()
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, validation_data=(xv, yv),
              validation_batch_size=1000)  # as examples/cifar10.py does on the GPU
    cupy.cuda.Device().synchronize()
    epoch = time.perf_counter() - start
    minicnn.set_backend("numpy")
    return {"train_img_s": 32 / per_step, "epoch_s": epoch}


def torch_timing(epoch_images: int, steps: int) -> dict | None:
    try:
        import torch
        from torch import nn
    except ImportError:
        print("PyTorch is not installed: no peer to compare with (optional)")
        return None
    if not torch.cuda.is_available():
        print("PyTorch has no CUDA here: no GPU peer to compare with")
        return None
    torch.backends.cudnn.benchmark = True
    dev = torch.device("cuda")

    def block(c_in, c_out):
        return [nn.Conv2d(c_in, c_out, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Dropout(0.3)]

    net = nn.Sequential(*block(3, 256), *block(256, 256), *block(256, 128), nn.Flatten(),
                        nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(),
                        nn.Linear(256, 10)).to(dev).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    lossf = nn.CrossEntropyLoss()
    x = torch.rand(epoch_images, 3, 32, 32, device=dev).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (epoch_images,), device=dev)

    def step(xb, yb):
        opt.zero_grad(set_to_none=True)
        loss = lossf(net(xb), yb)
        loss.backward()
        opt.step()
        return loss

    net.train()
    for i in range(20):
        step(x[i * 32:(i + 1) * 32], y[i * 32:(i + 1) * 32])
    torch.cuda.synchronize()
    start = time.perf_counter()
    for i in range(steps):
        j = (i * 32) % (epoch_images - 32)
        step(x[j:j + 32], y[j:j + 32])
    torch.cuda.synchronize()
    per_step = (time.perf_counter() - start) / steps
    start = time.perf_counter()
    net.train()
    order = torch.randperm(epoch_images, device=dev)
    total = torch.zeros((), device=dev)
    for i in range(0, epoch_images, 32):
        idx = order[i:i + 32]
        total += step(x[idx], y[idx]).detach()
    net.eval()
    with torch.no_grad():
        for i in range(0, 10000, 1000):  # validation batch as minicnn's
            lossf(net(x[i:i + 1000]), y[i:i + 1000])
    total.item()
    torch.cuda.synchronize()
    epoch = time.perf_counter() - start
    return {"train_img_s": 32 / per_step, "epoch_s": epoch}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--epoch-images", type=int, default=50000)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--no-torch", action="store_true")
    args = p.parse_args()
    if not minicnn.backend.cupy_available():
        sys.exit("gpu_compare.py: " + minicnn.backend.GPU_HELP)
    worst = compare(args.batch)
    mine = minicnn_timing(args.epoch_images, args.steps)
    print(f"minicnn cupy: {mine['train_img_s']:.0f} training images/s at batch 32; "
          f"full epoch ({args.epoch_images} images + 10000 validation): {mine['epoch_s']:.2f} s")
    peer = None if args.no_torch else torch_timing(args.epoch_images, args.steps)
    if peer:
        print(f"PyTorch cuda: {peer['train_img_s']:.0f} training images/s at batch 32; "
              f"full epoch: {peer['epoch_s']:.2f} s")
        print(f"epoch time ratio PyTorch / minicnn: {peer['epoch_s'] / mine['epoch_s']:.2f}x")
    print(f"SUMMARY worst_rel_diff={worst:.2e} minicnn_epoch_s={mine['epoch_s']:.2f} "
          f"torch_epoch_s={peer['epoch_s'] if peer else float('nan'):.2f}")
    if worst > TOLERANCE:
        sys.exit(f"gpu_compare.py: cupy and numpy differ by {worst:.2e}, more than the "
                 f"tolerance {TOLERANCE:g}")


if __name__ == "__main__":
    main()
