"""The fast ops against the plain reference ops, and the switch between them.

``minicnn.set_ops("reference")`` runs every layer, the fused loss and the SGD
step through minicnn/ops/reference.py. Both must give the same numbers (up to
the rounding of another summation order) forward and backward, on every
backend, and a model trained through either ends up with the same weights.
"""
from __future__ import annotations

import numpy as np
import pytest

import minicnn
from minicnn import ops
from minicnn.layers import Conv2D, Dense, Dropout, Flatten, MaxPooling2D
from minicnn.models import Sequential
from minicnn.ops import reference
from minicnn.ops import windows as win
from minicnn.optimizers import SGD

from conftest import assert_close, distinct

CONVS = [  # (input shape, kernel, strides, padding, use_bias)
    ((2, 7, 6, 3), (3, 2), (1, 1), "valid", True),
    ((3, 9, 8, 2), (3, 3), (2, 3), "same", True),
    ((2, 6, 6, 4), (1, 1), (1, 1), "valid", False),
    ((2, 8, 7, 1), (5, 3), (2, 1), "same", False),
]
POOLS = [  # (input shape, pool, strides, padding)
    ((2, 6, 6, 3), (2, 2), None, "valid"),       # tiles
    ((2, 7, 5, 2), (2, 2), None, "valid"),       # tiles, a row and a column left over
    ((2, 7, 7, 2), (3, 3), (2, 2), "valid"),     # overlapping windows
    ((2, 5, 6, 3), (2, 3), (1, 2), "same"),      # padding
]


def forward_backward(layer, x, dy_seed=5):
    """y, dx and the gradients of one training step, as host arrays."""
    y = layer.run_forward(minicnn.to_device(x), training=True)
    dy = np.random.default_rng(dy_seed).standard_normal(y.shape).astype(y.dtype)
    dx = layer.run_backward(minicnn.to_device(dy))
    return [minicnn.to_host(a) for a in (y, dx, *layer.grads.values())]


def both(make, x):
    """forward_backward through the fast and the reference ops, the same weights in each."""
    results = []
    for name in ("fast", "reference"):
        minicnn.set_seed(3)
        layer = make()
        layer.input_grad = True
        with minicnn.use_ops(name):
            results.append(forward_backward(layer, x))
    return results


@pytest.mark.parametrize("shape,kernel,strides,padding,use_bias", CONVS)
def test_conv2d_reference_matches_fast(backend, shape, kernel, strides, padding, use_bias):
    x = distinct(shape).astype(np.float32)
    fast, ref = both(lambda: Conv2D(4, kernel, strides=strides, padding=padding,
                                    use_bias=use_bias, bias_initializer=lambda shape, rng: rng.uniform(-1, 1, shape)), x)
    for got, want in zip(ref, fast):
        assert_close(got, want)


@pytest.mark.parametrize("shape,pool,strides,padding", POOLS)
def test_max_pool_reference_matches_fast(backend, shape, pool, strides, padding):
    x = distinct(shape).astype(np.float32)
    fast, ref = both(lambda: MaxPooling2D(pool, strides=strides, padding=padding), x)
    for got, want in zip(ref, fast):
        np.testing.assert_array_equal(got, want)  # maxima and copies: no rounding


def test_max_pool_reference_keeps_the_first_winner_on_ties(backend):
    x = np.zeros((1, 4, 4, 1), dtype=np.float32)  # every window a tie
    fast, ref = both(lambda: MaxPooling2D((2, 2), strides=(1, 1)), x)
    for got, want in zip(ref, fast):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("block_bytes", [1, 500, 1 << 30],
                         ids=["1-image-blocks", "2-image-blocks", "one-block"])
