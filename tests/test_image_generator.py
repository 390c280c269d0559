"""ImageDataGenerator and the batch transforms under it, against independent references.

Geometry is checked image by image and channel by channel against
scipy.ndimage.affine_transform (what Keras itself calls) with a matrix built
here the way keras_preprocessing builds it; flips against plain NumPy
indexing; the normalizations against NumPy formulas written out in the tests.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

import minicnn
from minicnn import backend as _backend
from minicnn.layers import Conv2D, Dense, Flatten
from minicnn.models import Sequential
from minicnn.preprocessing import transforms
from minicnn.preprocessing.image import ImageDataGenerator, NumpyArrayIterator
from minicnn.utils import Sequence

from conftest import assert_close

ndi = pytest.importorskip("scipy.ndimage")

KERAS_MODES = ["nearest", "constant", "reflect", "wrap"]


@pytest.fixture(params=["numpy", "strict", "cupy"])
def device(request):
    """The backends a batch can live on (the kernels backend adds nothing here)."""
    if request.param == "cupy" and not _backend.cupy_available():
        try:
            _backend._cupy()
        except RuntimeError as exc:
            pytest.skip(f"CuPy or a GPU is not available: {exc}")
    minicnn.set_backend(request.param)
    yield request.param
    minicnn.set_backend("numpy")


def images(n=4, h=7, w=9, c=3, seed=0, dtype="float64"):
    return np.random.default_rng(seed).random((n, h, w, c)).astype(dtype)


# ---------------------------------------------------------------- references
def keras_matrix(h, w, theta=0, tx=0, ty=0, shear=0, zx=1, zy=1):
    """keras_preprocessing.image.apply_affine_transform's matrix, written out again."""
    m = np.eye(3)
    if theta:
        t = np.deg2rad(theta)
        m = m @ np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])
    if tx or ty:
        m = m @ np.array([[1, 0, tx], [0, 1, ty], [0, 0, 1]])
    if shear:
        s = np.deg2rad(shear)
        m = m @ np.array([[1, -np.sin(s), 0], [0, np.cos(s), 0], [0, 0, 1]])
    if zx != 1 or zy != 1:
        m = m @ np.array([[zx, 0, 0], [0, zy, 0], [0, 0, 1]])
    o_x, o_y = h / 2 + 0.5, w / 2 + 0.5
    offset = np.array([[1, 0, o_x], [0, 1, o_y], [0, 0, 1]])
    reset = np.array([[1, 0, -o_x], [0, 1, -o_y], [0, 0, 1]])
    return offset @ m @ reset


def scipy_warp(image, matrix, mode, cval=0.0):
    """One image (H, W, C) through scipy, one channel at a time, as Keras does."""
    return np.stack([ndi.affine_transform(image[:, :, k], matrix[:2, :2], matrix[:2, 2],
                                          order=1, mode=mode, cval=cval)
                     for k in range(image.shape[2])], axis=2)


def random_params(rng, n):
    return dict(theta=rng.uniform(-40, 40, n), tx=rng.uniform(-3, 3, n),
                ty=rng.uniform(-3, 3, n), shear=rng.uniform(-20, 20, n),
                zx=rng.uniform(0.7, 1.3, n), zy=rng.uniform(0.7, 1.3, n))


# ---------------------------------------------------------------- transforms
@pytest.mark.parametrize("mode", KERAS_MODES + ["mirror"])
def test_affine_matches_scipy_for_every_fill_mode(mode):
    x = images(n=5)
    p = random_params(np.random.default_rng(3), 5)
    mats = np.stack([keras_matrix(7, 9, *(p[k][i] for k in p)) for i in range(5)])
    out = transforms.affine(x, mats, mode, cval=-2.5)
    for i in range(5):
        assert_close(out[i], scipy_warp(x[i], mats[i], mode, cval=-2.5), err_msg=f"image {i}")


def test_keras_matrices_match_keras_composition():
    p = random_params(np.random.default_rng(4), 6)
    got = transforms.keras_matrices(7, 9, **p)
    for i in range(6):
        assert_close(got[i], keras_matrix(7, 9, *(p[k][i] for k in p)))


