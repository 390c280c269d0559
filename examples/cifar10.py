"""Train the classic Keras CIFAR-10 tutorial network with minicnn.

    python examples/cifar10.py --backend numpy --data ../shared/datasets/cifar-10-python.tar.gz
    python examples/cifar10.py --backend cupy                 # the same code on the GPU
    python examples/cifar10.py --train-limit 2000 --test-limit 500 --epochs 1   # a quick look

Three Conv2D (256/256/128, 3x3 valid, relu), each followed by 2x2 max-pooling
and dropout 0.3, then Dense 512/256 relu and Dense 10 softmax; SGD lr 0.05,
decay 1e-4, batch 32, 20 epochs, validated on the test set. Prints what the
tutorial printed and saves its pictures, the history, the metrics and the
weights into ``--out`` (default: a new folder under runs/).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
import time
from pathlib import Path

# Before NumPy loads OpenBLAS: its idle threads then sleep at once instead of
# spinning on the cores minicnn's own threads need (see minicnn/__init__.py).
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

import numpy as np  # noqa: E402
import pandas as pd

import minicnn
from minicnn.datasets import cifar10
from minicnn.fileio import make_folders, remove_empty_folders, write_text_atomic
from minicnn.interrupts import TrainingDiverged, TrainingInterrupted
from minicnn.layers import Conv2D, Dense, Dropout, Flatten, MaxPooling2D
from minicnn.models import Sequential
from minicnn.optimizers import SGD
from minicnn.utils import to_categorical
from minicnn.viz import report


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--backend", choices=["numpy", "cupy"], default="numpy")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--validation-batch-size", type=int, default=None,
                   help="test images per pass when validating (no effect on the numbers); "
                        "default: --batch-size, or 1000 with --backend cupy")
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--decay", type=float, default=1e-4)
    p.add_argument("--seed", type=int, default=None, help="seed weights, dropout and shuffling")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--train-limit", type=int, default=None, help="use the first N training images")
    p.add_argument("--test-limit", type=int, default=None, help="use the first N test images")
    p.add_argument("--data", default=None,
                   help="cifar-10-python.tar.gz or cifar-10-batches-py/ (else $MINICNN_CIFAR10, "
                        "the cache, or a download)")
    p.add_argument("--out", default=None, help="output folder (default runs/<timestamp>)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG pictures")
    p.add_argument("--trace-gradients", type=int, default=0, metavar="N",
                   help="record per-layer activation and gradient statistics every N steps "
                        "(gradient_stats.csv, gradient_traces.png)")
    p.add_argument("--explain", action="store_true",
                   help="also save filters.png, feature_maps.png, saliency.png, misclassified.png")
    p.add_argument("--checkpoint-dir", default=None,
                   help="save a checkpoint (weights, optimizer, history, random state) there "
                        "after every epoch")
    p.add_argument("--resume", action="store_true",
                   help="continue from the checkpoint in --checkpoint-dir up to --epochs in total")
    p.add_argument("--verbose", type=int, default=1, choices=[0, 1, 2],
                   help="1: live progress bar, 2: one line per epoch")
    args = p.parse_args(argv)
    if args.resume and args.checkpoint_dir is None:
        p.error("--resume needs --checkpoint-dir DIR (where the checkpoint is)")
    for name in ("epochs", "batch_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.trace_gradients < 0:
        p.error("--trace-gradients must be 0 (off) or a positive number of steps")
    for name in ("train_limit", "test_limit"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def build_model(lr: float, decay: float) -> Sequential:
    """The tutorial's network, layer for layer."""
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
    model.compile(loss=["categorical_crossentropy"], optimizer=SGD(lr=lr, decay=decay),
                  metrics=["accuracy"])
    return model


def scale_pixels(images, dtype: str):
    """uint8 [0, 255] -> dtype [0, 1], dividing in place (no second full-size copy)."""
    images = images.astype(dtype)
    images /= 255
    return images


def explain(model, images, truth, predicted, names, out: Path) -> None:
    """The learning-tool pictures: filters, feature maps, saliency, mistakes."""
    from minicnn.viz import pictures

    scaled = images[:8].astype("float32") / 255
    pictures.filters(model.layers[0].params["kernel"], out / "filters.png")
    pictures.feature_maps(model, "conv2d_1", scaled[0], out / "feature_maps.png")
    pictures.saliency(model, scaled, truth[:8], names, out / "saliency.png")
    pictures.misclassified(images, truth, predicted, names, out / "misclassified.png")


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


