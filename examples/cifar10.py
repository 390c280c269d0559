"""Train the classic Keras CIFAR-10 tutorial network with minicnn.

    python examples/cifar10.py --backend numpy --data ../shared/datasets/cifar-10-python.tar.gz
    python examples/cifar10.py --backend cupy                 # the same code on the GPU
    python examples/cifar10.py --train-limit 2000 --test-limit 500 --epochs 1   # a quick look
    mpiexec -n 2 python examples/cifar10.py --distributed      # data-parallel on 2 processes

Three Conv2D (256/256/128, 3x3 valid, relu), each followed by 2x2 max-pooling
and dropout 0.3, then Dense 512/256 relu and Dense 10 softmax; SGD lr 0.05,
decay 1e-4, batch 32, 20 epochs, validated on the test set. Prints what the
tutorial printed and saves its pictures, the history, the metrics and the
weights into ``--out`` (default: a new folder under runs/).

With --distributed, under ``mpiexec -n P``, each of the P processes (ranks)
trains on every P-th image, the gradients are averaged over the ranks every
step (minicnn.distributed, docs/distributed.md), and only rank 0 prints and
writes files and checkpoints.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, NamedTuple

# Before NumPy loads OpenBLAS: its idle threads then sleep at once instead of
# spinning on the cores minicnn's own threads need (see minicnn/__init__.py).
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

import numpy as np  # noqa: E402
import pandas as pd

import minicnn
from minicnn import distributed
from minicnn.backend import Array
from minicnn.datasets import cifar10
from minicnn.fileio import make_folders, remove_empty_folders, write_text_atomic
from minicnn.training.interrupts import TrainingDiverged, TrainingInterrupted
from minicnn.layers import Conv2D, Dense, Dropout, Flatten, MaxPooling2D
from minicnn.models import Sequential
from minicnn.optimizers import SGD
from minicnn.utils import to_categorical
from minicnn.viz import report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="examples:\n" + __doc__.split("\n\n")[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", choices=["numpy", "cupy"], default="numpy",
                   help="numpy runs on the CPU, cupy on an NVIDIA GPU (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=20,
                   help="passes over the training images (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=32,
                   help="images per training step, per rank with --distributed (P ranks "
                        "then take P times as many per step) (default: %(default)s)")
    p.add_argument("--validation-batch-size", type=int, default=None, metavar="N",
                   help="test images per pass when validating; it does not change the numbers "
                        "(default: --batch-size, or 1000 with --backend cupy)")
    p.add_argument("--lr", type=float, default=0.05,
                   help="SGD learning rate (default: %(default)s)")
    p.add_argument("--decay", type=float, default=1e-4,
                   help="Keras learning-rate decay: lr / (1 + decay * step) (default: %(default)s)")
    p.add_argument("--seed", type=int, default=None,
                   help="seed the weights, dropout and shuffling for a repeatable run "
                        "(default: a different run each time)")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32",
                   help="floating-point type of the weights and images (default: %(default)s)")
    p.add_argument("--train-limit", type=int, default=None, metavar="N",
                   help="train on the first N training images (default: all 50000)")
    p.add_argument("--test-limit", type=int, default=None, metavar="N",
                   help="validate and test on the first N test images (default: all 10000)")
    p.add_argument("--data", default=None, metavar="PATH",
                   help="cifar-10-python.tar.gz or the cifar-10-batches-py/ folder "
                        "(default: $MINICNN_CIFAR10, else the cache ~/.minicnn/datasets, "
                        "else a download)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="folder for the pictures, history, metrics and weights "
                        "(default: a new runs/<timestamp>)")
    p.add_argument("--no-plots", action="store_true",
                   help="save no PNG pictures, only the history, metrics and weights")
    p.add_argument("--trace-gradients", type=int, nargs="?", const=20, default=0, metavar="N",
                   help="record each layer's activation and gradient statistics every N "
                        "training steps into gradient_stats.csv and gradient_traces.png; "
                        "the flag alone traces every 20 steps (default: off)")
    p.add_argument("--explain", action="store_true",
                   help="also save filters.png, feature_maps.png, saliency.png and "
                        "misclassified.png")
    p.add_argument("--checkpoint-dir", default=None, metavar="DIR",
                   help="save a checkpoint (weights, optimizer, history, random state) in DIR "
                        "after every epoch (default: none)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the checkpoint in --checkpoint-dir up to --epochs in total")
    p.add_argument("--distributed", action="store_true",
                   help="train data-parallel on the ranks of mpiexec -n P: rank r trains on "
                        "images r, r+P, ..., gradients are averaged every step, only rank 0 "
                        'prints and writes; needs pip install "minicnn[distributed]" '
                        "(default: one process)")
    p.add_argument("--verbose", type=int, default=1, choices=[0, 1, 2],
                   help="0: silent, 1: a live progress bar, 2: one line per epoch "
                        "(default: %(default)s)")
    args = p.parse_args(argv)
    if args.resume and args.checkpoint_dir is None:
        p.error("--resume needs --checkpoint-dir DIR (where the checkpoint is)")
    for name in ("epochs", "batch_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.trace_gradients < 0:
        p.error("--trace-gradients must be 0 (off) or a positive number of steps")
    for name in ("train_limit", "test_limit", "validation_batch_size"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def build_model(lr: float, decay: float, data_parallel: bool = False) -> Sequential:
    """The tutorial's network, layer for layer; ``data_parallel``: its SGD averages
    the gradients over the ranks."""
    model = Sequential()
    model.add(Conv2D(filters=256, kernel_size=(3, 3), input_shape=(32, 32, 3), activation="relu"))
    model.add(MaxPooling2D(pool_size=(2, 2)))
    model.add(Dropout(0.3))
    model.add(Conv2D(filters=256, kernel_size=(3, 3), activation="relu"))
    model.add(MaxPooling2D(pool_size=(2, 2)))
    model.add(Dropout(0.3))
    model.add(Conv2D(filters=128, kernel_size=(3, 3), activation="relu"))
    model.add(MaxPooling2D(pool_size=(2, 2)))
    model.add(Dropout(0.3))
    model.add(Flatten())
    model.add(Dense(512, activation="relu"))
    model.add(Dense(256, activation="relu"))
    model.add(Dense(10, activation="softmax"))
    optimizer = SGD(lr=lr, decay=decay)
    if data_parallel:
        optimizer = distributed.DistributedOptimizer(optimizer)
    model.compile(loss=["categorical_crossentropy"], optimizer=optimizer, metrics=["accuracy"])
    return model


def scale_pixels(images, dtype: str):
    """uint8 [0, 255] -> dtype [0, 1], dividing in place (no second full-size copy)."""
    images = images.astype(dtype)
    images /= 255
    return images


def make_out_dir(out: str | None) -> tuple[Path, list[Path]]:
    """The output folder, checked writable now (not after hours of training), and
    the folders this run created for it, innermost first."""
    if out is None:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        out = os.path.join("runs", stamp)
    path = Path(out)
    try:
        created = make_folders(path)
        with tempfile.TemporaryFile(dir=path):  # fail now, not after hours of training
            pass
    except OSError as exc:
        sys.exit(f"cifar10.py: cannot write to the output folder {path}: {exc.strerror or exc}")
    return path, created


class Data(NamedTuple):
    """The run's images (uint8, on the host) and integer labels (N, 1)."""
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