@pytest.mark.parametrize("transform", ["theta", "tx", "ty", "shear", "zx", "zy"])
def test_each_transform_alone_matches_scipy(transform):
    value = {"theta": 33.0, "tx": 1.7, "ty": -2.4, "shear": 25.0, "zx": 0.6, "zy": 1.4}[transform]
    gen = ImageDataGenerator(fill_mode="constant", cval=0.5, dtype="float64")
    x = images(n=1)[0]
    out = gen.apply_transform(x, {transform: value})
    expected = scipy_warp(x, keras_matrix(7, 9, **{transform: value}), "constant", 0.5)
    assert_close(out, expected)
    assert not np.allclose(out, x)  # the transform did something


@pytest.mark.parametrize("mode", KERAS_MODES + ["mirror"])
def test_translate_matches_scipy_for_whole_pixel_shifts(mode):
    x = images(n=6, h=5, w=6)
    rows = np.array([0, 2, -3, 7, -11, 1])
    cols = np.array([1, -2, 0, -9, 12, 5])
    out = transforms.translate(x, rows, cols, mode, cval=9.0)
    for i in range(6):
        m = np.array([[1, 0, -rows[i]], [0, 1, -cols[i]], [0, 0, 1]], dtype=float)
        np.testing.assert_array_equal(out[i], scipy_warp(x[i], m, mode, cval=9.0))


def test_translate_as_reflect_padded_random_crop():
    x = images(n=3, h=8, w=8)
    rows, cols = np.array([4, -4, 2]), np.array([-4, 3, 0])
    padded = np.pad(x, [(0, 0), (4, 4), (4, 4), (0, 0)], mode="symmetric")
    out = transforms.translate(x, rows, cols, "reflect")
    for i in range(3):
        top, left = 4 - rows[i], 4 - cols[i]
        np.testing.assert_array_equal(out[i], padded[i, top:top + 8, left:left + 8])


def test_flip_matches_numpy_indexing():
    x = images(n=4)
    mask = np.array([True, False, True, False])
    h = transforms.flip(x, mask, axis=2)
    v = transforms.flip(x, mask, axis=1)
    for i in range(4):
        np.testing.assert_array_equal(h[i], x[i, :, ::-1] if mask[i] else x[i])
        np.testing.assert_array_equal(v[i], x[i, ::-1] if mask[i] else x[i])


def test_transforms_run_on_every_backend(device):
    x = images(n=3, dtype="float32")
    mats = transforms.keras_matrices(7, 9, **random_params(np.random.default_rng(5), 3))
    on_device = minicnn.to_device(x)
    for mode in KERAS_MODES:
        out = transforms.affine(on_device, mats, mode, 0.25)
        assert _backend.is_device_array(out) == (device != "numpy")
        assert out.dtype == np.float32
        assert_close(minicnn.to_host(out), transforms.affine(x, mats, mode, 0.25))
        moved = transforms.translate(on_device, [1, -2, 3], [0, 4, -1], mode, 0.25)
        assert_close(minicnn.to_host(moved), transforms.translate(x, [1, -2, 3], [0, 4, -1],
                                                                  mode, 0.25))
    flipped = transforms.flip(on_device, [True, False, True])
    np.testing.assert_array_equal(minicnn.to_host(flipped)[0], x[0, :, ::-1])


def test_transforms_refuse_bad_input():
    x = images()
    with pytest.raises(ValueError, match="transforms.affine.*matrices of shape"):
        transforms.affine(x, np.eye(3))
    with pytest.raises(ValueError, match="transforms.affine: unknown fill_mode 'edge'"):
        transforms.affine(x, np.tile(np.eye(3), (4, 1, 1)), "edge")
    with pytest.raises(ValueError, match="transforms.translate: shifts must be whole"):
        transforms.translate(x, [0.5, 0, 0, 0], [0, 0, 0, 0])
    with pytest.raises(ValueError, match=r"transforms.flip: expected mask of shape \(4,\)"):
        transforms.flip(x, [True])
    with pytest.raises(ValueError, match="transforms.flip: expected a channels-last batch"):
        transforms.flip(x[0], [True])


