"""Train CIFAR-10 to about 0.90 test accuracy in 10 epochs: airbench94's recipe in minicnn.

    python examples/cifar10_fast.py --data ../shared/datasets/cifar-10-python.tar.gz
    python examples/cifar10_fast.py --train-limit 5120 --test-limit 1000 --epochs 1   # a quick look
    python examples/cifar10_fast.py --backend cupy                 # the same code on the GPU
    python examples/cifar10_fast.py --out runs/a --stop-after-epochs 3   # then, as often as needed:
    python examples/cifar10_fast.py --out runs/a --stop-after-epochs 3 --resume

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
test_accuracy_mirror, train_seconds), history.csv, weights.npz (the trained
weights, for ``build_model(...).load_weights``), loss.png and accuracy.png into
``--out``. While it trains, ``--out``/checkpoint.npz keeps the run (rewritten
at every epoch's end, removed once the results are written): a run stopped by
``--stop-after-epochs``, Ctrl-C or a lost machine continues exactly with the
same arguments and ``--resume``, and its train_seconds adds up every part.
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
from minicnn.ops import blas  # noqa: E402
from minicnn.preprocessing.crops import CropFlipSequence  # noqa: E402
from minicnn.preprocessing.tta import predict_tta_levels  # noqa: E402
from minicnn.training import checkpoint as checkpoint_io  # noqa: E402
from minicnn.training.interrupts import TrainingDiverged, TrainingInterrupted  # noqa: E402
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
    p.add_argument("--resume", action="store_true",
                   help="continue the run kept in --out (its checkpoint.npz) with the same "
                        "arguments")
    p.add_argument("--stop-after-epochs", type=int, metavar="K",
                   help="stop after K epochs of this process, the run kept in --out for "
                        "--resume (for machines where a whole run takes too long)")
    p.add_argument("--no-plots", action="store_true", help="skip the curves")
    p.add_argument("--verbose", type=int, choices=[0, 1, 2], default=2,
                   help="fit's progress output (default: %(default)s, a line per epoch)")
    args = p.parse_args(argv)
    if not args.epochs > 0:
        p.error(f"--epochs must be above 0, got {args.epochs}")
    if args.batch_size < 1:
        p.error(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.resume and args.out is None:
        p.error("--resume needs --out DIR (the folder of the run to continue)")
    if args.stop_after_epochs is not None and args.stop_after_epochs < 1:
        p.error(f"--stop-after-epochs must be at least 1, got {args.stop_after_epochs}")
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


class RunClock(callbacks.Callback):
    """The run's training seconds over all its parts, and the settings its schedule
    and data depend on, kept in the checkpoint (the callback-state protocol)."""

    def __init__(self, settings: dict) -> None:
        super().__init__()
        self.settings, self.earlier, self.start = settings, 0.0, time.perf_counter()

    def seconds(self) -> float:
        """This part's seconds so far plus those of the parts before it."""
        return self.earlier + time.perf_counter() - self.start

    def state_dict(self) -> dict:
        return {"train_seconds": self.seconds(), "settings": self.settings}

    def load_state_dict(self, state: dict) -> None:
        # The time of an epoch cut short is not counted: that epoch is trained again.
        self.earlier = float(state["train_seconds"])


class StopAfterEpochs(callbacks.Callback):
    """Ends fit after ``epochs`` epochs of this process (``--stop-after-epochs``)."""

    def __init__(self, epochs: int) -> None:
        super().__init__()
        self.epochs, self.done = epochs, 0

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.done += 1
        if self.done >= self.epochs:
            self.model.stop_training = True