class Trained(NamedTuple):
    """What the training step hands to the reporting step."""
    model: Sequential
    history: Any  # the History that model.fit returned
    x_test: Array  # the scaled test images, already on the device
    train_seconds: float
    ranks: int  # processes that trained together (1 without --distributed)


def load(args: argparse.Namespace, out: Path | None, created: list[Path]) -> Data:
    """Read CIFAR-10, cut it to the limits, print its shapes and save samples.png
    (not without ``out``: the ranks but 0 of a distributed run write nothing)."""
    try:
        (x_train, y_train), (x_test, y_test) = cifar10.load_data(args.data)
    except (cifar10.DatasetError, FileNotFoundError) as exc:
        remove_empty_folders(created)  # no data, no run: leave no empty folders behind
        sys.exit(f"cifar10.py: {exc}")
    data = Data(x_train[:args.train_limit], y_train[:args.train_limit],
                x_test[:args.test_limit], y_test[:args.test_limit])
    names = cifar10.CLASS_NAMES
    print(f"x_train shape: {data.x_train.shape}  y_train shape: {data.y_train.shape}")
    print(f"{data.x_train.shape[0]} train samples, {data.x_test.shape[0]} test samples")
    print("First ten training labels:",
          ", ".join(f"{int(k)} ({names[int(k)]})" for k in data.y_train[:10, 0]))
    if not args.no_plots and out is not None:
        from minicnn.viz import plots  # matplotlib only when pictures are wanted
        plots.sample_grid(data.x_train[:10], data.y_train[:10], names, out / "samples.png")
    return data


def checkpoint_path(args: argparse.Namespace) -> str | None:
    """checkpoint.npz in --checkpoint-dir, saying whether it is resumed or overwritten."""
    if args.checkpoint_dir is None:
        return None
    Path(args.checkpoint_dir).mkdir(parents=True, exist_ok=True)
    checkpoint = os.path.join(args.checkpoint_dir, "checkpoint.npz")
    if args.resume and not os.path.exists(checkpoint):
        print(f"cifar10.py: no checkpoint in {args.checkpoint_dir} yet: starting at epoch 1")
    elif not args.resume and os.path.exists(checkpoint):
        print(f"cifar10.py: {checkpoint} will be overwritten by this run "
              "(add --resume to continue from it instead)")
    return checkpoint


