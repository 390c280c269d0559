"""Train CIFAR-10 to about 0.90 test accuracy in 10 epochs: airbench94's recipe in minicnn.

    python examples/cifar10_fast.py --data ../shared/datasets/cifar-10-python.tar.gz
    python examples/cifar10_fast.py --train-limit 5120 --test-limit 1000 --epochs 1   # a quick look
    python examples/cifar10_fast.py --backend cupy                 # the same code on the GPU

airbench94 (Keller Jordan, 2024) is a plain sequential CNN: a frozen 2x2
"whitening" convolution set from the training images, then three groups of
conv 3x3 -> max-pool -> BatchNormalization -> GELU -> conv 3x3 ->
BatchNormalization -> GELU (64, 256, 256 filters), max-pool, and a linear
classifier scaled by 1/9. It trains 9.9 epochs at batch 1024 with Nesterov SGD
(a triangular learning rate per step, weight decay, BatchNorm biases at 64x the
rate), label smoothing 0.2, a moving average of the weights pulled back into the
model every 5 steps, mirror-padded random crops and alternating flips; it
predicts with test-time augmentation (mirror and 1-pixel translations). Every
piece is minicnn's own library code; docs/fast-recipe.md has the numbers.
Writes metrics.json (test_accuracy with TTA, test_accuracy_no_tta,
test_accuracy_mirror, train_seconds), history.csv, loss.png and accuracy.png
into ``--out``.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import sys
import time
from pathlib import Path

# Before NumPy loads OpenBLAS: its idle threads then sleep at once (see minicnn/__init__.py).
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

import minicnn  # noqa: E402
from minicnn import callbacks, initializers, losses, optimizers, schedules  # noqa: E402
from minicnn.datasets import cifar10  # noqa: E402
from minicnn.fileio import make_folders, write_text_atomic  # noqa: E402
from minicnn.layers import (Activation, BatchNormalization, Conv2D, Dense, Flatten,  # noqa: E402
                            MaxPooling2D, Rescaling)
from minicnn.models import Sequential  # noqa: E402
from minicnn.preprocessing.crops import CropFlipSequence  # noqa: E402
from minicnn.preprocessing.tta import predict_tta  # noqa: E402
from minicnn.utils import to_categorical  # noqa: E402

MEAN = np.array([0.4914, 0.4822, 0.4465], dtype=np.float32)
STD = np.array([0.2470, 0.2435, 0.2616], dtype=np.float32)
# The recipe's hyperparameters (airbench94's hyp), for a loss summed over the batch.
HYP = dict(lr=11.5, momentum=0.85, weight_decay=0.0153, bias_scaler=64.0, label_smoothing=0.2,
           whiten_bias_epochs=3, widths=(64, 256, 256), bn_momentum=0.6, scaling=1 / 9,
           ema_every=5, whiten_images=5000)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="examples:\n" + __doc__.split("\n\n")[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", choices=["numpy", "cupy"], default="numpy",
                   help="numpy runs on the CPU, cupy on an NVIDIA GPU (default: %(default)s)")
    p.add_argument("--epochs", type=float, default=9.9,
                   help="passes over the training images; a fraction ends mid-epoch "
                        "(default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=1024,
                   help="images per step; the rate scales with it (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="weights, crops, flips, order")
    p.add_argument("--data", metavar="PATH",
                   help="the CIFAR-10 archive or its folder (default: $MINICNN_CIFAR10, the "
                        "cache, else a download)")
    p.add_argument("--train-limit", type=int, metavar="N", help="train on the first N images")
    p.add_argument("--test-limit", type=int, metavar="N", help="test on the first N images")
    p.add_argument("--tta", type=int, choices=[0, 1, 2], default=2,
                   help="test-time augmentation for test_accuracy: 0 none, 1 mirror, 2 mirror "
                        "and translations (default: %(default)s)")
    p.add_argument("--out", metavar="DIR", help="output folder (default: runs/fast-<timestamp>)")
    p.add_argument("--no-plots", action="store_true", help="skip the curves")
    p.add_argument("--verbose", type=int, choices=[0, 1, 2], default=2,
                   help="fit's progress output (default: %(default)s, a line per epoch)")
    args = p.parse_args(argv)
    if not args.epochs > 0:
        p.error(f"--epochs must be above 0, got {args.epochs}")
    if args.batch_size < 1:
        p.error(f"--batch-size must be at least 1, got {args.batch_size}")
    return args


def normalize(images: np.ndarray) -> np.ndarray:
    return ((images.astype(np.float32) / 255 - MEAN) / STD).astype(np.float32)


def build_model(whitening_kernel: np.ndarray) -> Sequential:
    """airbench94's network; PyTorch's default initializations where it keeps them."""
    torch_default = initializers.VarianceScaling(1 / 3, "fan_in", "uniform")  # U(+-1/sqrt(fan_in))
    bound = 1 / math.sqrt(whitening_kernel[..., 0].size)
    model = Sequential(name="airbench94")
    model.add(Conv2D(whitening_kernel.shape[-1], whitening_kernel.shape[:2], padding="valid",
                     input_shape=(32, 32, 3), name="whiten",
                     kernel_initializer=lambda shape, rng: whitening_kernel.copy(),
                     bias_initializer=initializers.RandomUniform(-bound, bound)))
    model.add(Activation("gelu"))
    for group, width in enumerate(HYP["widths"], start=1):
        for conv in (1, 2):
            model.add(Conv2D(width, 3, padding="same", use_bias=False, name=f"conv{group}_{conv}",
                             kernel_initializer=initializers.Dirac(others=torch_default)))
            if conv == 1:
                model.add(MaxPooling2D(2))
            model.add(BatchNormalization(momentum=HYP["bn_momentum"], epsilon=1e-12, scale=False))
            model.add(Activation("gelu"))
    model.add(MaxPooling2D(3))
    model.add(Flatten())
    model.add(Dense(10, use_bias=False, kernel_initializer=torch_default))
    model.add(Rescaling(HYP["scaling"]))
    model.get_layer("whiten").set_trainable("kernel", False)
    return model


def compile_model(model: Sequential, total_steps: int, batch_size: int) -> None:
    """Nesterov SGD with the recipe's triangular rate, decoupled weight decay and
    64x rate for the BatchNorm biases; label-smoothed cross-entropy on the logits."""
    kilostep = 1024 * (1 + 1 / (1 - HYP["momentum"]))
    lr = HYP["lr"] * batch_size / kilostep  # the mean loss's rate: the summed loss's x batch
    warmup = int(0.23 * total_steps)
    rate = schedules.PiecewiseLinear([0, warmup, total_steps], [0.2 * lr, lr, 0.07 * lr])
    sgd = optimizers.SGD(lr=rate, momentum=HYP["momentum"], nesterov=True,
                         momentum_style="pytorch", weight_decay=HYP["weight_decay"] / HYP["lr"],
                         lr_multipliers={"beta": HYP["bias_scaler"]})
    loss = losses.CategoricalCrossentropy(label_smoothing=HYP["label_smoothing"], from_logits=True)
    model.compile(optimizer=sgd, loss=loss, metrics=["accuracy"])


class StopAfter(callbacks.Callback):
    """Ends fit after ``total`` updates (9.9 epochs end inside the tenth) and, after
    ``whiten_bias_epochs`` epochs, freezes the whitening convolution's bias."""

    def __init__(self, total: int, whiten_bias_epochs: int) -> None:
        super().__init__()
        self.total, self.whiten_bias_epochs = total, whiten_bias_epochs

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.model.get_layer("whiten").set_trainable("bias", epoch < self.whiten_bias_epochs)

    def on_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if int(self.model.optimizer.iterations) >= self.total:
            self.model.stop_training = True


