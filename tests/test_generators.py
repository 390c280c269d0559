"""Training and evaluating from Python generators and Sequences (Keras's fit_generator,
evaluate_generator, predict_generator, fit(x=Sequence)) and validation_freq.

A generator run is compared with the array run that does the same steps: the same
batches in the same order give the same weights (up to rounding: the batches reach
the layers by another path). Shuffled Sequences record the indices asked for, so
the order each epoch used is checked, and replayed, directly.
"""
from __future__ import annotations

import os
import signal
import threading
import warnings

import numpy as np
import pytest

import minicnn
from minicnn.callbacks import Callback, EarlyStopping, ModelCheckpoint
from minicnn.layers import Conv2D, Dense, Dropout, Flatten, MaxPooling2D
from minicnn.models import Sequential
from minicnn.optimizers import SGD
from minicnn.training.interrupts import TrainingDiverged, TrainingInterrupted
from minicnn.utils import Sequence, to_categorical

from conftest import assert_close


def data(n=20, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, 8, 8, 3)).astype(np.float32)
    return x, to_categorical(rng.integers(0, classes, n), classes)


def small_cnn(dropout=False, lr=0.05, loss="categorical_crossentropy"):
    layers = [Conv2D(4, (3, 3), activation="relu", input_shape=(8, 8, 3)), MaxPooling2D((2, 2)),
              Flatten(), Dense(3, activation="softmax")]
    if dropout:
        layers.insert(2, Dropout(0.3))
    model = Sequential(layers)
    model.compile(optimizer=SGD(lr=lr, momentum=0.9), loss=loss, metrics=["accuracy"])
    return model


def weights(model):
    return [minicnn.to_host(w).copy() for w in model.get_weights()]


def assert_same_weights(a, b):
    for p, q in zip(weights(a), weights(b)):
        assert_close(p, q)


class Batches(Sequence):
    """x and y in batches of ``size`` (the last one smaller); records what it was asked."""

    def __init__(self, x, y=None, size=4, order=None):
        self.x, self.y, self.size = x, y, size
        self.order = order  # batch i serves the samples of batch order[i]
        self.asked: list[int] = []
        self.ends = 0
        self.lock = threading.Lock()

    def __len__(self):
        return -(-len(self.x) // self.size)

    def __getitem__(self, i):
        with self.lock:
            self.asked.append(i)
        j = i if self.order is None else self.order[i]
        part = slice(j * self.size, (j + 1) * self.size)
        return self.x[part] if self.y is None else (self.x[part], self.y[part])

    def on_epoch_end(self):
        self.ends += 1


def loop_forever(x, y, size=4, counter=None):
    """Keras's kind of generator: batches in order, round and round."""
    while True:
        for start in range(0, len(x), size):
            if counter is not None:
                counter.append(start)
            yield x[start:start + size], y[start:start + size]


# ================================================================ the same steps as arrays
def test_fit_on_a_sequence_equals_fit_on_the_arrays_without_shuffle(backend):
    x, y = data()
    xv, yv = data(7, seed=1)
    minicnn.set_seed(3)
    on_arrays = small_cnn(dropout=True)
    ha = on_arrays.fit(x, y, batch_size=4, epochs=3, shuffle=False, verbose=0,
                       validation_data=(xv, yv))
    minicnn.set_seed(3)
    on_sequence = small_cnn(dropout=True)
    sequence = Batches(x, y)
    hs = on_sequence.fit(sequence, epochs=3, shuffle=False, verbose=0,
                         validation_data=Batches(xv, yv, size=3))
    assert_same_weights(on_sequence, on_arrays)
    assert on_sequence.optimizer.iterations == on_arrays.optimizer.iterations == 15
    assert set(hs.history) == set(ha.history)
    for key in ha.history:
        assert_close(hs.history[key], ha.history[key], rtol=1e-5, err_msg=key)
    assert sequence.asked == [0, 0, 1, 2, 3, 4] * 1 + [0, 1, 2, 3, 4] * 2  # first: the build


@pytest.mark.parametrize("workers", [0, 1, 3])
def test_fit_generator_with_steps_per_epoch_equals_fit_on_the_arrays(workers):
    x, y = data()
    minicnn.set_seed(3)
    on_arrays = small_cnn()
    on_arrays.fit(x, y, batch_size=4, epochs=3, shuffle=False, verbose=0)
    minicnn.set_seed(3)
    on_generator = small_cnn()
    pulled = []
    history = on_generator.fit_generator(loop_forever(x, y, counter=pulled), steps_per_epoch=5,
                                         epochs=3, verbose=0, workers=workers)
    assert_same_weights(on_generator, on_arrays)
    assert len(history.history["loss"]) == 3
    assert len(pulled) == 15  # read ahead, but never beyond the batches fit takes


def test_a_fractional_steps_per_epoch_rounds_up_as_keras_loop_does():
    # Keras 2.2.4's own docs: fit_generator(datagen.flow(x, y, batch_size=32),
    # steps_per_epoch=len(x_train) / 32); its loop runs `while steps_done < steps`.
    x, y = data(18)
    minicnn.set_seed(3)
    on_arrays = small_cnn()
    on_arrays.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0)  # 5 steps an epoch
    minicnn.set_seed(3)
    on_generator = small_cnn()
    pulled = []
    history = on_generator.fit_generator(loop_forever(x, y, counter=pulled),
                                         steps_per_epoch=len(x) / 4, epochs=2, verbose=0)
    assert on_generator.optimizer.iterations == 10 and len(pulled) == 10
    assert_same_weights(on_generator, on_arrays)
    assert len(history.history["loss"]) == 2
    # validation_steps and evaluate_generator's steps round up the same way
    sequence = Batches(x, y, size=4)
    on_generator.fit(loop_forever(x, y), steps_per_epoch=1.5, epochs=1, verbose=0,
                     validation_data=sequence, validation_steps=4.2)
    assert on_generator.optimizer.iterations == 12
    assert sequence.asked[1:] == [0, 1, 2, 3, 4]  # after the build's look at batch 0
    on_generator.evaluate_generator(sequence, steps=np.float64(2.5))
    assert sequence.asked[6:] == [0, 1, 2]


