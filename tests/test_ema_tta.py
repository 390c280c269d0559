"""The ExponentialMovingAverage callback against a training loop that averages by hand,
and predict_tta (and predict_tta_levels) against a per-image loop reference (mirror,
reflect padding, crops)."""
from __future__ import annotations

import numpy as np
import pytest

import minicnn
from minicnn.callbacks import ExponentialMovingAverage
from minicnn.layers import BatchNormalization, Conv2D, Dense, Flatten
from minicnn.models import Sequential
from minicnn.optimizers import SGD
from minicnn.preprocessing.tta import predict_tta, predict_tta_levels

from conftest import assert_close


def small_model():
    minicnn.set_seed(0)
    model = Sequential([Conv2D(3, 3, input_shape=(6, 5, 2), activation="relu"),
                        BatchNormalization(momentum=0.6), Flatten(), Dense(4)])
    model.compile(optimizer=SGD(lr=0.05, momentum=0.8, nesterov=True),
                  loss="mean_squared_error")
    return model


def data(n=24):
    rng = np.random.default_rng(0)
    return (rng.standard_normal((n, 6, 5, 2)).astype(np.float32),
            rng.standard_normal((n, 4)).astype(np.float32))


@pytest.mark.parametrize("momentum,every,overwrite", [
    (0.9, 1, None),                                      # tf.keras's default use
    (lambda t: 0.95 ** 2 * (t / 12) ** 3, 2, 2),         # the recipe's lookahead
    (0.5, 2, 3)])
def test_the_average_matches_a_loop(momentum, every, overwrite):
    x, y = data()
    epochs, batch = 2, 4  # 12 updates
    model = small_model()
    ema = ExponentialMovingAverage(momentum, update_frequency=every, overwrite_frequency=overwrite)
    model.fit(x, y, batch_size=batch, epochs=epochs, shuffle=False, verbose=0, callbacks=[ema])

    loop = small_model()
    average = [w.astype(np.float64) for w in loop.get_weights()]
    t = 0
    for _ in range(epochs):
        for i in range(0, len(x), batch):
            loop.train_on_batch(x[i:i + batch], y[i:i + batch])
            t += 1
            if t % every == 0:
                m = momentum(t) if callable(momentum) else momentum
                average = [m * e + (1 - m) * w for e, w in zip(average, loop.get_weights())]
            if overwrite and t % overwrite == 0:
                loop.set_weights([e.astype(np.float32) for e in average])
    loop.set_weights([e.astype(np.float32) for e in average])  # at the end of training
    names = [f"{l.name}/{n}" for l in model.layers for n in l.params]
    assert any("moving_mean" in n for n in names)  # BatchNormalization's statistics averaged too
    for name, got, want in zip(names, model.get_weights(), loop.get_weights()):
        assert_close(got, want, rtol=1e-4, err_msg=name)


def test_trainable_only_leaves_the_moving_statistics_alone():
    x, y = data(8)
    model = small_model()
    model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)
    bn = model.layers[1]
    trained = {n: minicnn.to_host(bn.params[n]).copy() for n in ("moving_mean", "moving_variance")}
    ema = ExponentialMovingAverage(1.0, include_non_trainable=False)  # m = 1: e never moves
    start = model.layers[0].get_weights()
    model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0, callbacks=[ema])
    for a, b in zip(model.layers[0].get_weights(), start):  # trained weights pulled back
        np.testing.assert_array_equal(a, b)
    assert not np.allclose(minicnn.to_host(bn.params["moving_mean"]), trained["moving_mean"])


@pytest.mark.parametrize("make,pattern", [
    (lambda: ExponentialMovingAverage(1.5), r"momentum must be a number in \[0, 1\]"),
    (lambda: ExponentialMovingAverage(0.9, update_frequency=0), "update_frequency must be >= 1"),
    (lambda: ExponentialMovingAverage(0.9, overwrite_frequency=0), "overwrite_frequency"),
])
def test_bad_ema_arguments_are_named(make, pattern):
    with pytest.raises(ValueError, match=pattern):
        make()


