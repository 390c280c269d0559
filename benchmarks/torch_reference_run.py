"""The tutorial's training run in PyTorch, on the same data, as an accuracy reference.

    python benchmarks/torch_reference_run.py --data ../shared/datasets/cifar-10-python.tar.gz \
        --epochs 10 --seed 0

Same network, Keras's initialisation (glorot_uniform kernels, zero biases),
SGD lr 0.05 with Keras 2's decay lr / (1 + 1e-4 * step), batch 32, dropout 0.3,
a fresh shuffle each epoch, validation on the test set. It answers one
question: what does an independent implementation reach on this copy of
CIFAR-10 (JPEG-degraded pixels), so a gap to the tutorial's numbers can be put
on the data or on minicnn. PyTorch is an optional peer; minicnn never imports it
(this script uses only minicnn's dataset loader).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from minicnn.datasets import cifar10  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=None)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    try:
        import torch
        from torch import nn
    except ImportError:
        sys.exit("torch_reference_run.py: PyTorch is not installed (it is an optional peer)")
    torch.manual_seed(args.seed)
    (x_train, y_train), (x_test, y_test) = cifar10.load_data(args.data, verbose=False)

    def to_tensor(x):  # NHWC uint8 -> NCHW float32 in [0, 1], channels-last in memory
        t = torch.from_numpy(x.astype(np.float32) / np.float32(255)).permute(0, 3, 1, 2)
        return t.contiguous(memory_format=torch.channels_last)
    xt, xv = to_tensor(x_train), to_tensor(x_test)
    yt = torch.from_numpy(y_train[:, 0].astype(np.int64))
    yv = torch.from_numpy(y_test[:, 0].astype(np.int64))

    def block(c_in, c_out):
        return [nn.Conv2d(c_in, c_out, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Dropout(0.3)]
    net = nn.Sequential(*block(3, 256), *block(256, 256), *block(256, 128), nn.Flatten(),
                        nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(),
                        nn.Linear(256, 10)).to(memory_format=torch.channels_last)
    for m in net.modules():  # Keras's defaults
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
    # Keras flattens NHWC, PyTorch NCHW: a different order of the same 512 numbers,
    # which the (randomly initialised) first Dense layer does not care about.
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0 / (1.0 + 1e-4 * step))
    loss_fn = nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(args.seed)
    for epoch in range(args.epochs):
        start = time.perf_counter()
        net.train()
        order = torch.randperm(len(xt), generator=g)
        total, correct = 0.0, 0
        for i in range(0, len(xt), 32):
            idx = order[i:i + 32]
            out = net(xt[idx])
            loss = loss_fn(out, yt[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
            correct += int((out.argmax(1) == yt[idx]).sum())
        net.eval()
        with torch.no_grad():
            vloss, vcorrect = 0.0, 0
            for i in range(0, len(xv), 256):
                out = net(xv[i:i + 256])
                vloss += float(loss_fn(out, yv[i:i + 256])) * len(out)
                vcorrect += int((out.argmax(1) == yv[i:i + 256]).sum())
        print(f"epoch {epoch + 1}/{args.epochs} - {time.perf_counter() - start:.0f}s - "
              f"loss: {total / len(xt):.4f} - acc: {correct / len(xt):.4f} - "
              f"val_loss: {vloss / len(xv):.4f} - val_acc: {vcorrect / len(xv):.4f}", flush=True)


if __name__ == "__main__":
    main()
