"""Checkpoints, exact resume, interrupts and divergence (in process and in a real subprocess)."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import minicnn
from minicnn.training import checkpoint as ckpt
from minicnn.training.interrupts import TrainingDiverged, TrainingInterrupted, deferred_signals
from minicnn.layers import Conv2D, Dense, Dropout, Flatten, Layer, MaxPooling2D
from minicnn.models import Sequential
from minicnn.optimizers import SGD
from minicnn.serialization import WeightsFileError
from minicnn.utils import to_categorical

from test_example_cifar10 import ROOT, write_fake_cifar


def small_model(filters: int = 4, momentum: float = 0.9, lr: float = 0.05) -> Sequential:
    model = Sequential([Conv2D(filters, 3, input_shape=(8, 8, 3), activation="relu"),
                        MaxPooling2D(), Dropout(0.3), Flatten(), Dense(10, activation="softmax")])
    model.compile(SGD(lr=lr, decay=1e-3, momentum=momentum), "categorical_crossentropy",
                  metrics=["accuracy"])
    return model


def data(n: int = 40):
    rng = np.random.default_rng(3)
    return (rng.random((n, 8, 8, 3)).astype("float32"),
            to_categorical(rng.integers(0, 10, n), 10))


def weights(model):
    return {f"{layer.name}/{k}": minicnn.to_host(v).copy()
            for layer in model.layers for k, v in layer.params.items()}


def train(epochs, checkpoint=None, resume=False, seed=7, **kwargs):
    minicnn.set_seed(seed)
    model = small_model(**kwargs)
    x, y = data()
    history = model.fit(x, y, batch_size=8, epochs=epochs, verbose=0, validation_data=(x, y),
                        checkpoint=checkpoint, resume=resume)
    return model, history


def test_resume_is_bit_exact(tmp_path):
    # Bit for bit, on whatever machine: the resumed run does the same steps on the same path
    # as the uninterrupted one, from the saved weights, momenta and random states.
    path = tmp_path / "run.npz"
    full, full_history = train(4)
    train(2, checkpoint=path)                       # "stopped" after epoch 2
    resumed, resumed_history = train(4, checkpoint=path, resume=True)
    assert resumed_history.history == full_history.history
    assert resumed_history.resumed_epochs == 2
    for key, value in weights(full).items():
        np.testing.assert_array_equal(weights(resumed)[key], value, err_msg=key)
    assert resumed.optimizer.iterations == full.optimizer.iterations == 4 * 5


def test_resume_without_dropout_rng_restore_would_differ(tmp_path):
    """The exactness above is not an accident: a resume that keeps the fresh random
    state (here: a different seed for the new model) does not reproduce the run."""
    path = tmp_path / "run.npz"
    full, _ = train(3)
    train(1, checkpoint=path)
    minicnn.set_seed(99)
    other = small_model()
    state = ckpt.load(path, other)                  # weights and optimizer only ...
    x, y = data()
    other.fit(x, y, batch_size=8, epochs=3, initial_epoch=state.epoch, verbose=0)
    assert any(not np.array_equal(weights(other)[k], v) for k, v in weights(full).items())


def test_checkpoint_contents_and_format(tmp_path):
    path = tmp_path / "run.npz"
    model, history = train(2, checkpoint=path)
    with np.load(path) as f:
        meta = json.loads(str(f["__checkpoint__"]))
        assert meta["format"] == "minicnn-checkpoint" and meta["version"] == 2
        assert meta["epoch"] == 2 and meta["optimizer"]["iterations"] == 10
        assert meta["frozen"] == {} and meta["callbacks"] == []
        assert meta["history"]["val_acc"] == history.history["val_acc"]
        assert set(meta["rng"]["layers"]) == {"dropout_1"} and meta["rng"]["fit"] is not None
        np.testing.assert_array_equal(f["weights/conv2d_1/kernel"],
                                      minicnn.to_host(model.layers[0].params["kernel"]))
        assert "optimizer/dense_1/kernel" in f.files  # momentum buffers
    assert [p.name for p in tmp_path.iterdir()] == ["run.npz"]


def test_callable_checkpoint_gets_every_epoch(tmp_path):
    seen = []
    minicnn.set_seed(0)
    model = small_model()
    x, y = data()
    model.fit(x, y, epochs=3, verbose=0, checkpoint=lambda m, epoch, h: seen.append(epoch))
    assert seen == [1, 2, 3]


def test_resume_needs_a_path():
    model = small_model()
    x, y = data()
    with pytest.raises(ValueError, match="resume=True needs checkpoint=PATH"):
        model.fit(x, y, verbose=0, resume=True)


def test_crash_while_writing_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "run.npz"
    model, _ = train(1, checkpoint=path)
    before = path.read_bytes()

    def broken_savez(file, **arrays):
        file.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt.np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        ckpt.save(path, model, 2, model.history)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["run.npz"]


def test_checkpoint_for_another_architecture(tmp_path):
    path = tmp_path / "run.npz"
    train(1, checkpoint=path)
    with pytest.raises(ckpt.CheckpointError, match=r"layer 'conv2d_1' is Conv2D .*'filters': 6"):
        ckpt.load(path, small_model(filters=6))
    deeper = Sequential([Conv2D(4, 3, input_shape=(8, 8, 3)), Flatten(), Dense(10, activation="softmax")])
    deeper.compile(SGD(), "categorical_crossentropy")
    with pytest.raises(ckpt.CheckpointError, match="holds 5 layers, the model has 3"):
        ckpt.load(path, deeper)


def test_checkpoint_of_another_format_version(tmp_path):
    path = tmp_path / "run.npz"
    train(1, checkpoint=path)
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    meta = json.loads(str(arrays["__checkpoint__"]))
    meta["version"] = 3
    arrays["__checkpoint__"] = np.array(json.dumps(meta))
    np.savez(path, **arrays)
    with pytest.raises(ckpt.CheckpointError, match="version 3; this minicnn reads .* versions 1, 2"):
        ckpt.load(path, small_model())


@pytest.mark.parametrize("entry,value,pattern", [
    ("__checkpoint__", "{not json", r"damaged metadata \(__checkpoint__ is not JSON"),
    ("__checkpoint__", "[1, 2]", r"damaged metadata \(__checkpoint__ is \[1, 2\], not a JSON object"),
    ("__checkpoint__", '{"format": "minicnn-checkpoint", "version": 1}',
     r"damaged metadata \(__checkpoint__ lacks epoch, input_shape, architecture"),
    ("optimizer/conv2d_1/kernel/extra", None, r"holds an entry 'optimizer/conv2d_1/kernel/extra'; "
                                              r"optimizer entries are named optimizer/<layer>/<parameter>"),
])
def test_checkpoint_with_a_damaged_entry_names_file_and_entry(tmp_path, entry, value, pattern):
    path = tmp_path / "run.npz"
    train(1, checkpoint=path)
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    arrays[entry] = np.array(value) if value is not None else arrays["optimizer/conv2d_1/kernel"]
    np.savez(path, **arrays)
    with pytest.raises(ckpt.CheckpointError, match=pattern) as info:
        ckpt.load(path, small_model())
    assert str(path) in str(info.value)


def test_a_single_process_checkpoint_keeps_no_per_rank_streams(tmp_path):
    path = tmp_path / "run.npz"
    train(1, checkpoint=path)
    with np.load(path) as f:
        assert "ranks" not in json.loads(str(f["__checkpoint__"]))["rng"]
    assert ckpt.load(path, small_model()).rank_streams is None


def test_per_rank_streams_come_back_from_the_file_and_put_a_process_back(tmp_path):
    """What a data-parallel run's writer keeps for each rank (tests/test_distributed.py
    runs it on two ranks): fit's generator and each layer's, by position."""
    path = tmp_path / "run.npz"
    model, _ = train(1)
    fit_rng = minicnn.backend.device_rng(5)
    mine = ckpt.random_state(model, fit_rng)
    assert [s is not None for s in mine["layers"]] == [False, False, True, False, False]
    ckpt.save(path, model, 1, model.history, fit_rng, rank_streams=[mine, mine])
    loaded = ckpt.load(path, small_model()).rank_streams
    assert loaded == json.loads(json.dumps([mine, mine]))
    expected = (fit_rng.random(3), model.layers[2].rng.random(3))
    other, other_rng = small_model(), minicnn.backend.device_rng(6)
    ckpt.set_random_state(other, other_rng, loaded[1])
    np.testing.assert_array_equal(other_rng.random(3), expected[0])
    np.testing.assert_array_equal(other.layers[2].rng.random(3), expected[1])


@pytest.mark.parametrize("ranks", [[], {"fit": None}, [{"fit": None, "layers": [None]}],
                                   [{"layers": [None] * 5}], [{"fit": 3, "layers": [None] * 5}],
                                   [{"fit": None, "layers": [None, None, 7, None, None]}],
                                   [{"fit": {"bit_generator": "PCG64", "state": 3},
                                     "layers": [None] * 5}],
                                   [{"fit": {"bit_generator": "seed"}, "layers": [None] * 5}]])
def test_damaged_per_rank_streams_are_refused_before_anything_changes(tmp_path, ranks):
    path = tmp_path / "run.npz"
    train(1, checkpoint=path)
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    meta = json.loads(str(arrays["__checkpoint__"]))
    meta["rng"]["ranks"] = ranks
    arrays["__checkpoint__"] = np.array(json.dumps(meta))
    np.savez(path, **arrays)
    model = small_model()
    before = weights(model)
    with pytest.raises(ckpt.CheckpointError, match=r"run.npz has damaged metadata \(__checkpoint"
                                                   r"__ rng ranks is not one .* per rank, for a "
                                                   r"model of 5 layers\)"):
        ckpt.load(path, model)
    for key, value in before.items():
        np.testing.assert_array_equal(weights(model)[key], value)


@pytest.mark.parametrize("meta,pattern", [
    ("{not json", r"__meta__ is not JSON"),
    ("5", r"__meta__ is 5, not a JSON object"),
    ('{"format": "minicnn-weights-1"}', r"__meta__ lacks architecture, input_shape"),
])
def test_weights_file_with_damaged_metadata(tmp_path, meta, pattern):
    path = tmp_path / "w.npz"
    model, _ = train(1)
    model.save_weights(path)
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    arrays["__meta__"] = np.array(meta)
    np.savez(path, **arrays)
    with pytest.raises(WeightsFileError, match=rf"load_weights: .*w.npz has damaged metadata \({pattern}"):
        small_model().load_weights(path)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "weights file"])
def test_corrupt_checkpoint(tmp_path, damage):
    path = tmp_path / "run.npz"
    model, _ = train(1, checkpoint=path)
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:200])
    elif damage == "garbage":
        path.write_bytes(b"not a checkpoint at all")
    else:
        model.save_weights(path)
    pattern = "not a minicnn checkpoint" if damage == "weights file" else "not a readable minicnn checkpoint"
    with pytest.raises(ckpt.CheckpointError, match=f"{path}.*|{pattern}") as info:
        ckpt.load(path, small_model())
    assert pattern in str(info.value) and str(path) in str(info.value)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy's overflow notes on the way
def test_divergence_stops_with_the_epoch_step_and_keeps_the_last_good_checkpoint(tmp_path):
    path = tmp_path / "run.npz"
    minicnn.set_seed(0)
    model = Sequential([Dense(16, input_shape=(4,), activation="relu"), Dense(1)])
    model.compile(SGD(lr=10.0), "mse")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 4)).astype("float32") * 100
    y = rng.standard_normal((64, 1)).astype("float32")
    with pytest.raises(TrainingDiverged,
                       match=r"diverged in epoch 1, step \d+/8: .*non-finite|diverged in epoch 1, "
                             r"step \d+/8: the loss became") as info:
        model.fit(x, y, batch_size=8, epochs=3, verbose=0, checkpoint=path)
    message = str(info.value)
    assert "lower learning rate" in message and str(path) in message
    restored = Sequential([Dense(16, input_shape=(4,), activation="relu"), Dense(1)])
    restored.compile(SGD(lr=10.0), "mse")
    assert ckpt.load(path, restored).epoch == 0
    assert all(np.isfinite(minicnn.to_host(p)).all() for l in restored.layers for p in l.params.values())


class InfiniteGradient(Layer):
    """Identity forward; backward multiplies by inf, poisoning every layer below it."""

    def _forward(self, x, training):
        return x

    def _backward(self, grad):
        return grad * np.float32(np.inf)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_divergence_names_the_first_layer_with_a_non_finite_gradient():
    model = Sequential([Dense(6, input_shape=(4,), name="first"), InfiniteGradient(),
                        Dense(3, activation="softmax", name="last")])
    model.compile(SGD(), "categorical_crossentropy")
    before = minicnn.to_host(model.layers[0].params["kernel"]).copy()
    x = np.ones((4, 4), "float32")
    with pytest.raises(TrainingDiverged, match=r"epoch 1, step 1/1: the gradient of first/kernel"):
        model.fit(x, to_categorical([0, 1, 2, 0], 3), batch_size=4, verbose=0)
    np.testing.assert_array_equal(minicnn.to_host(model.layers[0].params["kernel"]), before)


@pytest.fixture
def python_sigint_handler():
    """SIGINT as Python sets it up in an interactive run (KeyboardInterrupt), whatever
    started this test: a shell starts its background jobs with SIGINT ignored, and
    Python keeps that, so without this the handler fit restores would be SIG_IGN."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_sigint_in_process_stops_after_the_step(tmp_path, python_sigint_handler):
    path = tmp_path / "run.npz"
    minicnn.set_seed(0)
    model = small_model()
    x, y = data()
    calls = []
    sigterm_before = signal.getsignal(signal.SIGTERM)

    def interrupt_while_saving(m, epoch, history):
        calls.append(epoch)
        if epoch == 1:
            os.kill(os.getpid(), signal.SIGINT)  # arrives while epoch 1's checkpoint is saved
        ckpt.save(path, m, epoch, history)

    with pytest.raises(TrainingInterrupted, match=r"SIGINT received after epoch 1\."):
        model.fit(x, y, batch_size=8, epochs=5, verbose=0, checkpoint=interrupt_while_saving)
    assert calls == [1]  # stopped before epoch 2 began
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored
    assert signal.getsignal(signal.SIGTERM) is sigterm_before