def main(argv=None) -> dict:
    args = parse_args(argv)
    try:
        minicnn.set_backend(args.backend)
    except RuntimeError as exc:
        sys.exit(f"cifar10.py: {exc}")
    minicnn.set_floatx(args.dtype)
    if args.seed is not None:
        minicnn.set_seed(args.seed)
    out, created = make_out_dir(args.out)
    names = cifar10.CLASS_NAMES

    try:
        (x_train, y_train), (x_test, y_test) = cifar10.load_data(args.data)
    except (cifar10.DatasetError, FileNotFoundError) as exc:
        remove_empty_folders(created)  # no data, no run: leave no empty folders behind
        sys.exit(f"cifar10.py: {exc}")
    x_train, y_train = x_train[:args.train_limit], y_train[:args.train_limit]
    x_test, y_test = x_test[:args.test_limit], y_test[:args.test_limit]
    print(f"x_train shape: {x_train.shape}  y_train shape: {y_train.shape}")
    print(f"{x_train.shape[0]} train samples, {x_test.shape[0]} test samples")
    print("First ten training labels:",
          ", ".join(f"{int(k)} ({names[int(k)]})" for k in y_train[:10, 0]))
    if not args.no_plots:
        from minicnn.viz import plots  # matplotlib only when pictures are wanted
        plots.sample_grid(x_train[:10], y_train[:10], names, out / "samples.png")

    # Scale on the device: one uint8 copy travels, the float copy is made there.
    test_images = x_test  # uint8 on the host, for the pictures
    x_train = scale_pixels(minicnn.to_device(x_train), args.dtype)
    x_test = scale_pixels(minicnn.to_device(x_test), args.dtype)
    y_train_1h = minicnn.to_device(to_categorical(y_train, 10, dtype=args.dtype))
    y_test_1h = minicnn.to_device(to_categorical(y_test, 10, dtype=args.dtype))

    model = build_model(args.lr, args.decay)
    model.summary()
    checkpoint = None
    if args.checkpoint_dir is not None:
        Path(args.checkpoint_dir).mkdir(parents=True, exist_ok=True)
        checkpoint = os.path.join(args.checkpoint_dir, "checkpoint.npz")
        if args.resume and not os.path.exists(checkpoint):
            print(f"cifar10.py: no checkpoint in {args.checkpoint_dir} yet: starting at epoch 1")
        elif not args.resume and os.path.exists(checkpoint):
            print(f"cifar10.py: {checkpoint} will be overwritten by this run "
                  "(add --resume to continue from it instead)")
    start = time.perf_counter()
    try:
        history = model.fit(x_train, y_train_1h, batch_size=args.batch_size, epochs=args.epochs,
                            verbose=args.verbose, validation_data=(x_test, y_test_1h),
                            shuffle=True, checkpoint=checkpoint, resume=args.resume,
                            trace_gradients=args.trace_gradients,
                            validation_batch_size=args.validation_batch_size or (
                                1000 if args.backend == "cupy" else None))
    except TrainingInterrupted as exc:
        print(f"\ncifar10.py: stopped. {exc}", file=sys.stderr)
        sys.exit(130)
    except TrainingDiverged as exc:
        sys.exit(f"cifar10.py: {exc}")
    train_seconds = time.perf_counter() - start
    epochs_run = max(len(history.epoch) - history.resumed_epochs, 1)

    predicted = model.predict(x_test, batch_size=max(args.batch_size, 256)).argmax(axis=1)
    truth = y_test[:, 0]
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
    metrics = {"test_accuracy": accuracy, "final": {k: float(v.iloc[-1]) for k, v in frame.items()},
               "epochs": args.epochs, "train_samples": int(x_train.shape[0]),
               "test_samples": int(x_test.shape[0]), "train_seconds": round(train_seconds, 2),
               "seconds_per_epoch": round(train_seconds / epochs_run, 2),
               "backend": args.backend, "dtype": args.dtype, "seed": args.seed,
               "batch_size": args.batch_size, "lr": args.lr, "decay": args.decay,
               "per_class": per_class.to_dict(orient="index")}
    write_text_atomic(out / "metrics.json", json.dumps(metrics, indent=2, default=float))
    model.save_weights(out / "weights.npz")
    if history.traces:
        write_text_atomic(out / "gradient_stats.csv", pd.DataFrame(history.traces).to_csv(index=False))
    if not args.no_plots and history.traces:
        plots.gradient_traces(history.traces, out / "gradient_traces.png")
    if args.explain:
        explain(model, test_images, truth, predicted, names, out)
    if not args.no_plots:
        plots.learning_curve(history.history, "loss", out / "loss.png", "Model loss")
        plots.learning_curve(history.history, "acc", out / "accuracy.png", "Model accuracy")
        plots.confusion_heatmap(confusion, names, out / "confusion_matrix.png")
    saved = sorted(p.name for p in out.iterdir() if p.is_file() and not p.name.startswith("."))
    print(f"\nSaved {', '.join(saved)} in {out}")
    return metrics


if __name__ == "__main__":
    main()