def test_a_generator_is_read_on_across_epochs_not_restarted():
    x, y = data(12)
    minicnn.set_seed(3)
    on_arrays = small_cnn()
    on_arrays.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)
    minicnn.set_seed(3)
    on_generator = small_cnn()
    # 3 epochs of one step each: batches 0, 1, 2 of the data, one per epoch
    on_generator.fit(loop_forever(x, y), steps_per_epoch=1, epochs=3, verbose=0)
    assert_same_weights(on_generator, on_arrays)


# ================================================================ shuffling a Sequence
def epochs_of(sequence, epochs, first_is_build=True):
    asked = sequence.asked[1:] if first_is_build else sequence.asked
    n = len(sequence)
    return [asked[e * n:(e + 1) * n] for e in range(epochs)]


def shuffled_run(seed, workers=1, epochs=3):
    x, y = data()
    minicnn.set_seed(seed)
    model = small_cnn()
    sequence = Batches(x, y)
    model.fit(sequence, epochs=epochs, verbose=0, workers=workers, max_queue_size=2)
    return model, sequence


def test_shuffle_reorders_a_sequences_batches_each_epoch_reproducibly(backend):
    model, sequence = shuffled_run(5)
    orders = epochs_of(sequence, 3)
    assert all(sorted(order) == [0, 1, 2, 3, 4] for order in orders)
    assert len({tuple(order) for order in orders}) == 3  # a new order every epoch
    again, sequence_again = shuffled_run(5)
    assert sequence_again.asked == sequence.asked  # the same seed: the same orders
    np.testing.assert_array_equal(np.concatenate([w.ravel() for w in weights(again)]),
                                  np.concatenate([w.ravel() for w in weights(model)]))
    _, other = shuffled_run(6)
    assert other.asked != sequence.asked


def test_the_recorded_shuffled_order_is_the_order_trained_on():
    model, sequence = shuffled_run(5, epochs=1)
    (order,) = epochs_of(sequence, 1)
    x, y = data()
    minicnn.set_seed(5)
    replay = small_cnn()
    replay.fit(Batches(x, y, order=order), epochs=1, shuffle=False, verbose=0)
    assert_same_weights(replay, model)


