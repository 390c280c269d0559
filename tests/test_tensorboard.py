"""minicnn.callbacks.TensorBoard: the event files it writes, read back.

Each test fits a tiny model with the callback, then parses every event file in
the log folder from scratch (TFRecord framing: length, masked CRC-32C of the
length, the Event protobuf, its masked CRC, each checked; the protobuf classes
are tensorboardX's) and compares what is there with what the run produced:
scalars with ``history`` and the batch logs, histograms with the weights and
gradients recorded by a callback that ran just before, images with the
kernels, text with ``model.summary()``, trace scalars with ``history.traces``.
"""
from __future__ import annotations

import io
import struct
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

import minicnn
from minicnn.callbacks import CallbackList, LambdaCallback, LearningRateScheduler, kernel_image
from minicnn.layers import Conv2D, Dense, Flatten, MaxPooling2D
from minicnn.models import Sequential
from minicnn.optimizers import SGD

tensorboardX = pytest.importorskip("tensorboardX")
from minicnn.callbacks import TensorBoard  # noqa: E402  (after the skip)
from tensorboardX.proto import event_pb2  # noqa: E402

N, BATCH = 20, 8  # batches of 8, 8 and 4 samples


# ---------------------------------------------------------------- reading event files
def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), bit by bit: slow, but independent of the writer's table."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def masked(crc: int) -> int:
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def read_records(path: Path):
    data = path.read_bytes()
    at = 0
    while at < len(data):
        header = data[at:at + 8]
        (length,), (header_crc,) = struct.unpack("<Q", header), struct.unpack(
            "<I", data[at + 8:at + 12])
        assert header_crc == masked(crc32c(header)), f"{path}: bad length CRC at {at}"
        body = data[at + 12:at + 12 + length]
        (body_crc,) = struct.unpack("<I", data[at + 12 + length:at + 16 + length])
        assert body_crc == masked(crc32c(body)), f"{path}: bad data CRC at {at}"
        yield body
        at += 16 + length


class Events:
    """Every summary value in log_dir's event files, by kind and tag: [(step, value)]."""

    def __init__(self, log_dir: Path) -> None:
        self.files = sorted(log_dir.glob("events.out.tfevents.*"))
        self.scalars, self.histograms = defaultdict(list), defaultdict(list)
        self.images, self.texts = defaultdict(list), defaultdict(list)
        for path in self.files:
            for record in read_records(path):
                event = event_pb2.Event.FromString(record)
                for value in event.summary.value:
                    kind = value.WhichOneof("value")
                    if kind == "simple_value":
                        self.scalars[value.tag].append((event.step, value.simple_value))
                    elif kind == "histo":
                        self.histograms[value.tag].append((event.step, value.histo))
                    elif kind == "image":
                        self.images[value.tag].append((event.step, value.image))
                    elif value.metadata.plugin_data.plugin_name == "text":
                        self.texts[value.tag].append(
                            (event.step, value.tensor.string_val[0].decode()))


# ---------------------------------------------------------------- a tiny run
def data(n=N):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 6, 6, 2)).astype(np.float32)
    y = np.eye(3, dtype=np.float32)[rng.integers(0, 3, n)]
    return x, y


def tiny_model():
    minicnn.set_seed(0)
    model = Sequential([Conv2D(4, 3, activation="relu", input_shape=(6, 6, 2)),
                        MaxPooling2D(), Flatten(), Dense(3, activation="softmax")])
    model.compile(SGD(lr=0.1), "categorical_crossentropy", metrics=["accuracy"])
    return model


def fit(tmp_path, epochs=3, extra=(), fit_kwargs=None, **kwargs):
    """Fit with TensorBoard(log_dir=tmp_path/'runs', **kwargs); (model, history, events)."""
    model = tiny_model()
    x, y = data()
    board = TensorBoard(log_dir=tmp_path / "runs", **kwargs)
    history = model.fit(x, y, batch_size=BATCH, epochs=epochs, verbose=0,
                        validation_data=data(6), callbacks=[*extra, board],
                        **(fit_kwargs or {}))
    assert board.writer is None  # closed at the end of training
    return model, history, Events(tmp_path / "runs")


# ---------------------------------------------------------------- scalars
def test_epoch_scalars_are_the_history(tmp_path):
    _, history, events = fit(tmp_path)
    assert len(events.files) == 1
    assert set(events.scalars) == {"loss", "acc", "val_loss", "val_acc"}
    for tag, values in events.scalars.items():
        # float32 in the file: the same number, rounded once
        assert values == [(epoch, np.float32(v)) for epoch, v in enumerate(history.history[tag])]


def test_a_schedulers_lr_is_written(tmp_path):
    scheduler = LearningRateScheduler(lambda epoch: 0.1 / (epoch + 1))
    _, history, events = fit(tmp_path, extra=[scheduler])
    assert [v for _, v in events.scalars["lr"]] == [np.float32(0.1 / (e + 1)) for e in range(3)]
    assert history.history["lr"] == [0.1 / (e + 1) for e in range(3)]