# ---------------------------------------------------------------- the generator's transforms
def reference_transform(gen, image, p):
    """keras_preprocessing's apply_transform for one image, step by step."""
    h, w = image.shape[:2]
    out = scipy_warp(image, keras_matrix(h, w, p["theta"], p["tx"], p["ty"], p["shear"],
                                         p["zx"], p["zy"]), gen.fill_mode, gen.cval)
    if p["channel_shift_intensity"] is not None:
        out = np.clip(out + p["channel_shift_intensity"], out.min(), out.max())
    if p["flip_horizontal"]:
        out = out[:, ::-1]
    if p["flip_vertical"]:
        out = out[::-1]
    if p["brightness"] is not None:
        out = out * p["brightness"]
    return out


@pytest.mark.parametrize("mode", KERAS_MODES)
def test_random_batch_matches_per_image_keras_reference(mode):
    gen = ImageDataGenerator(rotation_range=30, width_shift_range=0.2, height_shift_range=2.5,
                             shear_range=15, zoom_range=0.25, channel_shift_range=0.3,
                             horizontal_flip=True, vertical_flip=True, brightness_range=(0.5, 1.5),
                             fill_mode=mode, cval=-1.0, dtype="float64")
    x = images(n=8)
    params = gen._draw(8, x.shape[1:], np.random.default_rng(7))
    out = gen._transform_batch(x, params)
    assert params["flip_horizontal"].any() and not params["flip_horizontal"].all()
    for i in range(8):
        one = {k: None if v is None else v[i] for k, v in params.items()}
        assert_close(out[i], reference_transform(gen, x[i], one), err_msg=f"image {i}")
        assert_close(gen.apply_transform(x[i], one), out[i])


@pytest.mark.parametrize("mode", KERAS_MODES)
def test_whole_pixel_shifts_take_the_gather_path_and_agree_with_scipy(mode, monkeypatch):
    gen = ImageDataGenerator(width_shift_range=3, height_shift_range=[1, 2], fill_mode=mode,
                             cval=4.0, dtype="float64")
    x = images(n=6)
    params = gen._draw(6, x.shape[1:], np.random.default_rng(1))
    assert np.all(params["tx"] == np.round(params["tx"])) and params["ty"].any()

    def no_affine(*args, **kwargs):
        raise AssertionError("whole-pixel shifts should not need the affine warp")

    monkeypatch.setattr(transforms, "affine", no_affine)
    out = gen._transform_batch(x, params)
    for i in range(6):
        m = keras_matrix(7, 9, tx=params["tx"][i], ty=params["ty"][i])
        np.testing.assert_array_equal(out[i], scipy_warp(x[i], m, mode, 4.0))


def test_shift_and_zoom_ranges_follow_keras():
    rng = np.random.default_rng(0)
    shape = (20, 50, 3)

    def draw(**kwargs):
        return ImageDataGenerator(**kwargs)._draw(4000, shape, rng)

    p = draw(width_shift_range=3, height_shift_range=0.1)
    assert set(np.unique(p["ty"])) == {-2, -1, 0, 1, 2}  # int r: whole pixels in (-r, r)
    assert p["tx"].min() >= -2 and p["tx"].max() <= 2 and len(np.unique(p["tx"])) > 1000
    p = draw(width_shift_range=2.0, height_shift_range=[0.5])  # float >= 1: pixels
    assert -2 <= p["ty"].min() < -1.9 and 1.9 < p["ty"].max() <= 2
    assert set(np.unique(p["tx"])) == {-10, 10}  # list < 1: its elements, a fraction of 20
    p = draw(zoom_range=0.2)
    assert 0.8 <= p["zx"].min() < 0.81 and 1.19 < p["zy"].max() <= 1.2
    p = draw(zoom_range=[0.5, 0.6], rotation_range=10, shear_range=5)
    assert p["zx"].min() >= 0.5 and p["zy"].max() <= 0.6
    assert np.abs(p["theta"]).max() <= 10 and np.abs(p["shear"]).max() <= 5
    p = draw()
    assert not p["theta"].any() and not p["tx"].any() and (p["zx"] == 1).all()
    assert p["channel_shift_intensity"] is None and p["brightness"] is None
    assert not p["flip_horizontal"].any()