def test_read_ahead_threads_do_not_change_the_run():
    one, sequence = shuffled_run(5, workers=0)
    many, sequence_many = shuffled_run(5, workers=4)
    assert sorted(sequence_many.asked) == sorted(sequence.asked)
    np.testing.assert_array_equal(np.concatenate([w.ravel() for w in weights(many)]),
                                  np.concatenate([w.ravel() for w in weights(one)]))
    assert not [t for t in threading.enumerate() if t.name.startswith("minicnn-batches")]


def test_steps_per_epoch_below_the_length_takes_the_first_batches_of_each_order():
    x, y = data()
    minicnn.set_seed(5)
    sequence = Batches(x, y)
    model = small_cnn()
    history = model.fit(sequence, steps_per_epoch=2, epochs=3, verbose=0)
    assert model.optimizer.iterations == 6 and len(sequence.asked) == 1 + 6
    assert sequence.ends == 3


# ================================================================ on_epoch_end
class Events(Callback):
    def __init__(self, log):
        super().__init__()
        self.log = log

    def on_batch_end(self, batch, logs=None):
        self.log.append("batch")

    def on_epoch_end(self, epoch, logs=None):
        self.log.append(("epoch end", sorted(k for k in logs if k.startswith("val_"))))


class LoggingBatches(Batches):
    def __init__(self, log, *args, name="train", **kwargs):
        super().__init__(*args, **kwargs)
        self.log, self.name = log, name

    def on_epoch_end(self):
        super().on_epoch_end()
        self.log.append(f"{self.name} on_epoch_end")


def test_on_epoch_end_runs_once_after_every_pass():
    x, y = data(8)
    log: list = []
    sequence = LoggingBatches(log, x, y)
    validation = LoggingBatches(log, x, y, name="validation")
    small_cnn().fit(sequence, epochs=2, verbose=0, validation_data=validation,
                    callbacks=[Events(log)])
    val_keys = ["val_acc", "val_loss"]
    epoch = ["batch", "batch", "train on_epoch_end", "validation on_epoch_end",
             ("epoch end", val_keys)]
    assert log == epoch * 2
    assert sequence.ends == 2 and validation.ends == 2


# ================================================================ evaluate / predict
@pytest.mark.parametrize("workers", [0, 2])
def test_evaluate_generator_equals_evaluate(workers):
    x, y = data(19)  # batches of 4: the last one has 3 samples, and counts for 3
    model = small_cnn()
    model.fit(x, y, epochs=2, batch_size=5, verbose=0)
    loss, acc = model.evaluate(x, y, batch_size=19)
    sequence = Batches(x, y)
    g_loss, g_acc = model.evaluate_generator(sequence, workers=workers)
    assert_close(g_loss, loss, rtol=1e-5)
    assert g_acc == acc
    assert sequence.ends == 1
    p_loss, p_acc = model.evaluate_generator(loop_forever(x, y), steps=5, workers=workers)
    assert_close(p_loss, loss, rtol=1e-5)
    assert p_acc == acc
    # and against the loss written out: the mean over samples of -log p[true class]
    probs = model.predict(x).astype(np.float64)
    assert_close(g_loss, np.mean(-np.log(probs[np.arange(19), y.argmax(1)])), rtol=1e-5)


def test_evaluate_generator_without_metrics_returns_the_loss():
    x, y = data(8)
    model = Sequential([Flatten(input_shape=(8, 8, 3)), Dense(3, activation="softmax")])
    model.compile(SGD(), "categorical_crossentropy")
    assert_close(model.evaluate_generator(Batches(x, y)), model.evaluate(x, y), rtol=1e-5)


@pytest.mark.parametrize("workers", [0, 3])
def test_predict_generator_equals_predict(backend, workers):
    x, y = data(18)
    model = small_cnn()
    expected = model.predict(x, batch_size=18)
    assert_close(model.predict_generator(Batches(x, size=5), workers=workers), expected)
    assert_close(model.predict_generator(Batches(x, y, size=4), workers=workers), expected)
    assert_close(model.predict_generator(loop_forever(x, y, size=6), steps=3), expected)