def test_max_pool_tiles_in_blocks_match_reference_with_ties(backend, monkeypatch, block_bytes):
    """The host's 2x2 tiles pass goes a few images at a time (TILE_BLOCK_BYTES):
    every block settles its own ties (the second image is all ties, the others
    have none), on one thread or split over two. (On the strict backend, which
    stands for a device, the batch is one block whatever the setting.)"""
    from minicnn.ops import pooling, threads
    monkeypatch.setattr(pooling, "TILE_BLOCK_BYTES", block_bytes)
    x = distinct((5, 6, 5, 2)).astype(np.float32)
    x[1] = 0.5
    for count in (1, 2):
        threads.set_host_threads(count, min_bytes=0)
        try:
            fast, ref = both(lambda: MaxPooling2D((2, 2)), x)
        finally:
            threads.set_host_threads(None, min_bytes=threads.DEFAULT_MIN_BYTES)
        for got, want in zip(ref, fast):
            np.testing.assert_array_equal(got, want)


def test_max_pool_tiles_of_an_empty_batch(backend):
    y, cache = ops.max_pool_forward(minicnn.to_device(np.zeros((0, 4, 4, 2), np.float32)),
                                    (2, 2), (2, 2), "valid", True)
    assert y.shape == (0, 2, 2, 2) and ops.max_pool_backward(y, cache).shape == (0, 4, 4, 2)


def test_dropout_reference_matches_fast(backend):
    x = distinct((4, 5, 3)).reshape(4, 15).astype(np.float32)
    fast, ref = both(lambda: Dropout(0.4, seed=7), x)
    for got, want in zip(ref, fast):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("shape,kernel,strides", [((2, 7, 6, 3), (3, 2), (1, 1)),
                                                  ((2, 9, 8, 2), (3, 3), (2, 3))])
def test_im2col_col2im_reference_match_fast(backend, shape, kernel, strides):
    x = minicnn.to_device(distinct(shape).astype(np.float32))
    out_hw = (win.output_length(shape[1], kernel[0], strides[0], "valid"),
              win.output_length(shape[2], kernel[1], strides[1], "valid"))
    col = win.im2col(x, kernel, strides, out_hw)
    np.testing.assert_array_equal(minicnn.to_host(reference.im2col(x, kernel, strides, out_hw)),
                                  minicnn.to_host(col))
    assert_close(minicnn.to_host(reference.col2im(col, shape, kernel, strides, out_hw)),
                 minicnn.to_host(win.col2im(col, shape, kernel, strides, out_hw)))


def test_softmax_cross_entropy_and_sgd_reference_match_fast(backend):
    rng = np.random.default_rng(2)
    z = minicnn.to_device(rng.standard_normal((6, 5)).astype(np.float32) * 30)
    t = minicnn.to_device(np.eye(5, dtype=np.float32)[rng.integers(0, 5, 6)])
    w, g = (rng.standard_normal((4, 3)).astype(np.float32) for _ in range(2))
    results = {}
    for name in ("fast", "reference"):
        with minicnn.use_ops(name):
            loss, p = ops.softmax_cross_entropy(z, t)
            param = minicnn.to_device(w.copy())
            grad = minicnn.to_device(g)
            ops.sgd_update(param, grad, 0.1, lambda: minicnn.backend.xp().empty_like(param))
            results[name] = [minicnn.to_host(a) for a in (loss, p, param)]
            assert results[name][2].dtype == np.float32
    for got, want in zip(results["reference"], results["fast"]):
        assert_close(got, want)


def tiny_model():
    return Sequential([Conv2D(4, 3, input_shape=(8, 8, 3), activation="relu", padding="same"),
                       MaxPooling2D(), Dropout(0.3, seed=1), Conv2D(5, 3, activation="relu"),
                       MaxPooling2D((2, 2), strides=1), Flatten(),
                       Dense(10, activation="softmax")])