def record_batches():
    batches: list[dict] = []
    return batches, LambdaCallback(on_batch_end=lambda batch, logs: batches.append(dict(logs)))


def test_update_freq_batch_writes_every_batch_at_samples_seen(tmp_path):
    batches, recorder = record_batches()
    _, history, events = fit(tmp_path, epochs=2, extra=[recorder], update_freq="batch")
    seen = np.cumsum([b["size"] for b in batches])
    expected = []
    for i, (batch, step) in enumerate(zip(batches, seen)):
        expected.append((int(step), np.float32(batch["loss"])))
        if (i + 1) % 3 == 0:  # the epoch's logs, at the same step (Keras's _write_logs)
            expected.append((int(step), np.float32(history.history["loss"][i // 3])))
    assert list(seen) == [8, 16, 20, 28, 36, 40]
    assert events.scalars["loss"] == expected
    assert [s for s, _ in events.scalars["val_loss"]] == [20, 40]
    assert "size" not in events.scalars and "batch" not in events.scalars


def test_update_freq_in_samples(tmp_path):
    batches, recorder = record_batches()
    _, history, events = fit(tmp_path, epochs=2, extra=[recorder], update_freq=10)
    # written once 10 or more samples came since the last write: at 16, 28, 40 (and each
    # epoch's logs at 20 and 40)
    assert [s for s, _ in events.scalars["acc"]] == [16, 20, 28, 40, 40]
    assert events.scalars["acc"][0][1] == np.float32(batches[1]["acc"])
    assert events.scalars["acc"][1][1] == np.float32(history.history["acc"][0])


def test_epoch_updates_add_no_batch_hook():
    """fit reads batch logs back from the device only for callbacks that want them."""
    assert not CallbackList([TensorBoard()], None, {}).wants("on_batch_end")
    assert CallbackList([TensorBoard(update_freq="batch")], None, {}).wants("on_batch_end")


# ---------------------------------------------------------------- histograms
def record_weights():
    """A callback that copies every weight and gradient at each epoch's end."""
    seen: dict[int, dict] = {}

    def copy(epoch, logs):
        seen[epoch] = {f"{layer.name}/{name}_0": (minicnn.to_host(layer.params[name]).copy(),
                                                   minicnn.to_host(layer.grads[name]).copy())
                       for layer in model_box[0].layers for name in layer.params}
    model_box: list = []
    recorder = LambdaCallback(on_epoch_end=copy)
    recorder.set_model = lambda model: model_box.append(model)
    return seen, recorder


def check_histogram(histo, values):
    assert histo.num == values.size
    assert histo.min == values.min() and histo.max == values.max()
    np.testing.assert_allclose(histo.sum, values.sum(), rtol=1e-6, atol=1e-6)
    assert sum(histo.bucket) == values.size


@pytest.mark.parametrize("backend_name", ["numpy", "strict"])
def test_weight_and_gradient_histograms_every_histogram_freq_epochs(tmp_path, backend_name):
    seen, recorder = record_weights()
    with minicnn.use_backend(backend_name):
        _, _, events = fit(tmp_path, epochs=3, extra=[recorder], histogram_freq=2,
                           write_grads=True)
    tags = {"conv2d_1/kernel_0", "conv2d_1/bias_0", "dense_1/kernel_0", "dense_1/bias_0"}
    assert set(events.histograms) == tags | {t + "_grad" for t in tags}
    for tag in tags:
        assert [s for s, _ in events.histograms[tag]] == [0, 2]  # epochs 0 and 2 (Keras's)
        for step, histo in events.histograms[tag]:
            check_histogram(histo, seen[step][tag][0])
        for step, histo in events.histograms[tag + "_grad"]:
            check_histogram(histo, seen[step][tag][1])


def test_no_gradient_histograms_without_write_grads(tmp_path):
    _, _, events = fit(tmp_path, epochs=1, histogram_freq=1)
    assert len(events.histograms) == 4 and not any(t.endswith("_grad") for t in events.histograms)


# ---------------------------------------------------------------- images and text
def test_kernel_image_layout():
    w = np.arange(2 * 3 * 2 * 4, dtype=np.float64).reshape(2, 3, 2, 4) - 20
    image = kernel_image(w)
    assert image.dtype == np.uint8 and image.shape == (2 * 3 - 1, 4 * 4 - 1)
    top = np.abs(w).max()
    for c in range(2):
        for f in range(4):
            for i in range(2):
                for j in range(3):
                    assert image[c * 3 + i, f * 4 + j] == round(128 + 127 * w[i, j, c, f] / top)
    assert (image[2, :] == 0).all() and (image[:, 3] == 0).all()  # the black lines
    dense = np.linspace(-1, 2, 12).reshape(6, 2)
    assert kernel_image(dense).shape == (2, 6)  # transposed: wider than tall
    assert kernel_image(dense)[1, 5] == 255 and kernel_image(dense)[0, 0] == round(128 - 63.5)
    assert (kernel_image(np.zeros((2, 3))) == 128).all()


def test_images_of_the_kernels(tmp_path):
    from PIL import Image
    seen, recorder = record_weights()
    _, _, events = fit(tmp_path, epochs=2, extra=[recorder], write_images=True)
    assert set(events.images) == {"conv2d_1/kernel_0", "dense_1/kernel_0"}
    conv, dense = events.images["conv2d_1/kernel_0"], events.images["dense_1/kernel_0"]
    assert [s for s, _ in conv] == [s for s, _ in dense] == [0, 1]  # every epoch (freq 0)
    for step, image in conv:
        assert (image.height, image.width) == (2 * 4 - 1, 4 * 4 - 1)  # 2 channels x 4 filters
        pixels = np.asarray(Image.open(io.BytesIO(image.encoded_image_string)).convert("L"))
        np.testing.assert_array_equal(pixels, kernel_image(seen[step]["conv2d_1/kernel_0"][0]))
    for _, image in dense:
        assert (image.height, image.width) == (3, 16)  # the (16, 3) kernel, transposed


def test_the_model_summary_is_the_graph_text(tmp_path):
    model, _, events = fit(tmp_path, epochs=1)
    lines: list[str] = []
    model.summary(print_fn=lines.append)
    [(step, text)] = events.texts["model_summary/text_summary"]  # tensorboardX adds the suffix
    assert step == 0 and text.splitlines() == ["    " + line for line in lines]
    _, _, quiet = fit(tmp_path / "no_graph", epochs=1, write_graph=False)
    assert not quiet.texts


# ---------------------------------------------------------------- learning tools
def test_gradient_tracing_statistics_are_scalars(tmp_path):
    _, history, events = fit(tmp_path, epochs=2, fit_kwargs={"trace_gradients": 2})
    steps = 3  # per epoch
    assert history.traces
    for row in history.traces:
        step = (row["epoch"] - 1) * steps + row["step"]
        for key in ("grad_norm", "update_ratio", "act_mean", "act_std", "dead_relu"):
            written = dict(events.scalars.get(f"{key}/{row['layer']}", []))
            if np.isfinite(row[key]):
                assert written[step] == np.float32(row[key]), (key, row)
            else:
                assert step not in written
    assert [s for s, _ in events.scalars["grad_norm/conv2d_1"]] == [1, 3, 5]


def test_gradient_tracing_from_a_generator_is_at_the_global_step(tmp_path):
    # A generator's params have "steps" and no "samples": the steps per epoch come from it.
    x, y = data()

    def batches():
        while True:
            for start in range(0, N, BATCH):
                yield x[start:start + BATCH], y[start:start + BATCH]

    model = tiny_model()
    history = model.fit(batches(), steps_per_epoch=3, epochs=2, verbose=0, trace_gradients=2,
                        callbacks=[TensorBoard(log_dir=tmp_path / "runs")])
    events = Events(tmp_path / "runs")
    assert sorted({(row["epoch"], row["step"]) for row in history.traces}) == \
        [(1, 1), (1, 3), (2, 2)]
    assert [s for s, _ in events.scalars["grad_norm/conv2d_1"]] == [1, 3, 5]


# ---------------------------------------------------------------- errors
def test_without_tensorboardx_one_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # import tensorboardX now fails
    with pytest.raises(ImportError, match=r'pip install "minicnn\[tensorboard\]"'):
        TensorBoard()


@pytest.mark.parametrize("kwargs,pattern", [
    (dict(embeddings_freq=1), r"TensorBoard: embeddings are not supported"),
    (dict(embeddings_layer_names=["dense_1"]), r"embeddings are not supported"),
    (dict(embeddings_data=np.zeros((2, 6, 6, 2))), r"embeddings are not supported"),
    (dict(update_freq="sometimes"), r"update_freq must be 'batch', 'epoch' or a positive"),
    (dict(update_freq=0), r"update_freq must be"),
    (dict(histogram_freq=-1), r"TensorBoard: histogram_freq must be an int >= 0, got -1"),
    (dict(histogram_freq=1.5), r"histogram_freq must be an int"),
    (dict(batch_size=0), r"TensorBoard: batch_size must be a positive int, got 0"),
])
def test_bad_arguments_are_refused_by_name(tmp_path, kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        TensorBoard(log_dir=tmp_path, **kwargs)
    assert not list(tmp_path.iterdir())  # refused before anything was written


def test_a_second_fit_writes_a_second_file(tmp_path):
    model = tiny_model()
    board = TensorBoard(log_dir=tmp_path)
    x, y = data()
    model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, callbacks=[board])
    model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, callbacks=[board])
    events = Events(tmp_path)
    assert len(events.files) == 2  # in one second too: the names differ
    assert len(events.scalars["loss"]) == 2