def test_an_ignored_signal_stays_ignored():
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with deferred_signals() as stop:
            assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)
            assert not stop
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


# ---------------------------------------------------------------- a real process
def default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_example(out, data_dir, *extra, wait=True):
    env = dict(os.environ, MPLBACKEND="Agg", PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    command = [sys.executable, str(ROOT / "examples" / "cifar10.py"), "--data", str(data_dir),
               "--out", str(out), "--seed", "3", "--verbose", "2", "--no-plots",
               "--batch-size", "8", *extra]
    # SIGINT as an interactive shell leaves it, even when these tests run as a background
    # job (SIGINT ignored, which the child would inherit and keep)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=env, preexec_fn=default_sigint)
    if wait:
        stdout, stderr = process.communicate(timeout=300)
        return process.returncode, stdout, stderr
    return process


def test_sigint_to_a_real_run_then_resume_matches_an_uninterrupted_run(tmp_path):
    data_dir = write_fake_cifar(tmp_path / "data", per_batch=16)
    epochs = "6"
    code, _, stderr = run_example(tmp_path / "full", data_dir, "--epochs", epochs)
    assert code == 0, stderr

    ckdir = tmp_path / "ck"
    process = run_example(tmp_path / "part", data_dir, "--epochs", epochs, "--checkpoint-dir",
                          str(ckdir), wait=False)
    checkpoint = ckdir / "checkpoint.npz"
    deadline = time.time() + 240
    while time.time() < deadline:  # wait until at least one epoch is saved
        if checkpoint.exists():
            with np.load(checkpoint) as f:
                if json.loads(str(f["__checkpoint__"]))["epoch"] >= 1:
                    break
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    if process.returncode == 0:
        pytest.skip("the run finished before the signal arrived; nothing to resume")
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    # The signal lands inside epoch 2 or, when it beats that epoch's first step,
    # between the epochs ("after epoch 1"); either way the run stops and says how to resume.
    assert re.search(r"SIGINT received (in|after) epoch", stderr) and "--resume" in stderr

    code, stdout, stderr = run_example(tmp_path / "resumed", data_dir, "--epochs", epochs,
                                       "--checkpoint-dir", str(ckdir), "--resume")
    assert code == 0, stderr
    assert "Resuming from" in stdout
    full = (tmp_path / "full" / "history.csv").read_text()
    assert (tmp_path / "resumed" / "history.csv").read_text() == full
    with np.load(tmp_path / "full" / "weights.npz") as a, \
            np.load(tmp_path / "resumed" / "weights.npz") as b:
        for key in a.files:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_sigterm_is_handled_like_sigint(tmp_path):
    data_dir = write_fake_cifar(tmp_path / "data", per_batch=16)
    ckdir = tmp_path / "ck"
    process = run_example(tmp_path / "run", data_dir, "--epochs", "50", "--checkpoint-dir",
                          str(ckdir), wait=False)
    deadline = time.time() + 240
    while not (ckdir / "checkpoint.npz").exists() and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "SIGTERM received" in stderr and "Traceback" not in stderr
    assert not [p for p in ckdir.iterdir() if p.name.startswith(".tmp-")]



def test_resume_into_a_model_whose_layers_have_other_names(tmp_path):
    path = tmp_path / "run.npz"
    full, _ = train(3)
    train(1, checkpoint=path)
    minicnn.set_seed(7)
    renamed = Sequential([Conv2D(4, 3, input_shape=(8, 8, 3), activation="relu", name="c"),
                          MaxPooling2D(name="p"), Dropout(0.3, name="d"), Flatten(name="f"),
                          Dense(10, activation="softmax", name="out")])
    renamed.compile(SGD(lr=0.05, decay=1e-3, momentum=0.9), "categorical_crossentropy",
                    metrics=["accuracy"])
    x, y = data()
    renamed.fit(x, y, batch_size=8, epochs=3, verbose=0, validation_data=(x, y), checkpoint=path,
                resume=True)
    for mine, theirs in zip(weights(renamed).values(), weights(full).values()):
        np.testing.assert_array_equal(mine, theirs)


def test_backward_before_forward_is_a_clear_error():
    for layer in (Dense(3), MaxPooling2D(), Flatten(), Dropout(0.5)):
        with pytest.raises(RuntimeError, match="backward needs a forward"):
            layer.backward(np.ones((2, 3), "float32"))


def test_fit_creates_the_checkpoint_folder(tmp_path):
    path = tmp_path / "new" / "deeper" / "checkpoint.npz"  # neither folder exists yet
    train(1, checkpoint=path)
    assert path.is_file()
    _, history = train(2, checkpoint=path, resume=True)
    assert history.resumed_epochs == 1