def test_get_random_transform_has_keras_keys_and_repeats_with_a_seed():
    gen = ImageDataGenerator(rotation_range=20, zoom_range=0.1, horizontal_flip=True)
    a = gen.get_random_transform((8, 8, 3), seed=5)
    assert a == gen.get_random_transform((8, 8, 3), seed=5)
    assert set(a) == {"theta", "tx", "ty", "shear", "zx", "zy", "flip_horizontal",
                      "flip_vertical", "channel_shift_intensity", "brightness"}
    assert a != gen.get_random_transform((8, 8, 3), seed=6)
    x = images(n=1, h=8, w=8)[0]
    assert_close(gen.random_transform(x, seed=5), gen.apply_transform(x, a))


# ---------------------------------------------------------------- normalization
def test_fit_learns_keras_featurewise_statistics_and_standardize_applies_them():
    x = images(n=10, seed=2) * 50 + 3
    gen = ImageDataGenerator(featurewise_center=True, featurewise_std_normalization=True,
                             dtype="float64")
    gen.fit(x)
    mean = x.mean(axis=(0, 1, 2)).reshape(1, 1, 3)
    std = np.sqrt(((x - mean) ** 2).mean(axis=(0, 1, 2))).reshape(1, 1, 3)
    assert gen.mean.shape == (1, 1, 3) and gen.std.shape == (1, 1, 3)
    assert_close(gen.mean, mean)
    assert_close(gen.std, std)
    out = gen.standardize(x)
    assert_close(out, (x - mean) / (std + 1e-7))
    assert_close(gen.standardize(x[3]), out[3])


def test_fit_statistics_do_not_depend_on_the_chunking(monkeypatch):
    from minicnn.preprocessing import image as image_module
    x = images(n=10, seed=3) * 255
    whole = ImageDataGenerator(featurewise_center=True, featurewise_std_normalization=True,
                               dtype="float64")
    whole.fit(x)
    monkeypatch.setattr(image_module, "_FIT_CHUNK", 3)
    chunked = ImageDataGenerator(featurewise_center=True, featurewise_std_normalization=True,
                                 dtype="float64")
    chunked.fit(x)
    assert_close(chunked.mean, whole.mean)
    assert_close(chunked.std, whole.std)
    assert_close(chunked.std, x.std(axis=(0, 1, 2)).reshape(1, 1, 3))


def test_fit_with_augment_uses_the_augmented_copies():
    x = images(n=6, seed=5)
    gen = ImageDataGenerator(featurewise_center=True, rotation_range=45, fill_mode="constant",
                             cval=10.0, dtype="float64")
    gen.fit(x, augment=True, rounds=3, seed=1)
    copies = []
    for r in range(3):
        copies.append(gen.random_transform_batch(x, np.random.default_rng([1, r, 0])))
    assert_close(gen.mean, np.concatenate(copies).mean(axis=(0, 1, 2)).reshape(1, 1, 3))


def test_zca_whitening_matches_keras_formula_and_whitens():
    x = images(n=200, h=3, w=2, c=3, seed=6)
    x[..., 1] = 0.7 * x[..., 0] + 0.3 * x[..., 1]  # correlated channels
    with pytest.warns(UserWarning, match="overrides featurewise_center"):
        gen = ImageDataGenerator(zca_whitening=True, zca_epsilon=1e-6, dtype="float64")
    gen.fit(x)
    flat = (x - x.mean(axis=(0, 1, 2))).reshape(200, -1)
    sigma = flat.T @ flat / 200
    u, s, _ = np.linalg.svd(sigma)
    components = (u * (1 / np.sqrt(s + 1e-6))) @ u.T
    assert_close(gen.principal_components, components, rtol=1e-8)
    white = gen.standardize(x).reshape(200, -1)
    assert_close(white.T @ white / 200, np.eye(18), rtol=1e-3)  # up to epsilon's share


