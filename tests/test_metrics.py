"""Keras 2.2.4's metrics: how 'accuracy' resolves, the log names, values against loops
written here, custom metric functions, and the epoch's sums kept on the device."""
from __future__ import annotations

import numpy as np
import pytest

import minicnn
from minicnn import metrics
from minicnn.layers import Dense
from minicnn.models import Sequential
from minicnn.optimizers import SGD
from minicnn.utils import to_categorical

from conftest import assert_close


def model_with(units, activation, loss, metric_list, seed=0):
    minicnn.set_seed(seed)
    model = Sequential([Dense(5, activation="tanh", input_shape=(4,)),
                        Dense(units, activation=activation)])
    model.compile(SGD(lr=0.1), loss, metrics=metric_list)
    return model


@pytest.mark.parametrize("units,activation,loss,expected", [
    (3, "softmax", "categorical_crossentropy", "categorical_accuracy"),
    (3, "softmax", "sparse_categorical_crossentropy", "sparse_categorical_accuracy"),
    (3, "sigmoid", "binary_crossentropy", "binary_accuracy"),
    (1, "sigmoid", "binary_crossentropy", "binary_accuracy"),
    (1, "linear", "mse", "binary_accuracy"),
    (3, "linear", "mse", "categorical_accuracy"),
])
def test_accuracy_resolves_as_keras(units, activation, loss, expected):
    model = model_with(units, activation, loss, ["accuracy"])
    assert model.metrics_names == ["loss", "acc"]
    assert model.metric_functions[0].resolve(model.loss, units) is getattr(metrics, expected)


def accuracy_reference(kind, y, p):
    """Per-sample accuracies, one loop per kind."""
    out = []
    for t_row, p_row in zip(y.tolist(), p.tolist()):
        if kind == "binary":
            out.append(np.mean([float(t == round(q)) for t, q in zip(t_row, p_row)]))
        elif kind == "sparse":
            out.append(float(t_row[0] == max(range(len(p_row)), key=p_row.__getitem__)))
        else:
            out.append(float(max(range(len(t_row)), key=t_row.__getitem__)
                             == max(range(len(p_row)), key=p_row.__getitem__)))
    return np.array(out)


def top_k_reference(labels, p, k):
    return np.array([float(sum(v > row[c] for v in row) < k)
                     for c, row in zip(labels.tolist(), p.tolist())])


def test_values_of_every_builtin_metric(backend):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((10, 4))
    labels = rng.integers(0, 6, 10)
    y = to_categorical(labels, 6)
    model = model_with(6, "softmax", "categorical_crossentropy",
                       ["acc", "top_k_categorical_accuracy", "mae", "mse",
                        "categorical_crossentropy", "kld", "cosine"])
    assert model.metrics_names == ["loss", "acc", "top_k_categorical_accuracy",
                                   "mean_absolute_error", "mean_squared_error",
                                   "categorical_crossentropy", "kullback_leibler_divergence",
                                   "cosine_proximity"]
    p = model.predict(x).astype(np.float64)
    result = model.evaluate(x, y, batch_size=3)  # batches of 3, 3, 3 and 1
    expected = [
        np.mean(accuracy_reference("categorical", y, p)),
        np.mean(top_k_reference(labels, p, 5)),
        np.mean(np.abs(p - y)), np.mean((p - y) ** 2),
        np.mean(-np.log(np.clip(p[np.arange(10), labels], 1e-7, 1 - 1e-7))),
        np.mean(np.sum(np.clip(y, 1e-7, 1) * np.log(np.clip(y, 1e-7, 1) / np.clip(p, 1e-7, 1)),
                       axis=1)),
        np.mean(-p[np.arange(10), labels] / np.linalg.norm(p, axis=1)),
    ]
    assert result[0] == pytest.approx(expected[4], rel=1e-5)  # the loss is the crossentropy
    assert_close(result[1:], expected, rtol=1e-5)


def test_sparse_metrics(backend):
    rng = np.random.default_rng(1)
    x, labels = rng.standard_normal((9, 4)), rng.integers(0, 7, 9)
    model = model_with(7, "softmax", "sparse_categorical_crossentropy",
                       ["accuracy", "sparse_top_k_categorical_accuracy",
                        "sparse_categorical_crossentropy"])
    p = model.predict(x).astype(np.float64)
    loss, acc, top5, ce = model.evaluate(x, labels, batch_size=4)
    assert_close(acc, np.mean(accuracy_reference("sparse", labels.reshape(-1, 1), p)))
    assert_close(top5, np.mean(top_k_reference(labels, p, 5)))
    assert_close(ce, loss, rtol=1e-5)


def test_binary_accuracy_and_crossentropy_metric(backend):
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((8, 4)), rng.integers(0, 2, (8, 3)).astype("float32")
    model = model_with(3, "sigmoid", "binary_crossentropy", ["acc", "ce"])
    assert model.metrics_names == ["loss", "acc", "ce"]
    p = model.predict(x).astype(np.float64)
    loss, acc, ce = model.evaluate(x, y)
    assert_close(acc, np.mean(accuracy_reference("binary", y, p)))
    assert_close(ce, loss, rtol=1e-5)  # the fused loss and the metric on probabilities