def shard(images: np.ndarray, labels: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
    """This rank's images r, r+P, r+2P, ... of the first P*floor(N/P): equal shards, so
    every rank takes the same number of steps (a collective waits for all of them)."""
    r, p = distributed.rank(), distributed.size()
    n = len(images) // p * p
    if n == 0:
        sys.exit(f"cifar10.py: --distributed: {len(images)} {where} images cannot be shared "
                 f"by {p} ranks")
    if n < len(images):
        print(f"cifar10.py: --distributed: the last {len(images) - n} {where} image(s) are "
              f"left out so that the {p} ranks get equal shards")
    return images[r:n:p], labels[r:n:p]


def train(args: argparse.Namespace, data: Data) -> Trained:
    """The training step: scale the images on the device, build the network, fit it."""
    callbacks = []
    train_set, test_set = (data.x_train, data.y_train), (data.x_test, data.y_test)
    if args.distributed:
        train_set, test_set = shard(*train_set, "training"), shard(*test_set, "test")
        print(f"Data-parallel on {distributed.size()} ranks: {len(train_set[0])} training "
              f"images and batches of {args.batch_size} per rank "
              f"({args.batch_size * distributed.size()} images per step)")
    # Scale on the device: one uint8 copy travels, the float copy is made there.
    x_train = scale_pixels(minicnn.to_device(train_set[0]), args.dtype)
    x_val = scale_pixels(minicnn.to_device(test_set[0]), args.dtype)
    y_train = minicnn.to_device(to_categorical(train_set[1], 10, dtype=args.dtype))
    y_val = minicnn.to_device(to_categorical(test_set[1], 10, dtype=args.dtype))
    model = build_model(args.lr, args.decay, args.distributed)
    model.summary()
    root = not args.distributed or distributed.rank() == 0
    checkpoint = checkpoint_path(args) if root else None  # only rank 0 writes
    if args.distributed:
        # Rank 0 resumes from its checkpoint; fit gives the others its epoch and random
        # streams, and BroadcastWeights its weights and optimizer state.
        callbacks = [distributed.BroadcastWeights(root=0)]
    start = time.perf_counter()
    try:
        history = model.fit(x_train, y_train, batch_size=args.batch_size, epochs=args.epochs,
                            verbose=args.verbose if root else 0,
                            validation_data=(x_val, y_val), callbacks=callbacks,
                            shuffle=True, checkpoint=checkpoint,
                            resume=args.resume and checkpoint is not None,
                            trace_gradients=args.trace_gradients,
                            validation_batch_size=args.validation_batch_size or (
                                1000 if args.backend == "cupy" else None))
    except TrainingInterrupted as exc:
        print(f"\ncifar10.py: stopped. {exc}", file=sys.stderr)
        sys.exit(130)
    except TrainingDiverged as exc:
        sys.exit(f"cifar10.py: {exc}")
    x_test = x_val if not args.distributed else scale_pixels(minicnn.to_device(data.x_test),
                                                             args.dtype)
    return Trained(model, history, x_test, time.perf_counter() - start,
                   distributed.size() if args.distributed else 1)


def explain(model: Sequential, images: np.ndarray, truth: np.ndarray, predicted: np.ndarray,
            out: Path) -> None:
    """The learning-tool pictures: filters, feature maps, saliency, mistakes."""
    from minicnn.viz import pictures

    names = cifar10.CLASS_NAMES
    scaled = images[:8].astype("float32") / 255
    pictures.filters(model.layers[0].params["kernel"], out / "filters.png")
    pictures.feature_maps(model, "conv2d_1", scaled[0], out / "feature_maps.png",
                          image_name=f"test image 0 ({names[truth[0]]})")
    pictures.saliency(model, scaled, truth[:8], names, out / "saliency.png")
    pictures.misclassified(images, truth, predicted, names, out / "misclassified.png")


def report_run(args: argparse.Namespace, data: Data, run: Trained, out: Path) -> dict:
    """The reporting step: print the predictions, confusion matrix and per-class
    metrics; save the history, metrics, weights, gradient statistics and pictures.
    Returns the metrics."""
    names = cifar10.CLASS_NAMES
    history = run.history
    predicted = run.model.predict(run.x_test, batch_size=max(args.batch_size, 256)).argmax(axis=1)
    truth = data.y_test[:, 0]
    print("\nFirst ten test images:")
    print(pd.DataFrame({"ground truth": [names[k] for k in truth[:10]],
                        "predicted": [names[k] for k in predicted[:10]]}).to_string())
    confusion = report.confusion_matrix(truth, predicted, len(names))
    print("\nConfusion matrix (rows: true class, columns: predicted):")
    print(report.confusion_table(confusion, names).to_string())
    per_class = report.per_class_metrics(confusion, names)
    print("\nPer-class metrics:")
    print(per_class.to_string(float_format=lambda v: f"{v:.4f}"))
    accuracy = report.accuracy(confusion)
    print(f"\nTest accuracy: {accuracy:.4f}")

    frame = pd.DataFrame({key: history.history[key] for key in ("loss", "acc", "val_loss", "val_acc")},
                         index=pd.Index(np.arange(1, len(history.epoch) + 1), name="epoch"))
    write_text_atomic(out / "history.csv", frame.to_csv())
    epochs_run = max(len(history.epoch) - history.resumed_epochs, 1)
    metrics = {"test_accuracy": accuracy, "final": {k: float(v.iloc[-1]) for k, v in frame.items()},
               "epochs": args.epochs, "train_samples": int(data.x_train.shape[0]),
               "test_samples": int(data.x_test.shape[0]),
               "train_seconds": round(run.train_seconds, 2),
               "seconds_per_epoch": round(run.train_seconds / epochs_run, 2),
               "backend": args.backend, "dtype": args.dtype, "seed": args.seed,
               "batch_size": args.batch_size, "lr": args.lr, "decay": args.decay,
               "ranks": run.ranks,
               "per_class": per_class.to_dict(orient="index")}
    write_text_atomic(out / "metrics.json", json.dumps(metrics, indent=2, default=float))
    run.model.save_weights(out / "weights.npz")
    if history.traces:
        write_text_atomic(out / "gradient_stats.csv", pd.DataFrame(history.traces).to_csv(index=False))
    if not args.no_plots:
        from minicnn.viz import plots

        if history.traces:
            steps_per_epoch = math.ceil(data.x_train.shape[0] / args.batch_size)
            plots.gradient_traces(history.traces, out / "gradient_traces.png", steps_per_epoch)
        plots.learning_curve(history.history, "loss", out / "loss.png", "Model loss")
        plots.learning_curve(history.history, "acc", out / "accuracy.png", "Model accuracy")
        plots.confusion_heatmap(confusion, names, out / "confusion_matrix.png")
    if args.explain:
        explain(run.model, data.x_test, truth, predicted, out)
    saved = sorted(p.name for p in out.iterdir() if p.is_file() and not p.name.startswith("."))
    print(f"\nSaved {', '.join(saved)} in {out}")
    return metrics


def run_example(args: argparse.Namespace) -> dict:
    """The whole run: backend, data, training, and (on rank 0 only) the report."""
    try:
        minicnn.set_backend(args.backend)
    except RuntimeError as exc:
        sys.exit(f"cifar10.py: {exc}")
    minicnn.set_floatx(args.dtype)
    root = True
    if args.distributed:
        root = distributed.rank() == 0
        distributed.set_seed(args.seed)  # each rank its own dropout and shuffling
        if args.backend == "cupy":  # the ranks on one machine share out its GPUs
            cuda = minicnn.backend.xp().cuda
            cuda.Device(distributed.local_rank() % cuda.runtime.getDeviceCount()).use()
    elif args.seed is not None:
        minicnn.set_seed(args.seed)
    out, created = make_out_dir(args.out) if root else (None, [])
    data = load(args, out, created)
    run = train(args, data)
    return report_run(args, data, run, out) if root else {}


def run_distributed(args: argparse.Namespace) -> dict:
    """``run_example`` on every rank of mpiexec, the ranks but 0 silent. A rank that
    fails ends the whole job (MPI's Abort): the others would otherwise wait for it
    in the next collective for ever."""
    try:
        distributed.init()
    except ImportError as exc:
        sys.exit(f"cifar10.py: --distributed: {exc}")
    try:
        if distributed.rank() == 0:
            return run_example(args)
        with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
            return run_example(args)
    except SystemExit as exc:
        if exc.code in (0, None) or distributed.size() == 1:
            raise
        print(exc.code if isinstance(exc.code, str) else f"cifar10.py: rank "
              f"{distributed.rank()} exits with status {exc.code}", file=sys.stderr, flush=True)
        distributed.comm().Abort(exc.code if isinstance(exc.code, int) else 1)
    except BaseException:
        if distributed.size() == 1:
            raise
        traceback.print_exc()
        sys.stderr.flush()
        distributed.comm().Abort(1)
    return {}  # not reached: Abort ends the process


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    return run_distributed(args) if args.distributed else run_example(args)


if __name__ == "__main__":
    main()