def resume_point(args: argparse.Namespace, checkpoint: Path, settings: dict, epochs: int) -> int:
    """Epochs done by the run kept in ``checkpoint`` (0 for a fresh run), saying
    whether it is resumed or overwritten; a run made with other settings stops here."""
    if not args.resume:
        if checkpoint.exists():
            print(f"cifar10_fast.py: {checkpoint} will be overwritten by this run "
                  "(add --resume to continue from it instead)", flush=True)
        return 0
    if not checkpoint.exists():
        print(f"cifar10_fast.py: no checkpoint in {checkpoint.parent} yet: starting at epoch 1",
              flush=True)
        return 0
    meta = checkpoint_io.read_metadata(checkpoint)
    saved = next((record["state"].get("settings") for record in meta.get("callbacks", [])
                  if record.get("class") == "RunClock"), None)
    if saved != settings:
        sys.exit(f"cifar10_fast: {checkpoint} holds a run with {saved}, this one has {settings}: "
                 "resume with that run's arguments, or leave out --resume to start afresh")
    done = int(meta["epoch"])
    if done >= epochs:  # stopped after training, before the results were written
        print(f"cifar10_fast.py: the run in {checkpoint} has trained all {epochs} epochs: "
              "evaluating it", flush=True)
    else:
        print(f"cifar10_fast.py: resuming from epoch {done + 1} of {epochs} ({done} done, "
              f"kept in {checkpoint})", flush=True)
    return done


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

    epochs = math.ceil(args.epochs)
    settings = {"epochs": args.epochs, "batch_size": args.batch_size, "seed": args.seed,
                "train_images": len(x_train)}
    checkpoint = out / "checkpoint.npz"
    clock = RunClock(settings)
    done = resume_point(args, checkpoint, settings, epochs)
    kernel = initializers.patch_whitening(x_train[:HYP["whiten_images"]], kernel_size=2)
    model = build_model(kernel)
    compile_model(model, total_steps, args.batch_size)
    batches = CropFlipSequence(x_train, to_categorical(y_train, 10), args.batch_size, pad=2,
                               flip="alternating", seed=args.seed)
    for _ in range(done):  # the Sequence draws epoch e's crops and order from (seed, e)
        batches.on_epoch_end()
    momentum = lambda t: 0.95 ** 5 * (t / total_steps) ** 3  # noqa: E731 (airbench's lookahead)
    stop = [] if args.stop_after_epochs is None else [StopAfterEpochs(args.stop_after_epochs)]
    try:
        history = model.fit(batches, epochs=epochs, verbose=args.verbose,
                            shuffle=False,  # the Sequence shuffles its images itself
                            callbacks=[StopAfter(total_steps, HYP["whiten_bias_epochs"]),
                                       callbacks.ExponentialMovingAverage(
                                           momentum, update_frequency=HYP["ema_every"],
                                           overwrite_frequency=HYP["ema_every"]), clock, *stop],
                            checkpoint=checkpoint, resume=args.resume)
    except TrainingInterrupted as exc:
        print(f"\ncifar10_fast.py: stopped. {exc}", file=sys.stderr)
        sys.exit(130)
    except TrainingDiverged as exc:
        sys.exit(f"cifar10_fast.py: {exc}")
    minicnn.backend.synchronize(model.weights[0])
    train_seconds = clock.seconds()
    if int(model.optimizer.iterations) < total_steps:  # --stop-after-epochs
        print(f"Stopped after epoch {len(history.epoch)} of {epochs} ({train_seconds:.1f} s of "
              f"training so far); {checkpoint} keeps the run: continue it with the same "
              "arguments and --resume", flush=True)
        return 0

    start = time.perf_counter()
    plain, mirror, full = predict_tta_levels(model, x_test, batch_size=2000, translate=1)
    eval_seconds = time.perf_counter() - start
    results = {"test_accuracy": accuracy([plain, mirror, full][args.tta], y_test),
               "test_accuracy_no_tta": accuracy(plain, y_test),
               "test_accuracy_mirror": accuracy(mirror, y_test),
               "test_accuracy_tta": accuracy(full, y_test), "tta_level": args.tta,
               "train_seconds": train_seconds, "eval_seconds": eval_seconds,
               "steps": int(model.optimizer.iterations), "epochs": args.epochs,
               "batch_size": args.batch_size, "seed": args.seed, "backend": args.backend,
               "train_images": len(x_train), "test_images": len(x_test),
               "openblas_kernel": blas.kernel()}
    print(f"test accuracy {results['test_accuracy']:.4f} (no TTA {results['test_accuracy_no_tta']:.4f},"
          f" mirror {results['test_accuracy_mirror']:.4f}); training {train_seconds:.1f} s",
          flush=True)

    write_text_atomic(out / "metrics.json", json.dumps(results, indent=2) + "\n")
    model.save_weights(out / "weights.npz")
    write_text_atomic(out / "history.csv", pd.DataFrame(history.as_dict()).to_csv(
        index_label="epoch"))
    if not args.no_plots:
        from minicnn.viz import plots
        plots.learning_curve(history.history, "loss", out / "loss.png", "Training loss")
        plots.learning_curve(history.history, "acc", out / "accuracy.png", "Training accuracy")
    checkpoint.unlink()  # the run is over and its results are written
    print(f"Saved metrics.json, history.csv, weights.npz"
          f"{'' if args.no_plots else ', loss.png, accuracy.png'} to {out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