def test_predict_generator_builds_the_model_on_the_first_batch():
    x, _ = data(6)
    model = Sequential([Flatten(), Dense(3, activation="softmax")])
    out = model.predict_generator(Batches(x, size=4))
    assert out.shape == (6, 3) and model.built and model.input_shape == (None, 8, 8, 3)


# ================================================================ validation
def test_validation_from_a_generator_equals_validation_from_arrays():
    x, y = data()
    xv, yv = data(10, seed=1)
    minicnn.set_seed(2)
    with_arrays = small_cnn().fit(x, y, batch_size=4, epochs=2, verbose=0,
                                  validation_data=(xv, yv))
    minicnn.set_seed(2)
    with_generator = small_cnn().fit(x, y, batch_size=4, epochs=2, verbose=0,
                                     validation_data=loop_forever(xv, yv, size=3),
                                     validation_steps=4)  # 3 + 3 + 3 + 1 samples: all of them
    for key in ("val_loss", "val_acc", "loss"):
        assert_close(with_generator.history[key], with_arrays.history[key], rtol=1e-5,
                     err_msg=key)


class ValKeys(Callback):
    def __init__(self):
        super().__init__()
        self.seen = []

    def on_epoch_end(self, epoch, logs=None):
        self.seen.append((epoch, "val_loss" in logs))


@pytest.mark.parametrize("freq,validated", [
    (1, [1, 2, 3, 4, 5]), (2, [2, 4]), (3, [3]), ([1, 4], [1, 4]), ((5,), [5]), ([], [])])
@pytest.mark.parametrize("source", ["arrays", "sequence"])
def test_validation_freq(freq, validated, source):
    x, y = data(8)
    model, keys = small_cnn(), ValKeys()
    if source == "arrays":
        history = model.fit(x, y, batch_size=4, epochs=5, verbose=0, validation_data=(x, y),
                            validation_freq=freq, callbacks=[keys])
    else:
        validation = Batches(x, y)
        history = model.fit(Batches(x, y), epochs=5, verbose=0, validation_data=validation,
                            validation_freq=freq, callbacks=[keys])
        assert validation.ends == len(validated)
    assert keys.seen == [(e, e + 1 in validated) for e in range(5)]
    assert len(history.history["loss"]) == 5
    assert len(history.history.get("val_loss", [])) == len(validated)
    assert len(history.history.get("val_acc", [])) == len(validated)


def test_validation_freq_counts_epochs_from_initial_epoch_on():
    x, y = data(8)
    keys = ValKeys()
    small_cnn().fit(x, y, batch_size=4, epochs=4, initial_epoch=1, verbose=0,
                    validation_data=(x, y), validation_freq=2, callbacks=[keys])
    assert keys.seen == [(1, True), (2, False), (3, True)]