def test_samplewise_rescale_and_preprocessing_function_in_keras_order():
    x = images(n=3, seed=7)
    seen = []

    def prep(image):
        seen.append(image.shape)
        return image + 1.0

    gen = ImageDataGenerator(samplewise_center=True, samplewise_std_normalization=True,
                             rescale=2.0, preprocessing_function=prep, dtype="float64")
    out = gen.standardize(x)
    assert seen == [(7, 9, 3)] * 3  # one image at a time, as Keras calls it
    for i in range(3):
        ref = (x[i] + 1.0) * 2.0
        ref = ref - ref.mean()
        ref = ref / (ref.std() + 1e-7)
        assert_close(out[i], ref)
    assert_close(x, images(n=3, seed=7))  # the argument is not changed in place


def test_unfitted_featurewise_standardize_warns_and_skips():
    gen = ImageDataGenerator(featurewise_center=True)
    x = images(n=2, dtype="float32")
    with pytest.warns(UserWarning, match="has not been fit"):
        out = gen.standardize(x)
    np.testing.assert_array_equal(out, x)


def test_standardize_runs_on_the_device_of_its_input(device):
    x = images(n=4, seed=8, dtype="float32")
    gen = ImageDataGenerator(featurewise_center=True, featurewise_std_normalization=True,
                             samplewise_center=True)
    gen.fit(x)
    out = gen.standardize(minicnn.to_device(x))
    assert _backend.is_device_array(out) == (device != "numpy")
    assert_close(minicnn.to_host(out), gen.standardize(x))


# ---------------------------------------------------------------- the iterator
def test_flow_is_a_sequence_covering_every_sample_once_per_epoch():
    x = images(n=10, dtype="float32")
    it = ImageDataGenerator().flow(x, np.arange(10), batch_size=4, seed=3)
    assert isinstance(it, Sequence) and isinstance(it, NumpyArrayIterator) and len(it) == 3
    orders = []
    for epoch in range(2):
        batches = [it[i] for i in range(len(it))]
        assert [len(b[1]) for b in batches] == [4, 4, 2]
        labels = np.concatenate([b[1] for b in batches])
        assert sorted(labels) == list(range(10))
        for xb, yb in batches:
            np.testing.assert_array_equal(xb, x[yb])  # no transform: the images themselves
        orders.append(labels)
        it.on_epoch_end()
    assert not np.array_equal(*orders)  # reshuffled


def test_flow_without_shuffle_keeps_the_order_and_returns_only_x_without_y():
    x = images(n=5, dtype="float32")
    it = ImageDataGenerator().flow(x, batch_size=2, shuffle=False)
    np.testing.assert_array_equal(np.concatenate([it[i] for i in range(3)]), x)


def test_flow_returns_sample_weights_with_their_images():
    x = images(n=6, dtype="float32")
    w = np.arange(6) / 10
    it = ImageDataGenerator().flow(x, np.arange(6), batch_size=4, sample_weight=w, seed=0)
    xb, yb, wb = it[0]
    np.testing.assert_array_equal(wb, w[yb])


def test_flow_batches_repeat_with_a_seed_and_differ_between_epochs():
    x = images(n=8, dtype="float32")
    gen = ImageDataGenerator(rotation_range=30, width_shift_range=0.2, horizontal_flip=True)
    a = gen.flow(x, np.arange(8), batch_size=4, seed=11)
    b = gen.flow(x, np.arange(8), batch_size=4, seed=11)
    for i in (1, 0):
        np.testing.assert_array_equal(a[i][0], b[i][0])
    np.testing.assert_array_equal(a[0][0], a[0][0])  # a batch is the same when asked again
    first = a[0][0]
    a.on_epoch_end()
    assert not np.allclose(a[0][0], first)
    minicnn.set_seed(5)
    c = gen.flow(x, batch_size=4)
    minicnn.set_seed(5)
    d = gen.flow(x, batch_size=4)
    np.testing.assert_array_equal(c[1], d[1])