def accuracy(outputs: np.ndarray, labels: np.ndarray) -> float:
    return float((outputs.argmax(axis=1) == labels.reshape(-1)).mean())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    minicnn.set_backend(args.backend)
    minicnn.set_seed(args.seed)
    out = Path(args.out or f"runs/fast-{datetime.datetime.now():%Y%m%d-%H%M%S}")
    make_folders(out)

    (x_train, y_train), (x_test, y_test) = cifar10.load_data(args.data)
    x_train, y_train = normalize(x_train[:args.train_limit]), y_train[:args.train_limit]
    x_test, y_test = normalize(x_test[:args.test_limit]), y_test[:args.test_limit]
    if len(x_train) < args.batch_size:
        sys.exit(f"cifar10_fast: {len(x_train)} training images make no batch of "
                 f"{args.batch_size}; lower --batch-size or raise --train-limit")
    steps_per_epoch = len(x_train) // args.batch_size  # the last partial batch is dropped
    total_steps = math.ceil(args.epochs * steps_per_epoch)
    print(f"{len(x_train)} train images, {len(x_test)} test images; {total_steps} steps of "
          f"{args.batch_size} ({args.epochs} epochs)", flush=True)

    start = time.perf_counter()
    kernel = initializers.patch_whitening(x_train[:HYP["whiten_images"]], kernel_size=2)
    model = build_model(kernel)
    compile_model(model, total_steps, args.batch_size)
    batches = CropFlipSequence(x_train, to_categorical(y_train, 10), args.batch_size, pad=2,
                               flip="alternating", seed=args.seed)
    momentum = lambda t: 0.95 ** 5 * (t / total_steps) ** 3  # noqa: E731 (airbench's lookahead)
    history = model.fit(batches, epochs=math.ceil(args.epochs), verbose=args.verbose,
                        shuffle=False,  # the Sequence shuffles its images itself
                        callbacks=[StopAfter(total_steps, HYP["whiten_bias_epochs"]),
                                   callbacks.ExponentialMovingAverage(
                                       momentum, update_frequency=HYP["ema_every"],
                                       overwrite_frequency=HYP["ema_every"])])
    minicnn.backend.synchronize(model.weights[0])
    train_seconds = time.perf_counter() - start

    start = time.perf_counter()
    plain = model.predict(x_test, batch_size=2000)
    mirror = predict_tta(model, x_test, batch_size=2000, flip=True, translate=0)
    full = predict_tta(model, x_test, batch_size=2000, flip=True, translate=1)
    eval_seconds = time.perf_counter() - start
    results = {"test_accuracy": accuracy([plain, mirror, full][args.tta], y_test),
               "test_accuracy_no_tta": accuracy(plain, y_test),
               "test_accuracy_mirror": accuracy(mirror, y_test),
               "test_accuracy_tta": accuracy(full, y_test), "tta_level": args.tta,
               "train_seconds": train_seconds, "eval_seconds": eval_seconds,
               "steps": int(model.optimizer.iterations), "epochs": args.epochs,
               "batch_size": args.batch_size, "seed": args.seed, "backend": args.backend,
               "train_images": len(x_train), "test_images": len(x_test)}
    print(f"test accuracy {results['test_accuracy']:.4f} (no TTA {results['test_accuracy_no_tta']:.4f},"
          f" mirror {results['test_accuracy_mirror']:.4f}); training {train_seconds:.1f} s",
          flush=True)

    write_text_atomic(out / "metrics.json", json.dumps(results, indent=2) + "\n")
    write_text_atomic(out / "history.csv", pd.DataFrame(history.as_dict()).to_csv(
        index_label="epoch"))
    if not args.no_plots:
        from minicnn.viz import plots
        plots.learning_curve(history.history, "loss", out / "loss.png", "Training loss")
        plots.learning_curve(history.history, "acc", out / "accuracy.png", "Training accuracy")
    print(f"Saved metrics.json, history.csv{'' if args.no_plots else ', loss.png, accuracy.png'}"
          f" to {out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