def test_callbacks_on_val_loss_skip_the_epochs_without_validation(tmp_path):
    x, y = data(8)
    stopper = EarlyStopping(monitor="val_loss", patience=5)
    saver = ModelCheckpoint(str(tmp_path / "best.npz"), monitor="val_loss", save_best_only=True,
                            save_weights_only=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        small_cnn().fit(x, y, batch_size=4, epochs=4, verbose=0, validation_data=(x, y),
                        validation_freq=2, callbacks=[stopper, saver])
    messages = [str(w.message) for w in caught]
    assert sum("Early stopping conditioned on metric `val_loss`" in m for m in messages) == 2
    assert sum("Can save best model only with val_loss available" in m for m in messages) == 2
    assert os.path.exists(tmp_path / "best.npz")


# ================================================================ the loop's other parts
def test_progress_bar_counts_steps_for_a_generator(capsys):
    x, y = data(10)
    small_cnn().fit_generator(loop_forever(x, y, size=3), steps_per_epoch=4, epochs=2,
                              verbose=2)
    out = capsys.readouterr().out
    assert out.count("4/4 [==============================]") == 2
    assert "10/10" not in out


def test_callbacks_get_keras_generator_params():
    class Params(Callback):
        def on_train_begin(self, logs=None):
            self.got = dict(self.params)

    x, y = data(8)
    params = Params()
    small_cnn().fit(Batches(x, y), epochs=2, verbose=0, callbacks=[params])
    assert params.got["steps"] == 2 and params.got["epochs"] == 2
    assert "samples" not in params.got and "batch_size" not in params.got


def test_a_batch_callbacks_stop_ends_the_generator_run_after_that_step():
    class StopAtStep(Callback):
        def on_batch_end(self, batch, logs=None):
            if batch == 1:
                self.model.stop_training = True

    x, y = data()
    pulled = []
    model = small_cnn()
    history = model.fit(loop_forever(x, y, counter=pulled), steps_per_epoch=5, epochs=3,
                        verbose=0, workers=0, callbacks=[StopAtStep()])
    assert model.optimizer.iterations == 2 and len(history.history["loss"]) == 1
    assert len(pulled) == 2


def test_divergence_in_a_generator_run_names_epoch_and_step():
    model = Sequential([Flatten(input_shape=(8, 8, 3)), Dense(3)])
    model.compile(optimizer=SGD(lr=1e8), loss="mean_squared_error")
    x, y = data()
    with pytest.raises(TrainingDiverged, match=r"training diverged in epoch \d+, step \d+/5"):
        model.fit_generator(loop_forever(x, y * 100), steps_per_epoch=5, epochs=20, verbose=0)
    assert all(np.isfinite(w).all() for w in weights(model))
    assert not [t for t in threading.enumerate() if t.name.startswith("minicnn-batches")]


@pytest.fixture
def python_sigint_handler():
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_sigint_stops_a_generator_run_after_the_step(tmp_path, python_sigint_handler):
    class Interrupt(Callback):
        def on_batch_end(self, batch, logs=None):
            if batch == 2:
                os.kill(os.getpid(), signal.SIGINT)

    x, y = data()
    model = small_cnn()
    path = tmp_path / "run.npz"
    with pytest.raises(TrainingInterrupted, match=r"SIGINT received in epoch 1 after step 3/5"):
        model.fit(Batches(x, y), epochs=3, verbose=0, workers=2, checkpoint=path,
                  callbacks=[Interrupt()])
    assert model.optimizer.iterations == 3
    assert not [t for t in threading.enumerate() if t.name.startswith("minicnn-batches")]


# ================================================================ checkpoints
def test_resuming_a_sequence_run_matches_the_uninterrupted_run(tmp_path):
    path = tmp_path / "run.npz"
    x, y = data()

    def run(epochs, resume=False):
        minicnn.set_seed(7)
        model = small_cnn(dropout=True)
        history = model.fit(Batches(x, y), epochs=epochs, verbose=0,
                            validation_data=Batches(x, y, size=7), validation_freq=2,
                            checkpoint=path if epochs < 5 or resume else None, resume=resume)
        return model, history

    full, full_history = run(5)
    run(3)  # "stopped" after epoch 3
    resumed, resumed_history = run(5, resume=True)
    for a, b in zip(weights(resumed), weights(full)):
        np.testing.assert_array_equal(a, b)  # the same steps in the same order
    assert resumed_history.history == full_history.history
    assert len(resumed_history.history["val_loss"]) == 2  # epochs 2 and 4
    assert resumed_history.resumed_epochs == 3


def test_resuming_a_generator_run_continues_at_the_next_epoch(tmp_path):
    path = tmp_path / "run.npz"
    x, y = data()
    small_cnn().fit_generator(loop_forever(x, y), steps_per_epoch=5, epochs=2, verbose=0,
                              checkpoint=path)
    model, pulled = small_cnn(), []
    history = model.fit_generator(loop_forever(x, y, counter=pulled), steps_per_epoch=5,
                                  epochs=3, verbose=0, checkpoint=path, resume=True)
    assert model.optimizer.iterations == 15  # 10 restored, 5 run now
    assert len(history.history["loss"]) == 3 and history.resumed_epochs == 2
    assert len(pulled) == 5  # only the third epoch read the (new) generator


# ================================================================ bad input
class BadAt(Batches):
    def __init__(self, x, y, bad_index, batch):
        super().__init__(x, y)
        self.bad_index, self.batch = bad_index, batch

    def __getitem__(self, i):
        return self.batch if i == self.bad_index else super().__getitem__(i)


def test_a_bad_sequence_batch_is_named_by_its_index():
    x, y = data()
    model = small_cnn()
    bad = BadAt(x, y, 3, (x[:4, :, :4], y[:4]))
    with pytest.raises(ValueError, match=r"fit, epoch 1, BadAt\[3\]: .*\(4, 8, 4, 3\)"):
        model.fit(bad, epochs=1, shuffle=False, verbose=0)
    assert model.optimizer.iterations == 3


def test_a_bad_first_batch_is_refused_before_any_step():
    x, y = data()
    model = small_cnn()
    with pytest.raises(ValueError, match=r"fit, BadAt\[0\]: x has 4 samples but y has 3"):
        model.fit(BadAt(x, y, 0, (x[:4], y[:3])), epochs=1, verbose=0)
    with pytest.raises(ValueError, match=r"fit \(validation_data\), generator batch 0: .*NaN"):
        model.fit(Batches(x, y), verbose=0,
                  validation_data=iter([(np.full_like(x[:2], np.nan), y[:2])]),
                  validation_steps=1)
    assert model.optimizer.iterations == 0


def test_a_bad_generator_batch_is_named_by_epoch_and_batch():
    x, y = data()

    def batches():
        yield from [(x[:4], y[:4])] * 7
        while True:
            yield x[:4], y[:4, :2]

    model = small_cnn()
    with pytest.raises(ValueError, match=r"fit, epoch 2, generator batch 2: "
                                         r"categorical_crossentropy expects targets of shape"):
        model.fit_generator(batches(), steps_per_epoch=5, epochs=2, verbose=0)
    assert model.optimizer.iterations == 7


def test_sample_weights_and_class_weights_from_a_generator():
    """Batches (x, y, sample_weight) train as fit(x, y, sample_weight=...) does, and
    class_weight weights batches (x, y) as it weights arrays."""
    x, y = data(8)
    w = np.linspace(0, 2, 8)
    def seeded():
        minicnn.set_seed(0)
        return small_cnn()

    by_arrays, by_batches, by_classes, by_labels = (seeded() for _ in range(4))
    by_arrays.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0, sample_weight=w)
    by_batches.fit_generator(iter([(x[:4], y[:4], w[:4]), (x[4:], y[4:], w[4:])] * 2),
                             steps_per_epoch=2, epochs=2, verbose=0)
    assert_same_weights(by_arrays, by_batches)
    class_weight = {0: 0.5, 1: 2.0, 2: 1.0}
    by_classes.fit(Batches(x, y), epochs=1, shuffle=False, verbose=0, class_weight=class_weight)
    by_labels.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0,
                  sample_weight=np.array([class_weight[c] for c in y.argmax(axis=1)]))
    assert_same_weights(by_classes, by_labels)
    loss = by_arrays.evaluate(x, y, batch_size=4, sample_weight=w)
    assert loss == pytest.approx(by_arrays.evaluate_generator(
        iter([(x[:4], y[:4], w[:4]), (x[4:], y[4:], w[4:])]), steps=2), rel=1e-6)