# ---------------------------------------------------------------- test-time augmentation
def reflect(i, n):
    return -i if i < 0 else 2 * (n - 1) - i if i >= n else i


def shifted(img, dy, dx):
    """img moved so that output (r, c) = img[reflect(r + dy), reflect(c + dx)]."""
    h, w, _ = img.shape
    return np.array([[img[reflect(r + dy, h), reflect(c + dx, w)] for c in range(w)]
                     for r in range(h)])


def mirrored(img):
    h, w, _ = img.shape
    return np.array([[img[r, w - 1 - c] for c in range(w)] for r in range(h)])


def naive_tta(model, x, flip, s):
    outs = []
    for img in x:
        def f(im):
            return model.predict(im[None], batch_size=1)[0].astype(np.float64)

        def mirror(im):
            return 0.5 * (f(im) + f(mirrored(im))) if flip else f(im)
        out = mirror(img)
        if s:
            out = 0.5 * out + 0.25 * (mirror(shifted(img, -s, -s)) + mirror(shifted(img, s, s)))
        outs.append(out)
    return np.array(outs)


@pytest.mark.parametrize("flip,translate", [(True, 1), (True, 0), (False, 2), (True, 2)])
def test_predict_tta_matches_a_loop(backend, flip, translate):
    model = small_model()
    x = data(5)[0]
    got = predict_tta(model, minicnn.to_device(x), batch_size=2,
                      flip=flip, translate=translate)
    assert got.shape == (5, 4) and got.dtype == np.float32
    assert_close(got, naive_tta(model, x, flip, translate).astype(np.float32), rtol=1e-4)


@pytest.mark.parametrize("translate", [1, 2, 0])
def test_the_three_levels_match_the_loop_from_one_set_of_passes(backend, translate):
    model = small_model()
    x = data(5)[0]
    calls = []
    predict = model.predict
    model.predict = lambda images, batch_size=None: calls.append(len(images)) or predict(
        images, batch_size=batch_size)
    levels = predict_tta_levels(model, minicnn.to_device(x), batch_size=2, translate=translate)
    model.predict = predict
    assert calls == [5] * (6 if translate else 2)  # f(x), f(x'), then 2 views mirrored
    for got, flip, s in zip(levels, (False, True, True), (0, 0, translate)):
        assert got.shape == (5, 4) and got.dtype == np.float32
        assert_close(got, naive_tta(model, x, flip, s).astype(np.float32), rtol=1e-4)


def test_the_levels_are_what_predict_and_predict_tta_return():
    model = small_model()
    x = data(4)[0]
    plain, mirror, full = predict_tta_levels(model, x, translate=1)
    assert_close(plain, model.predict(x), rtol=1e-6)
    assert_close(mirror, predict_tta(model, x, flip=True, translate=0), rtol=1e-6)
    assert_close(full, predict_tta(model, x, flip=True, translate=1), rtol=1e-6)


def test_no_flip_no_translation_is_predict():
    model = small_model()
    x = data(3)[0]
    np.testing.assert_array_equal(predict_tta(model, x, flip=False, translate=0), model.predict(x))


@pytest.mark.parametrize("kwargs,pattern", [
    ({"x": np.zeros((2, 6, 5))}, r"predict_tta: expected images of shape \(N, H, W, C\)"),
    ({"translate": -1}, "translate must be a whole number"),
    ({"translate": 5}, "must be smaller than the images' height and width"),
    ({"flip": "yes"}, "flip must be True or False")])
def test_bad_tta_arguments_are_named(kwargs, pattern):
    model = small_model()
    arguments = {"x": data(2)[0], **kwargs}
    with pytest.raises(ValueError, match=pattern):
        predict_tta(model, **arguments)
    if "flip" not in kwargs:
        with pytest.raises(ValueError, match=pattern.replace("predict_tta", "predict_tta_levels")):
            predict_tta_levels(model, **arguments)