def test_top_k_counts_ties_as_in():
    """TensorFlow's in_top_k: a label whose score ties the k-th largest is in."""
    p = minicnn.to_device(np.array([[0.1, 0.3, 0.3, 0.3], [0.4, 0.3, 0.2, 0.1]]))
    labels = minicnn.to_device(np.array([[3.0], [3.0]]))
    values = metrics.sparse_top_k_categorical_accuracy(labels, p, k=1)
    np.testing.assert_array_equal(minicnn.to_host(values), [1.0, 0.0])


def test_custom_metrics_per_sample_and_scalar(backend):
    def mean_pred(y_true, y_pred):  # Keras's docs' example: one value for the batch
        return y_pred.mean()

    def max_error(y_true, y_pred):  # one value per sample
        xp = minicnn.backend.get_array_module(y_pred)
        return xp.abs(y_true - y_pred).max(axis=-1)

    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((7, 4)), rng.standard_normal((7, 2))
    model = model_with(2, "linear", "mse", [mean_pred, max_error])
    assert model.metrics_names == ["loss", "mean_pred", "max_error"]
    p = model.predict(x).astype(np.float64)
    _, batch_means, errors = model.evaluate(x, y, batch_size=4)
    # Keras averages the batch values weighted by the batch sizes
    assert_close(batch_means, (4 * p[:4].mean() + 3 * p[4:].mean()) / 7, rtol=1e-5)
    assert_close(errors, np.mean(np.abs(y - p).max(axis=1)), rtol=1e-5)


def test_history_and_callbacks_use_keras_names():
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((8, 4)), to_categorical(rng.integers(0, 3, 8), 3)
    model = model_with(3, "softmax", "categorical_crossentropy", ["acc", "mae"])
    seen = {}

    class Spy(minicnn.callbacks.Callback):
        def on_train_begin(self, logs=None):
            seen["metrics"] = self.params["metrics"]

    history = model.fit(x, y, batch_size=4, epochs=2, verbose=0, validation_data=(x, y),
                        callbacks=[Spy()])
    assert seen["metrics"] == ["loss", "acc", "mean_absolute_error", "val_loss", "val_acc",
                               "val_mean_absolute_error"]
    assert set(history.history) == {"loss", "acc", "accuracy", "mean_absolute_error",
                                    "val_loss", "val_acc", "val_accuracy",
                                    "val_mean_absolute_error"}
    assert history.history["acc"] is history.history["accuracy"]
    last = model.evaluate(x, y)
    assert history.history["val_mean_absolute_error"][-1] == pytest.approx(last[2], rel=1e-5)
    assert len(model.train_on_batch(x, y)) == len(model.test_on_batch(x, y)) == 3


def test_metric_sums_stay_on_the_device_until_the_epoch_ends(monkeypatch):
    """One host read of all the metrics per epoch (none per step): a step returns the
    batch's sums as a device array of the metrics' length, added up over the epoch."""
    rng = np.random.default_rng(5)
    x, y = rng.standard_normal((12, 4)), to_categorical(rng.integers(0, 3, 12), 3)
    minicnn.set_backend("strict")  # (the conftest fixture sets numpy back)
    model = model_with(3, "softmax", "categorical_crossentropy", ["acc", "mse", "mae"])
    reads = []
    original = minicnn.backend.to_host
    monkeypatch.setattr(minicnn.backend, "to_host",
                        lambda a, *args, **kw: reads.append(tuple(a.shape)) or original(a, *args,
                                                                                     **kw))
    model.fit(x, y, batch_size=3, epochs=1, verbose=0)
    assert reads.count((3,)) == 1  # four steps, one read of the three sums


@pytest.mark.parametrize("metric_list,error,pattern", [
    (["f1"], ValueError, r"Sequential.compile: unknown metric 'f1': expected 'accuracy'"),
    (["acc", "accuracy"], ValueError, r"two metrics would both be logged as 'acc'"),
    (["mse", "mean_squared_error"], ValueError, r"both be logged as 'mean_squared_error'"),
    ("accuracy", TypeError, r"metrics must be a list, such as \['accuracy'\], got 'accuracy'"),
    ([3], ValueError, r"expected a metric name or a function"),
])
def test_bad_metrics_are_refused(metric_list, error, pattern):
    with pytest.raises(error, match=pattern):
        model_with(3, "softmax", "categorical_crossentropy", metric_list)


def test_history_as_dict_keeps_metrics_whose_names_end_in_accuracy():
    rng = np.random.default_rng(6)
    x, y = rng.standard_normal((6, 4)), rng.integers(0, 2, (6, 1)).astype("float32")
    model = model_with(1, "sigmoid", "binary_crossentropy", ["acc", "binary_accuracy"])
    history = model.fit(x, y, batch_size=3, epochs=1, verbose=0)
    assert set(history.as_dict()) == {"loss", "acc", "binary_accuracy"}
    assert history.history["acc"] == history.history["binary_accuracy"]


def test_a_saved_model_finds_its_metric_functions_in_custom_objects(tmp_path):
    from minicnn.models import load_model

    def max_error(y_true, y_pred):
        return abs(y_true - y_pred).max(axis=-1)

    rng = np.random.default_rng(7)
    x, y = rng.standard_normal((5, 4)), rng.standard_normal((5, 2))
    model = model_with(2, "linear", "mse", ["mae", max_error])
    model.save(tmp_path / "m.npz")
    loaded = load_model(tmp_path / "m.npz", custom_objects={"max_error": max_error})
    assert loaded.metrics_names == ["loss", "mean_absolute_error", "max_error"]
    assert_close(loaded.evaluate(x, y), model.evaluate(x, y))