@pytest.mark.parametrize("call", ["fit", "fit_generator", "evaluate_generator",
                                  "predict_generator", "validation"])
def test_a_generator_needs_its_number_of_steps(call):
    x, y = data(8)
    model, gen = small_cnn(), loop_forever(x, y)
    pattern = r"a Python generator has no length: give (steps_per_epoch|steps|validation_steps)"
    with pytest.raises(ValueError, match=pattern):
        if call == "fit":
            model.fit(gen, verbose=0)
        elif call == "fit_generator":
            model.fit_generator(gen, verbose=0)
        elif call == "evaluate_generator":
            model.evaluate_generator(gen)
        elif call == "predict_generator":
            model.predict_generator(gen)
        else:
            model.fit(x, y, verbose=0, validation_data=gen)
    assert model.optimizer.iterations == 0


@pytest.mark.parametrize("kwargs,pattern", [
    (dict(use_multiprocessing=True), r"use_multiprocessing=True is not supported"),
    (dict(workers=-1), r"workers must be an int >= 0, got -1"),
    (dict(max_queue_size=0), r"max_queue_size must be an int >= 1, got 0"),
    (dict(steps_per_epoch=6), r"steps_per_epoch=6 is more than the 5 batches"),
    (dict(steps_per_epoch=0), r"steps_per_epoch must be a positive number of batches, got 0"),
    (dict(steps_per_epoch=float("nan")), r"steps_per_epoch must be a positive number of batches"),
    (dict(steps_per_epoch=float("inf")), r"steps_per_epoch must be a positive number of batches"),
    (dict(steps_per_epoch=-0.5), r"steps_per_epoch must be a positive number of batches"),
    (dict(steps_per_epoch=True), r"steps_per_epoch must be a positive number of batches"),
    (dict(steps_per_epoch=5.01), r"steps_per_epoch=6 is more than the 5 batches"),
    (dict(batch_size=4), r"leave batch_size out"),
    (dict(y=np.zeros(3)), r"leave y out"),
    (dict(validation_split=0.2), r"validation_split cannot split a generator"),
    (dict(class_weight={0: 2.0}), r"class_weight must contain all classes in the data"),
], ids=["multiprocessing", "workers", "queue", "steps>len", "steps=0", "steps=nan", "steps=inf",
        "steps<0", "steps=True", "steps=5.01", "batch_size", "y",
        "validation_split", "class_weight"])