def test_next_loops_forever_through_the_epochs():
    x = images(n=5, dtype="float32")
    it = ImageDataGenerator().flow(x, np.arange(5), batch_size=2, seed=2)
    assert iter(it) is it
    sizes, labels = [], []
    for _ in range(9):
        xb, yb = next(it)
        sizes.append(len(yb))
        labels.append(yb)
    assert sizes == [2, 2, 1] * 3
    for epoch in range(3):
        assert sorted(np.concatenate(labels[3 * epoch:3 * epoch + 3])) == list(range(5))
    assert it.epoch == 2


def test_flow_batches_are_standardized_augmented_floatx_on_every_backend(device):
    x = (images(n=6, seed=9) * 255).astype(np.uint8)
    y = np.arange(6)
    gen = ImageDataGenerator(rotation_range=20, width_shift_range=2, horizontal_flip=True,
                             channel_shift_range=10, rescale=1 / 255, fill_mode="reflect")
    batches = gen.flow(x, y, batch_size=4, seed=1)
    xb, yb = batches[0]
    assert _backend.is_device_array(xb) == (device != "numpy")
    assert xb.dtype == np.float32 and xb.shape == (4, 7, 9, 3)
    minicnn.set_backend("numpy")
    host_xb, host_yb = gen.flow(x, y, batch_size=4, seed=1)[0]
    np.testing.assert_array_equal(minicnn.to_host(yb), host_yb)
    assert_close(minicnn.to_host(xb), host_xb)
    assert 0 <= host_xb.min() and host_xb.max() <= 1.0 + 1e-6


def test_flow_transforms_before_it_standardizes():
    x = images(n=6, dtype="float32")
    gen = ImageDataGenerator(width_shift_range=[3], fill_mode="constant", cval=5.0, rescale=0.1)
    xb, yb = gen.flow(x, np.arange(6), batch_size=6, seed=0)[0]
    for image, label in zip(xb, yb):
        # the border the shift uncovers holds cval rescaled: the shift ran first
        left = np.allclose(image[:, :3], 0.5)
        assert left != np.allclose(image[:, -3:], 0.5)
        inside = image[:, 3:] if left else image[:, :-3]
        assert_close(inside, (x[label, :, :-3] if left else x[label, :, 3:]) * np.float32(0.1))


def test_floatx_float64_batches():
    minicnn.set_floatx("float64")
    xb = ImageDataGenerator(zoom_range=0.2).flow(images(n=3, dtype="float32"), batch_size=3)[0]
    assert xb.dtype == np.float64


def test_validation_split_subsets_follow_keras():
    x = images(n=10, dtype="float32")
    y = np.arange(10)
    gen = ImageDataGenerator(validation_split=0.3)
    val = gen.flow(x, y, batch_size=100, shuffle=False, subset="validation")
    train = gen.flow(x, y, batch_size=100, shuffle=False, subset="training")
    np.testing.assert_array_equal(val[0][1], [0, 1, 2])  # the first images validate
    np.testing.assert_array_equal(train[0][1], np.arange(3, 10))
    assert len(gen.flow(x, y, batch_size=2, subset="training")) == 4


def test_iterator_batches_train_a_model(device):
    x = images(n=12, h=6, w=6, c=3, seed=4, dtype="float32")
    y = minicnn.utils.to_categorical(np.arange(12) % 2, 2)
    model = Sequential([Conv2D(2, 3, input_shape=(6, 6, 3), activation="relu"), Flatten(),
                        Dense(2, activation="softmax")])
    model.compile("sgd", "categorical_crossentropy", metrics=["accuracy"])
    it = ImageDataGenerator(horizontal_flip=True, width_shift_range=1).flow(x, y, batch_size=5)
    before = [w.copy() for w in model.get_weights()] if model.built else None
    for i in range(len(it)):
        loss, acc = model.train_on_batch(*it[i])
        assert math.isfinite(loss) and 0 <= acc <= 1
    assert before is None or any(not np.array_equal(a, b)
                                 for a, b in zip(before, model.get_weights()))