def test_a_model_trained_with_the_reference_ops_matches_the_fast_ops(backend):
    rng = np.random.default_rng(0)
    x = rng.random((24, 8, 8, 3), dtype=np.float32)
    y = np.eye(10, dtype=np.float32)[rng.integers(0, 10, 24)]
    runs = {}
    for name in ("fast", "reference"):
        minicnn.set_seed(0)
        model = tiny_model()
        model.compile(SGD(lr=0.05), "categorical_crossentropy")
        with minicnn.use_ops(name):
            history = model.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False)
        runs[name] = (history.history["loss"], [w for layer in model.layers for w in layer.get_weights()])
    assert_close(runs["reference"][0], runs["fast"][0], rtol=1e-4)
    for got, want in zip(runs["reference"][1], runs["fast"][1]):
        assert_close(got, want, rtol=1e-4)


def test_set_ops_switches_and_use_ops_restores():
    assert minicnn.get_ops() == "fast"
    with minicnn.use_ops("reference"):
        assert minicnn.get_ops() == "reference"
        with pytest.raises(RuntimeError):
            with minicnn.use_ops("fast"):
                raise RuntimeError("inside")
        assert minicnn.get_ops() == "reference"
    assert minicnn.get_ops() == "fast"
    minicnn.set_ops("reference")
    assert minicnn.get_ops() == "reference"


@pytest.mark.parametrize("name", ["slow", "Reference", None])
def test_an_unknown_ops_name_is_a_clear_error(name):
    with pytest.raises(ValueError, match="unknown ops .*expected one of fast, reference"):
        minicnn.set_ops(name)
    assert minicnn.get_ops() == "fast"


# ---------------------------------------------------------------- keep_cache and rng state
def test_keep_cache_without_training_keeps_dropout_off_and_backward_possible():
    x = minicnn.to_device(distinct((3, 4)).astype(np.float32))
    drop = Dropout(0.5, seed=1)
    y = drop.run_forward(x, training=False, keep_cache=True)
    np.testing.assert_array_equal(y, x)
    np.testing.assert_array_equal(drop.run_backward(np.ones_like(x)), np.ones_like(x))
    conv = Conv2D(2, 2)
    conv.run_forward(distinct((2, 4, 4, 1)).astype(np.float32), training=False, keep_cache=True)
    assert conv.run_backward(np.ones((2, 3, 3, 2), np.float32)).shape == (2, 4, 4, 1)


def test_without_keep_cache_backward_is_a_clear_error():
    conv, pool = Conv2D(2, 2), MaxPooling2D()
    x = distinct((2, 4, 4, 1)).astype(np.float32)
    for layer in (conv, pool):
        y = layer.run_forward(x, training=True, keep_cache=False)
        with pytest.raises(RuntimeError, match="backward needs a forward with training=True"):
            layer.run_backward(np.ones_like(y))


def test_rng_state_round_trip():
    drop = Dropout(0.5, seed=3)
    assert drop.get_rng_state() is None  # no generator before build
    drop.build((None, 20))
    x = np.ones((4, 20), np.float32)
    state = drop.get_rng_state()
    first = drop.run_forward(x, training=True)
    drop.set_rng_state(state)
    np.testing.assert_array_equal(drop.run_forward(x, training=True), first)
    dense = Dense(3)
    assert dense.get_rng_state() is None
    dense.set_rng_state(None)  # a no-op for layers without a generator


def test_conv2d_im2col_operands_are_the_forward_product():
    layer = Conv2D(3, 2, input_shape=(5, 5, 2), bias_initializer=lambda shape, rng: rng.uniform(-1, 1, shape))
    x = distinct((2, 5, 5, 2)).astype(np.float32)
    with pytest.raises(RuntimeError, match="no forward with training=True"):
        layer.build((None, 5, 5, 2))
        layer.im2col_operands()
    for name in ("fast", "reference"):
        with minicnn.use_ops(name):
            y = layer.run_forward(x, training=True)
            col, matrix = layer.im2col_operands()
            product = col @ matrix  # the fast ops carry the bias in the product
            if name == "reference":
                product = product + layer.params["bias"]
            assert_close(product.reshape(y.shape), y)