def test_fit_on_a_sequence_refuses_before_the_first_step(kwargs, pattern):
    x, y = data()
    model = small_cnn()
    with pytest.raises(ValueError, match=pattern):
        model.fit(Batches(x, y), verbose=0, **kwargs)
    assert model.optimizer.iterations == 0


def test_evaluate_and_predict_generator_refuse_multiprocessing():
    x, y = data(8)
    model = small_cnn()
    with pytest.raises(ValueError, match=r"evaluate_generator: use_multiprocessing=True"):
        model.evaluate_generator(Batches(x, y), use_multiprocessing=True)
    with pytest.raises(ValueError, match=r"predict_generator: use_multiprocessing=True"):
        model.predict_generator(Batches(x), use_multiprocessing=True)


def test_a_generator_that_runs_dry_is_a_clear_error():
    x, y = data(8)
    model = small_cnn()
    with pytest.raises(ValueError, match=r"the generator stopped after 2 batches; fit takes 2 "
                                         r"batches from it every epoch, so it must loop forever"):
        model.fit(iter([(x[:4], y[:4]), (x[4:], y[4:])]), steps_per_epoch=2, epochs=2,
                  verbose=0)
    assert model.optimizer.iterations == 2


def test_fit_generator_refuses_arrays_and_batches_that_are_not_pairs():
    x, y = data(8)
    with pytest.raises(TypeError, match=r"fit_generator: expected a Python generator or a "
                                        r"minicnn.utils.Sequence, got ndarray"):
        small_cnn().fit_generator(x, steps_per_epoch=1)
    with pytest.raises(ValueError, match=r"must give batches \(x, y\), got a ndarray"):
        small_cnn().fit_generator(iter([x]), steps_per_epoch=1, verbose=0)
    with pytest.raises(ValueError, match=r"fit: y is missing"):
        small_cnn().fit(x, verbose=0)


def test_image_generator_flow_with_sample_weight_trains_weighted():
    """ImageDataGenerator.flow(x, y, sample_weight=w) gives (x, y, w) batches: without
    augmentation, the same steps as fit(x, y, sample_weight=w)."""
    from minicnn.preprocessing.image import ImageDataGenerator
    x, y = data(8)
    w = np.linspace(0.5, 2, 8)
    minicnn.set_seed(0)
    by_flow = small_cnn()
    minicnn.set_seed(0)
    by_arrays = small_cnn()
    flow = ImageDataGenerator().flow(x, y, sample_weight=w, batch_size=4, shuffle=False)
    by_flow.fit_generator(flow, epochs=2, shuffle=False, verbose=0)
    by_arrays.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0, sample_weight=w)
    assert_same_weights(by_flow, by_arrays)