def test_save_to_dir_writes_png_files(tmp_path):
    plt_image = pytest.importorskip("matplotlib.image")
    x = images(n=3, h=5, w=4, dtype="float32")
    it = ImageDataGenerator().flow(x, batch_size=3, shuffle=False, save_to_dir=tmp_path / "aug",
                                   save_prefix="cat")
    it[0]
    files = sorted((tmp_path / "aug").glob("cat_*.png"))
    assert [f.name.split("_")[1] for f in files] == ["0", "1", "2"]
    picture = plt_image.imread(files[0])
    assert picture.shape[:2] == (5, 4)
    scaled = x[0] / x[0].max()
    np.testing.assert_allclose(picture[:, :, :3], np.floor(scaled * 255) / 255, atol=1 / 255 + 1e-6)
    assert not list((tmp_path / "aug").glob(".tmp-*"))


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("kwargs, error, match", [
    (dict(data_format="channels_first"), ValueError, "ImageDataGenerator: minicnn supports "
                                                      "data_format='channels_last'"),
    (dict(fill_mode="edge"), ValueError, "ImageDataGenerator: unknown fill_mode 'edge'"),
    (dict(rotation_range=-5), ValueError, "rotation_range must be >= 0"),
    (dict(zoom_range=[1.2, 0.8]), ValueError, "zoom_range must satisfy 0 <= lower <= upper"),
    (dict(zoom_range=[1, 2, 3]), ValueError, "zoom_range must be a pair"),
    (dict(brightness_range=0.5), ValueError, "brightness_range must be a pair"),
    (dict(width_shift_range="a"), TypeError, "width_shift_range must be a number or a list"),
    (dict(height_shift_range=[]), ValueError, "height_shift_range as a list"),
    (dict(validation_split=1.0), ValueError, "validation_split must be strictly between"),
    (dict(preprocessing_function=3), TypeError, "preprocessing_function must be callable"),
    (dict(dtype="int32"), TypeError, "dtype must be a float type"),
])
def test_bad_arguments_are_refused_by_name(kwargs, error, match):
    with pytest.raises(error, match=match):
        ImageDataGenerator(**kwargs)


def test_bad_flow_and_fit_input_is_refused_before_any_work():
    gen = ImageDataGenerator()
    x = images(n=4, dtype="float32")
    with pytest.raises(ValueError, match=r"ImageDataGenerator.flow: expected images of rank 4"):
        gen.flow(x[0])
    with pytest.raises(ValueError, match="ImageDataGenerator.flow: x .* and y .* same length"):
        gen.flow(x, np.arange(3))
    with pytest.raises(ValueError, match=r"sample_weight must have shape \(4,\)"):
        gen.flow(x, np.arange(4), sample_weight=np.ones(3))
    with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
        gen.flow(x, batch_size=0)
    with pytest.raises(ValueError, match="unknown subset 'test'"):
        gen.flow(x, subset="test")
    with pytest.raises(ValueError, match="subset='validation' holds no images"):
        gen.flow(x, subset="validation")
    with pytest.raises(ValueError, match="save_format 'jpeg' is not supported"):
        gen.flow(x, save_to_dir="unused", save_format="jpeg")
    with pytest.raises(TypeError, match="tuples are not supported"):
        gen.flow((x, x))
    with pytest.raises(ValueError, match="seed must be None or an int"):
        gen.flow(x, seed=-1)
    with pytest.raises(ValueError, match=r"ImageDataGenerator.fit: expected images of rank 4"):
        gen.fit(x[0])
    with pytest.raises(ValueError, match="ImageDataGenerator.fit: rounds must be an int"):
        gen.fit(x, rounds=0)
    with pytest.raises(ValueError, match="ImageDataGenerator.apply_transform: expected one image"):
        gen.apply_transform(x, {})
    with pytest.raises(IndexError, match="batch index 1 out of range; there are 1 batches"):
        gen.flow(x)[1]
    fitted = ImageDataGenerator(featurewise_center=True)
    fitted.fit(x)
    with pytest.raises(ValueError, match="standardize: the generator was fit on images with "
                                         "another shape"):
        fitted.standardize(x[..., :1])
    bad = ImageDataGenerator(preprocessing_function=lambda image: image[:2])
    with pytest.raises(ValueError, match="preprocessing_function must return an image of the "
                                         "shape"):
        bad.standardize(x)
