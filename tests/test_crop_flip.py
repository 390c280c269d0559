"""CropFlipSequence (minicnn/preprocessing/crops.py) against a loop reference that pads
with numpy.pad (mode "reflect", torch's), crops and flips image by image as airbench
does; its schedule (pre-flip once, all flipped on odd epochs, shuffle, drop_last);
every backend; clear errors."""
from __future__ import annotations

import numpy as np
import pytest

import minicnn
from minicnn.preprocessing.crops import CropFlipSequence
from minicnn.preprocessing.image import CropFlipSequence as FromImage


def loop_reference(x, seq, chosen, pad):
    """airbench's order of operations: pre-flip, pad by reflection, crop, flip-all."""
    out = []
    for k in chosen:
        image = x[k][:, ::-1] if seq.preflipped[k] else x[k]
        padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
        r, c = seq.row_shifts[k] + pad, seq.col_shifts[k] + pad
        crop = padded[r:r + x.shape[1], c:c + x.shape[2]]
        out.append(crop[:, ::-1] if seq.flipped[k] else crop)
    return np.stack(out)


@pytest.mark.parametrize("flip", ["alternating", "random", None])
def test_batches_match_the_loop_reference(backend, flip):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((10, 6, 7, 3)).astype(np.float32)
    y = np.arange(10)
    seq = CropFlipSequence(minicnn.to_device(x), minicnn.to_device(y), 4, pad=2, flip=flip,
                           seed=3)
    assert len(seq) == 2  # drop_last: 10 // 4
    for epoch in range(3):
        for i in range(len(seq)):
            xb, yb = seq[i]
            chosen = seq.order[4 * i:4 * i + 4]
            np.testing.assert_array_equal(minicnn.to_host(xb), loop_reference(x, seq, chosen, 2))
            np.testing.assert_array_equal(minicnn.to_host(yb), chosen)
        seq.on_epoch_end()
        assert seq.epoch == epoch + 1


def test_the_alternating_schedule():
    x = np.zeros((400, 5, 5, 1), np.float32)
    seq = CropFlipSequence(x, None, 100, seed=1)
    assert 150 < seq.preflipped.sum() < 250  # about half, fixed for the run
    pre = seq.preflipped.copy()
    seen = []
    for epoch in range(4):
        assert seq.flipped.all() == (epoch % 2 == 1) and seq.flipped.any() == (epoch % 2 == 1)
        assert np.array_equal(seq.preflipped, pre)
        assert set(seq.row_shifts) == set(range(-2, 3)) == set(seq.col_shifts)
        seen.append(seq.order.copy())
        seq.on_epoch_end()
    assert sorted(seen[0]) == list(range(400)) and not np.array_equal(seen[0], seen[1])


def test_shuffle_off_keep_last_and_repeatable():
    x = np.arange(5 * 4 * 4, dtype=np.float32).reshape(5, 4, 4, 1)
    seq = CropFlipSequence(x, None, 2, pad=0, flip=None, shuffle=False, drop_last=False)
    assert len(seq) == 3
    np.testing.assert_array_equal(np.concatenate(list(seq)), x)  # no pad, no flip: x itself
    a = CropFlipSequence(x, None, 2, pad=1, seed=7)[0]
    b = CropFlipSequence(x, None, 2, pad=1, seed=7)[0]
    np.testing.assert_array_equal(a, b)
    assert FromImage is CropFlipSequence


@pytest.mark.parametrize("kwargs, message", [
    ({"pad": -1}, "pad must be an int >= 0"),
    ({"pad": 4}, "pad=4 must be smaller"),
    ({"batch_size": 0}, "batch_size must be an int >= 1"),
    ({"flip": "sometimes"}, "flip must be"),
    ({"batch_size": 9}, "leaves no batch"),
    ({"seed": 1.5}, "seed must be an int"),
])
def test_clear_errors(kwargs, message):
    x = np.zeros((8, 4, 4, 1), np.float32)
    arguments = {"batch_size": 2, **kwargs}
    with pytest.raises(ValueError, match=message):
        CropFlipSequence(x, None, **arguments)
    with pytest.raises(ValueError, match="same length"):
        CropFlipSequence(x, np.zeros(3), 2)
    with pytest.raises(IndexError, match="out of range"):
        CropFlipSequence(x, None, 2)[4]