def test_evaluating_a_stream_reads_its_sums_back_once(monkeypatch):
    """Validation and evaluate_generator add the loss and metric sums up on the device
    and read them once at the end (``Sequential.logs``), not once per batch."""
    x, y = data()
    model = small_cnn()
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    expected = model.evaluate(x, y, batch_size=4)
    reads = []
    original = Sequential.logs

    def counted(self, total_loss, totals, count):
        reads.append(count)
        return original(self, total_loss, totals, count)

    monkeypatch.setattr(Sequential, "logs", counted)
    got = model.evaluate_generator(Batches(x, y, size=4), workers=0)
    assert reads == [20]  # one read of all 5 batches' 20 samples
    assert_close(np.array(got), np.array(expected))
    reads.clear()
    model.fit(x, y, batch_size=10, epochs=1, verbose=0, validation_data=Batches(x, y, size=4))
    assert reads.count(20) == 2  # the epoch's training logs, and validation's one read


def test_a_streams_batches_are_checked_on_the_read_ahead_thread():
    x, y = data()
    model = small_cnn()
    threads = []
    check = model._checked_batch

    def recording(batch, where, class_weight=None):
        threads.append(threading.current_thread().name)
        return check(batch, where, class_weight)

    model._checked_batch = recording
    model.fit(Batches(x, y), epochs=2, verbose=0, workers=1)
    assert threads[0] == threading.current_thread().name  # the build's look at batch 0
    assert len(threads) == 11
    assert all(name.startswith("minicnn-batches") for name in threads[1:]), threads
    threads.clear()
    model.fit(Batches(x, y), epochs=1, verbose=0, workers=0)  # no read-ahead: in the loop
    assert set(threads) == {threading.current_thread().name}


class DeviceRecorder:
    """Stands in for backend.device_context: records which thread entered which device."""

    def __init__(self):
        self.entered, self.lock = [], threading.Lock()

    def __call__(self, device):
        recorder = self

        class Context:
            def __enter__(self):
                with recorder.lock:
                    recorder.entered.append((threading.current_thread().name, device))

            def __exit__(self, *exc):
                return False

        return Context()


def test_read_ahead_threads_fetch_on_the_callers_device(monkeypatch):
    """CuPy's current device is per thread: each pool fetch runs inside
    backend.device_context(the device current where fit was called)."""
    from minicnn import backend  # noqa: PLC0415

    monkeypatch.setattr(backend, "current_device", lambda: 3)
    recorder = DeviceRecorder()
    monkeypatch.setattr(backend, "device_context", recorder)
    x, y = data()
    sequence = Batches(x, y)
    small_cnn().fit(sequence, epochs=2, verbose=0, workers=2)
    assert len(recorder.entered) == 10  # every pooled fetch: 5 batches, 2 epochs
    assert {device for _, device in recorder.entered} == {3}
    assert all(name.startswith("minicnn-batches") for name, _ in recorder.entered)


def test_no_device_to_switch_to_without_a_gpu():
    from minicnn import backend  # noqa: PLC0415

    assert backend.current_device() is None
    with backend.device_context(None):
        pass


@pytest.mark.skipif(not minicnn.backend.cupy_available(), reason="CuPy or a GPU is not available")
def test_read_ahead_allocates_on_the_callers_gpu():
    import cupy  # noqa: PLC0415

    if cupy.cuda.runtime.getDeviceCount() < 2:
        pytest.skip("needs two GPUs to tell device 1 from the pool threads' default 0")
    devices = []

    class OnDevice(Batches):
        def __getitem__(self, i):
            xb, yb = super().__getitem__(i)
            devices.append(cupy.cuda.runtime.getDevice())
            return cupy.asarray(xb), cupy.asarray(yb)

    x, y = data()
    with minicnn.use_backend("cupy"), cupy.cuda.Device(1):
        model = small_cnn()
        model.fit(OnDevice(x, y), epochs=1, verbose=0, workers=2)
        assert model.layers[0].params["kernel"].device.id == 1
    assert set(devices) == {1}
