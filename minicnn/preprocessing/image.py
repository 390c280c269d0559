"""Keras 2's ``ImageDataGenerator``: real-time augmentation and normalization of images.

``ImageDataGenerator(...)`` holds the recipe, ``fit(x)`` learns the dataset's
statistics (for ``featurewise_*`` and ``zca_whitening``) and ``flow(x, y)`` returns
a ``NumpyArrayIterator``, a ``minicnn.utils.Sequence`` of augmented batches.
The arguments, defaults and semantics are keras_preprocessing's (Keras 2.2.4):

* geometric, per image: rotation by U(-rotation_range, rotation_range) degrees;
  shifts, where a float range below 1 is a fraction of the size and one of 1 or
  more is pixels, an int range r draws whole pixels in (-r, r), a list draws its
  elements with a random sign; shear by U(-shear_range, shear_range) degrees;
  zoom by U(lo, hi) on rows and columns independently (a float z means
  [1-z, 1+z]). Together they are one affine map about the image centre
  (``transforms.keras_matrices``), sampled bilinearly with ``fill_mode`` (and
  ``cval``) outside the image, as scipy.ndimage does for Keras.
* then a channel shift (one U(-r, r) added to every channel, clipped to the
  image's own range), flips (each with probability 1/2) and brightness.
* then ``standardize``: ``preprocessing_function``, ``rescale``, samplewise
  centring and scaling, featurewise centring and scaling (``fit``'s per-channel
  mean and std), ZCA whitening; the scalings divide by (std + 1e-7).

Unlike Keras, which loops over the images with scipy one channel at a time,
a batch is transformed at once: every image's random parameters are drawn on
the host from a seeded NumPy generator, then the batch is warped by array
operations on its own device (``minicnn.preprocessing.transforms``); pure
flips and whole-pixel shifts take cheaper index paths. On the cupy backend the
images are moved to the GPU once, by ``flow``, and batches stay there.

Where minicnn differs from Keras: channels_last only; ``brightness_range``
multiplies the image by the factor (Keras goes through an 8-bit PIL image,
which also rescales it to 0..255); ``standardize`` takes one image or a batch
(samplewise statistics per image) and never changes its argument in place;
``save_to_dir`` writes PNG files only. The augmentation is random, so results
match Keras in distribution, not draw for draw.
"""
from __future__ import annotations

import math
import numbers
import os
import warnings
from typing import Any, Callable, Iterator, Sequence as SequenceType

import numpy as np
from numpy.typing import ArrayLike

from minicnn import backend, fileio
from minicnn.backend import Array
from minicnn.preprocessing import transforms
from minicnn.preprocessing.crops import CropFlipSequence  # noqa: F401  (a public name here too)
from minicnn.utils import Sequence

EPSILON = 1e-7  # Keras's backend.epsilon(), added to a std before dividing by it
FILL_MODES = ("constant", "nearest", "reflect", "wrap")
_FIT_CHUNK = 1024  # images per pass of fit's statistics, to bound its memory
NAME = "ImageDataGenerator"


# ---------------------------------------------------------------- argument checks
def _number(value: Any, name: str, where: str = NAME, low: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise TypeError(f"{where}: {name} must be a finite number, got {value!r}")
    if value < low:
        raise ValueError(f"{where}: {name} must be >= {low}, got {value!r}")
    return value


def _pair(value: Any, name: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{NAME}: {name} must be a pair [lower, upper] of numbers, "
                         f"got {value!r}") from None
    if not (math.isfinite(low) and math.isfinite(high) and 0 <= low <= high):
        raise ValueError(f"{NAME}: {name} must satisfy 0 <= lower <= upper, got {value!r}")
    return low, high


def _shift_range(value: Any, name: str) -> Any:
    """An int, a float or a non-empty 1-D list of numbers (Keras's three kinds)."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return _number(value, name)
    if isinstance(value, (bool, str, bytes)) or not hasattr(value, "__len__"):
        raise TypeError(f"{NAME}: {name} must be a number or a list of numbers, got {value!r}")
    values = np.asarray(value)
    if values.ndim != 1 or values.size == 0 or values.dtype.kind not in "iuf" \
            or not np.all(np.isfinite(values)):
        raise ValueError(f"{NAME}: {name} as a list must be a non-empty 1-D list of finite "
                         f"numbers, got {value!r}")
    return values


def _draw_shift(rng: np.random.Generator, spec: Any, n: int, size: int) -> np.ndarray:
    """Keras's shift draw for n images along an axis of ``size`` pixels."""
    if isinstance(spec, np.ndarray):
        shift = rng.choice(spec, n) * rng.choice([-1, 1], n)
    elif isinstance(spec, numbers.Integral):
        if spec == 0:
            return np.zeros(n)
        shift = rng.integers(0, spec, n) * rng.choice([-1, 1], n)
    elif spec == 0:
        return np.zeros(n)
    else:
        shift = rng.uniform(-spec, spec, n)
    shift = shift.astype(np.float64)
    return shift * size if np.max(spec) < 1 else shift


def _float_dtype(dtype: Any) -> np.dtype:
    try:
        dtype = np.dtype(backend.floatx() if dtype is None else dtype)
    except TypeError:
        raise TypeError(f"{NAME}: dtype must be a float type, got {dtype!r}") from None
    if dtype.kind != "f":
        raise TypeError(f"{NAME}: dtype must be a float type, got {dtype}")
    return dtype


def _check_images(x: Any, where: str) -> Any:
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"{where}: expected images of rank 4 (N, height, width, channels), "
                         f"got an array of shape {tuple(x.shape)}")
    if x.shape[0] == 0 or 0 in x.shape[1:]:
        raise ValueError(f"{where}: x is empty (shape {tuple(x.shape)})")
    if np.dtype(x.dtype).kind not in "biuf":
        raise TypeError(f"{where}: expected numeric images, got dtype {x.dtype}")
    if x.shape[3] not in (1, 3, 4):
        warnings.warn(f"{where}: expected channels last with 1, 3 or 4 channels, got "
                      f"shape {tuple(x.shape)} ({x.shape[3]} channels)", stacklevel=3)
    return x


def _seed(seed: Any, where: str) -> int | None:
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"{where}: seed must be None or an int >= 0, got {seed!r}")
    return int(seed)


def _fresh_seed() -> int:
    """A seed from minicnn's seed sequence, so ``minicnn.set_seed`` repeats a run."""
    return int(backend.host_rng().integers(2**63))


# ---------------------------------------------------------------- the generator
class ImageDataGenerator:
    """Generate batches of image data with real-time augmentation (see the module)."""

    def __init__(self, featurewise_center: bool = False, samplewise_center: bool = False,
                 featurewise_std_normalization: bool = False,
                 samplewise_std_normalization: bool = False, zca_whitening: bool = False,
                 zca_epsilon: float = 1e-6, rotation_range: float = 0,
                 width_shift_range: Any = 0., height_shift_range: Any = 0.,
                 brightness_range: SequenceType[float] | None = None, shear_range: float = 0.,
                 zoom_range: Any = 0., channel_shift_range: float = 0.,
                 fill_mode: str = "nearest", cval: float = 0., horizontal_flip: bool = False,
                 vertical_flip: bool = False, rescale: float | None = None,
                 preprocessing_function: Callable[[Array], Array] | None = None,
                 data_format: str | None = None, validation_split: float = 0.0,
                 dtype: Any = None) -> None:
        if data_format not in (None, "channels_last"):
            raise ValueError(f"{NAME}: minicnn supports data_format='channels_last' (images "
                             f"(N, height, width, channels)) only, got {data_format!r}")
        if fill_mode not in FILL_MODES:
            raise ValueError(f"{NAME}: unknown fill_mode {fill_mode!r}; expected one of "
                             f"{', '.join(FILL_MODES)}")
        if preprocessing_function is not None and not callable(preprocessing_function):
            raise TypeError(f"{NAME}: preprocessing_function must be callable, "
                            f"got {preprocessing_function!r}")
        _number(validation_split, "validation_split")
        if validation_split and not 0 < validation_split < 1:
            raise ValueError(f"{NAME}: validation_split must be strictly between 0 and 1, "
                             f"got {validation_split!r}")
        self.rotation_range = _number(rotation_range, "rotation_range")
        self.width_shift_range = _shift_range(width_shift_range, "width_shift_range")
        self.height_shift_range = _shift_range(height_shift_range, "height_shift_range")
        self.shear_range = _number(shear_range, "shear_range")
        if isinstance(zoom_range, numbers.Real) and not isinstance(zoom_range, bool):
            _number(zoom_range, "zoom_range")
            zoom_range = [1 - zoom_range, 1 + zoom_range]
        self.zoom_range = list(_pair(zoom_range, "zoom_range"))
        self.channel_shift_range = _number(channel_shift_range, "channel_shift_range")
        self.brightness_range = (None if brightness_range is None
                                 else list(_pair(brightness_range, "brightness_range")))
        self.cval = _number(cval, "cval", low=-math.inf)
        self.rescale = None if rescale is None else _number(rescale, "rescale", low=-math.inf)
        self.zca_epsilon = _number(zca_epsilon, "zca_epsilon")
        self.fill_mode = fill_mode
        self.horizontal_flip = bool(horizontal_flip)
        self.vertical_flip = bool(vertical_flip)
        self.preprocessing_function = preprocessing_function
        self.data_format = "channels_last"
        self.channel_axis, self.row_axis, self.col_axis = 3, 1, 2
        self.dtype = _float_dtype(dtype)
        self._validation_split = float(validation_split)

        self.featurewise_center = bool(featurewise_center)
        self.samplewise_center = bool(samplewise_center)
        self.featurewise_std_normalization = bool(featurewise_std_normalization)
        self.samplewise_std_normalization = bool(samplewise_std_normalization)
        self.zca_whitening = bool(zca_whitening)
        # Keras's overrides: whitening centres and replaces std scaling; scaling centres
        if self.zca_whitening:
            if not self.featurewise_center:
                self.featurewise_center = True
                warnings.warn(f"{NAME}: zca_whitening overrides featurewise_center "
                              "(it is set to True)", stacklevel=2)
            if self.featurewise_std_normalization:
                self.featurewise_std_normalization = False
                warnings.warn(f"{NAME}: zca_whitening overrides featurewise_std_normalization "
                              "(it is set to False)", stacklevel=2)
        if self.featurewise_std_normalization and not self.featurewise_center:
            self.featurewise_center = True
            warnings.warn(f"{NAME}: featurewise_std_normalization overrides featurewise_center "
                          "(it is set to True)", stacklevel=2)
        if self.samplewise_std_normalization and not self.samplewise_center:
            self.samplewise_center = True
            warnings.warn(f"{NAME}: samplewise_std_normalization overrides samplewise_center "
                          "(it is set to True)", stacklevel=2)

        self.mean: np.ndarray | None = None  # (1, 1, C), from fit
        self.std: np.ndarray | None = None  # (1, 1, C), from fit
        self.principal_components: np.ndarray | None = None  # (D, D), D = H*W*C, from fit
        self._on_device: dict[str, tuple[Any, Array]] = {}
        self._rng = backend.host_rng()

    # ------------------------------------------------------------ random parameters
    def _draw(self, n: int, img_shape: tuple, rng: np.random.Generator) -> dict[str, Any]:
        """Keras's random transform parameters for n images of ``img_shape`` (H, W, C),
        each an array of n values (None where the transform is off)."""
        height, width = int(img_shape[0]), int(img_shape[1])
        zeros = np.zeros(n)
        params: dict[str, Any] = {
            "theta": (rng.uniform(-self.rotation_range, self.rotation_range, n)
                      if self.rotation_range else zeros),
            "tx": _draw_shift(rng, self.height_shift_range, n, height),
            "ty": _draw_shift(rng, self.width_shift_range, n, width),
            "shear": rng.uniform(-self.shear_range, self.shear_range, n) if self.shear_range
            else zeros,
        }
        if self.zoom_range[0] == 1 and self.zoom_range[1] == 1:
            params["zx"] = params["zy"] = np.ones(n)
        else:
            zoom = rng.uniform(self.zoom_range[0], self.zoom_range[1], (n, 2))
            params["zx"], params["zy"] = zoom[:, 0], zoom[:, 1]
        params["flip_horizontal"] = (rng.random(n) < 0.5 if self.horizontal_flip
                                     else np.zeros(n, dtype=bool))
        params["flip_vertical"] = (rng.random(n) < 0.5 if self.vertical_flip
                                   else np.zeros(n, dtype=bool))
        params["channel_shift_intensity"] = (
            rng.uniform(-self.channel_shift_range, self.channel_shift_range, n)
            if self.channel_shift_range else None)
        params["brightness"] = (rng.uniform(*self.brightness_range, n)
                                if self.brightness_range is not None else None)
        return params

    def get_random_transform(self, img_shape: tuple, seed: int | None = None) -> dict[str, Any]:
        """Random parameters for one image of shape (H, W, C), as Keras's dict:
        theta, tx, ty, shear, zx, zy, flip_horizontal, flip_vertical,
        channel_shift_intensity and brightness (None when off)."""
        where = f"{NAME}.get_random_transform"
        if len(img_shape) != 3:
            raise ValueError(f"{where}: expected the shape of one image (height, width, "
                             f"channels), got {tuple(img_shape)}")
        seed = _seed(seed, where)
        rng = self._rng if seed is None else np.random.default_rng(seed)
        params = self._draw(1, tuple(img_shape), rng)
        return {k: None if v is None else v[0].item() for k, v in params.items()}

    # ------------------------------------------------------------ transforming
    def _transform_batch(self, x: Array, params: dict[str, Any]) -> Array:
        """Apply per-image parameters (arrays of N values) to a float batch, in Keras's
        order: affine map, channel shift, horizontal then vertical flip, brightness."""
        n, height, width, _ = x.shape
        xp = backend.get_array_module(x)

        def get(key: str, default: float) -> np.ndarray | None:
            value = params.get(key, default)
            if value is None:
                return None
            value = np.asarray(value, dtype=np.float64)
            return np.broadcast_to(value, (n,)) if value.ndim == 0 else value

        theta, shear = get("theta", 0.0), get("shear", 0.0)
        tx, ty = get("tx", 0.0), get("ty", 0.0)
        zx, zy = get("zx", 1.0), get("zy", 1.0)
        warped = theta.any() or shear.any() or (zx != 1).any() or (zy != 1).any()
        shifted = tx.any() or ty.any()
        whole = np.all(tx == np.round(tx)) and np.all(ty == np.round(ty))
        if warped or (shifted and not whole):
            matrices = transforms.keras_matrices(height, width, theta, tx, ty, shear, zx, zy)
            x = transforms.affine(x, matrices, self.fill_mode, self.cval)
        elif shifted:  # the same pixels as the affine path, by one index gather
            x = transforms.translate(x, -tx, -ty, self.fill_mode, self.cval)

        intensity = get("channel_shift_intensity", None)
        if intensity is not None:
            low = x.min(axis=(1, 2, 3), keepdims=True)
            high = x.max(axis=(1, 2, 3), keepdims=True)
            shift = transforms.like(x, intensity, x.dtype)[:, None, None, None]
            x = xp.minimum(xp.maximum(x + shift, low), high)
        x = transforms.flip(x, get("flip_horizontal", 0.0) != 0, axis=2)
        x = transforms.flip(x, get("flip_vertical", 0.0) != 0, axis=1)
        brightness = get("brightness", None)
        if brightness is not None:
            x = x * transforms.like(x, brightness, x.dtype)[:, None, None, None]
        return x

    def _as_float(self, x: Any, rank: int | tuple, where: str) -> Array:
        if not hasattr(x, "shape") or not hasattr(x, "dtype"):
            x = np.asarray(x)
        ranks = (rank,) if isinstance(rank, int) else rank
        if x.ndim not in ranks:
            what = "one image (height, width, channels)" if ranks == (3,) else \
                "one image (H, W, C) or a batch (N, H, W, C)"
            raise ValueError(f"{where}: expected {what}, got an array of shape {tuple(x.shape)}")
        if np.dtype(x.dtype).kind not in "biuf":
            raise TypeError(f"{where}: expected numeric images, got dtype {x.dtype}")
        if backend.is_device_array(x):
            return x.astype(self.dtype, copy=False)
        return np.asarray(x, dtype=self.dtype)

    def apply_transform(self, x: Array, transform_parameters: dict[str, Any]) -> Array:
        """One image (H, W, C) transformed by ``transform_parameters`` (Keras's keys;
        missing ones mean no change), as a new float array."""
        x = self._as_float(x, 3, f"{NAME}.apply_transform")
        params = {k: None if v is None else np.array([v], dtype=np.float64)
                  for k, v in transform_parameters.items()}
        return self._transform_batch(x[None], params)[0]

    def random_transform(self, x: Array, seed: int | None = None) -> Array:
        """One image (H, W, C) randomly transformed (no standardization)."""
        x = self._as_float(x, 3, f"{NAME}.random_transform")
        return self.apply_transform(x, self.get_random_transform(x.shape, seed))

    def random_transform_batch(self, x: Array, rng: np.random.Generator) -> Array:
        """A float batch (N, H, W, C) randomly transformed, each image with its own
        parameters drawn from the host generator ``rng``, all in one pass."""
        return self._transform_batch(x, self._draw(x.shape[0], x.shape[1:], rng))

    # ------------------------------------------------------------ normalization
    def _stat(self, name: str, x: Array) -> Array:
        """The fitted statistic ``name`` on the device of ``x`` (moved once, then cached)."""
        value = getattr(self, name)
        expected = x.shape[3] if name != "principal_components" else math.prod(x.shape[1:])
        if np.ndim(value) and np.shape(value)[-1] not in (1, expected):  # else it broadcasts
            raise ValueError(f"{NAME}.standardize: the generator was fit on images with "
                             f"another shape ({name} has shape {np.shape(value)}); got images "
                             f"of shape {tuple(x.shape[1:])}")
        cached = self._on_device.get(name)
        if cached is not None and cached[0] is value and cached[1].dtype == x.dtype and \
                backend.get_array_module(cached[1]) is backend.get_array_module(x):
            return cached[1]
        moved = transforms.like(x, value, x.dtype)
        self._on_device[name] = (value, moved)
        return moved

    def _unfitted(self, what: str) -> None:
        warnings.warn(f"{NAME} specifies {what}, but it has not been fit on any training "
                      "data; call .fit(x_train) first", stacklevel=4)

    def _standardize(self, x: Array) -> Array:
        """``standardize`` on a float batch that may be changed in place."""
        xp = backend.get_array_module(x)
        if self.preprocessing_function is not None:
            images = [self.preprocessing_function(image) for image in x]
            for image, out in zip(x, images):
                if getattr(out, "shape", None) != image.shape:
                    raise ValueError(f"{NAME}: preprocessing_function must return an image of "
                                     f"the shape it was given, {tuple(image.shape)}; got "
                                     f"{getattr(out, 'shape', type(out).__name__)}")
            try:
                x = xp.stack(images).astype(self.dtype, copy=False)
            except TypeError as exc:
                raise TypeError(f"{NAME}: preprocessing_function must return an array on the "
                                f"device of its input ({exc})") from exc
        if self.rescale:
            x *= x.dtype.type(self.rescale)
        if self.samplewise_center:
            x -= x.mean(axis=(1, 2, 3), keepdims=True)
        if self.samplewise_std_normalization:
            x /= x.std(axis=(1, 2, 3), keepdims=True) + EPSILON
        if self.featurewise_center:
            if self.mean is None:
                self._unfitted("featurewise_center")
            else:
                x -= self._stat("mean", x)
        if self.featurewise_std_normalization:
            if self.std is None:
                self._unfitted("featurewise_std_normalization")
            else:
                x /= self._stat("std", x) + EPSILON
        if self.zca_whitening:
            if self.principal_components is None:
                self._unfitted("zca_whitening")
            else:
                flat = x.reshape(x.shape[0], -1)
                x = (flat @ self._stat("principal_components", x)).reshape(x.shape)
        return x

    def standardize(self, x: Array) -> Array:
        """The normalization of one image (H, W, C) or a batch (N, H, W, C), in Keras's
        order: preprocessing_function, rescale, samplewise then featurewise centring and
        scaling, ZCA whitening. Returns a new float array; ``x`` is left unchanged."""
        x = self._as_float(x, (3, 4), f"{NAME}.standardize")
        single = x.ndim == 3
        batch = x[None] if single else x
        batch = self._standardize(batch.copy())
        return batch[0] if single else batch

    # ------------------------------------------------------------ statistics
    def fit(self, x: Array, augment: bool = False, rounds: int = 1, seed: int | None = None
            ) -> None:
        """Learn the statistics the featurewise options and ZCA whitening use from
        images ``x`` (N, H, W, C): the per-channel ``mean`` and ``std`` (shape (1, 1, C))
        and the whitening matrix ``principal_components``. With ``augment=True`` they
        are taken over ``rounds`` randomly transformed copies of x. Sums run in float64
        over chunks of images, so the data is never copied whole."""
        where = f"{NAME}.fit"
        x = _check_images(x, where)
        if isinstance(rounds, bool) or not isinstance(rounds, numbers.Integral) or rounds < 1:
            raise ValueError(f"{where}: rounds must be an int >= 1, got {rounds!r}")
        seed = _seed(seed, where)
        base = _fresh_seed() if seed is None else seed
        n = x.shape[0]

        def chunks() -> Iterator[np.ndarray]:
            # the same images on every pass: each chunk's draws come from its own seed
            for r in range(rounds if augment else 1):
                for start in range(0, n, _FIT_CHUNK):
                    part = x[start:start + _FIT_CHUNK]
                    if augment:
                        part = self.random_transform_batch(
                            backend.to_device(part, dtype=self.dtype),
                            np.random.default_rng([base, r, start]))
                    yield backend.to_host(part).astype(np.float64)

        count = n * (rounds if augment else 1) * x.shape[1] * x.shape[2]
        channels = x.shape[3]
        mean = std = None
        if self.featurewise_center:
            mean = sum(c.sum(axis=(0, 1, 2)) for c in chunks()) / count
            self.mean = mean.reshape(1, 1, channels).astype(self.dtype)
        if self.featurewise_std_normalization:
            centred = 0.0 if mean is None else mean
            var = sum(((c - centred) ** 2).sum(axis=(0, 1, 2)) for c in chunks()) / count
            std = np.sqrt(var)
            self.std = std.reshape(1, 1, channels).astype(self.dtype)
        if self.zca_whitening:
            sigma = 0.0
            for c in chunks():
                if mean is not None:
                    c = c - mean
                if std is not None:
                    c = c / (std + EPSILON)
                flat = c.reshape(c.shape[0], -1)
                sigma = sigma + flat.T @ flat
            sigma = sigma / (count // (x.shape[1] * x.shape[2]))
            u, s, _ = np.linalg.svd(sigma)
            s_inv = 1.0 / np.sqrt(s[np.newaxis] + self.zca_epsilon)
            self.principal_components = ((u * s_inv) @ u.T).astype(self.dtype)

    # ------------------------------------------------------------ batches
    def flow(self, x: Array, y: ArrayLike | None = None, batch_size: int = 32,
             shuffle: bool = True, sample_weight: ArrayLike | None = None,
             seed: int | None = None, save_to_dir: str | os.PathLike | None = None,
             save_prefix: str = "", save_format: str = "png", subset: str | None = None
             ) -> "NumpyArrayIterator":
        """A ``NumpyArrayIterator`` over images ``x`` (N, H, W, C) and labels ``y``:
        batches of augmented, standardized images, ``(x, y)``, ``(x, y, sample_weight)``
        or just x when y is None."""
        return NumpyArrayIterator(x, y, self, batch_size=batch_size, shuffle=shuffle,
                                  sample_weight=sample_weight, seed=seed,
                                  save_to_dir=save_to_dir, save_prefix=save_prefix,
                                  save_format=save_format, subset=subset)


# ---------------------------------------------------------------- the iterator
class NumpyArrayIterator(Sequence):
    """Keras's iterator over arrays: a ``minicnn.utils.Sequence`` of augmented batches.

    ``it[i]`` is batch i of the current epoch and ``len(it)`` is ceil(n / batch_size);
    ``on_epoch_end()`` starts the next epoch (a new order when ``shuffle``, new random
    transforms). Batch i of epoch e draws its transforms from a generator seeded by
    (seed, e, i), so it is the same whenever it is asked for. Like Keras's, the
    iterator is also endless: ``next(it)`` runs through the batches and then on
    into the next epoch, and ``for batch in it`` never stops by itself.
    """

    def __init__(self, x: Array, y: ArrayLike | None, image_data_generator: ImageDataGenerator,
                 batch_size: int = 32, shuffle: bool = False,
                 sample_weight: ArrayLike | None = None, seed: int | None = None,
                 data_format: str | None = None, save_to_dir: str | os.PathLike | None = None,
                 save_prefix: str = "", save_format: str = "png", subset: str | None = None
                 ) -> None:
        where = "ImageDataGenerator.flow"
        if not isinstance(image_data_generator, ImageDataGenerator):
            raise TypeError(f"{where}: image_data_generator must be an ImageDataGenerator, "
                            f"got {type(image_data_generator).__name__}")
        if data_format not in (None, "channels_last"):
            raise ValueError(f"{where}: minicnn supports data_format='channels_last' only, "
                             f"got {data_format!r}")
        if isinstance(x, (tuple, list)):
            raise TypeError(f"{where}: x must be one array of images (N, H, W, C); Keras's "
                            "(images, other inputs) tuples are not supported")
        x = _check_images(x, where)
        n = x.shape[0]
        if y is not None:
            y = np.asarray(backend.to_host(y))
            if y.ndim == 0 or y.shape[0] != n:
                raise ValueError(f"{where}: x (images) and y (labels) must have the same "
                                 f"length; got x.shape = {tuple(x.shape)}, y.shape = {y.shape}")
        if sample_weight is not None:
            sample_weight = np.asarray(backend.to_host(sample_weight))
            if sample_weight.shape != (n,):
                raise ValueError(f"{where}: sample_weight must have shape ({n},), one weight per "
                                 f"image; got {sample_weight.shape}")
            if y is None:
                raise ValueError(f"{where}: sample_weight needs labels y")
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) \
                or batch_size < 1:
            raise ValueError(f"{where}: batch_size must be an int >= 1, got {batch_size!r}")
        seed = _seed(seed, where)
        if subset is not None:
            if subset not in ("training", "validation"):
                raise ValueError(f"{where}: unknown subset {subset!r}; expected 'training' "
                                 "or 'validation'")
            split = int(n * image_data_generator._validation_split)
            if subset == "validation" and split == 0:
                raise ValueError(f"{where}: subset='validation' holds no images: set "
                                 "validation_split in the ImageDataGenerator (it is "
                                 f"{image_data_generator._validation_split}) for {n} images")
            if subset == "training" and split == n:
                raise ValueError(f"{where}: subset='training' holds no images")
            part = slice(0, split) if subset == "validation" else slice(split, n)
            x = x[part]  # Keras's split: the first images validate, the rest train
            y = None if y is None else y[part]
            sample_weight = None if sample_weight is None else sample_weight[part]
            n = x.shape[0]
        if save_to_dir is not None:
            if save_format not in ("png", "PNG"):
                raise ValueError(f"{where}: save_format {save_format!r} is not supported; "
                                 "minicnn saves PNG files only")
            if x.shape[3] not in (1, 3, 4):
                raise ValueError(f"{where}: save_to_dir needs images with 1, 3 or 4 channels, "
                                 f"got {x.shape[3]}")
            os.makedirs(save_to_dir, exist_ok=True)

        self.image_data_generator = image_data_generator
        self.dtype = image_data_generator.dtype
        self.x = backend.to_device(x, dtype=self.dtype)  # once, not per batch
        self.y = None if y is None else backend.to_device(y)
        self.sample_weight = None if sample_weight is None else backend.to_device(sample_weight)
        self.n = n
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.seed = seed
        self._base_seed = _fresh_seed() if seed is None else seed
        self.data_format = "channels_last"
        self.save_to_dir = save_to_dir
        self.save_prefix = save_prefix
        self.save_format = "png"
        self.epoch = 0
        self.batch_index = 0
        self.index_array = self._order()

    def _order(self) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.n)
        return np.random.default_rng([self._base_seed, self.epoch, 0]).permutation(self.n)

    def __len__(self) -> int:
        return (self.n + self.batch_size - 1) // self.batch_size

    def __getitem__(self, index: int):
        if isinstance(index, bool) or not isinstance(index, numbers.Integral) \
                or not 0 <= index < len(self):
            raise IndexError(f"NumpyArrayIterator: batch index {index!r} out of range; "
                             f"there are {len(self)} batches")
        chosen = self.index_array[self.batch_size * index:self.batch_size * (index + 1)]
        return self._batch(chosen, np.random.default_rng([self._base_seed, self.epoch,
                                                          int(index), 1]))

    def _batch(self, chosen: np.ndarray, rng: np.random.Generator):
        rows = transforms.like(self.x, chosen)
        generator = self.image_data_generator
        x = generator._standardize(generator.random_transform_batch(self.x[rows], rng))
        if self.save_to_dir is not None:
            self._save(x, chosen, rng)
        if self.y is None:
            return x
        if self.sample_weight is None:
            return x, self.y[rows]
        return x, self.y[rows], self.sample_weight[rows]

    def on_epoch_end(self) -> None:
        """Start the next epoch: a new order (when shuffling) and new transforms."""
        self.epoch += 1
        self.batch_index = 0
        self.index_array = self._order()

    def reset(self) -> None:
        """Make ``next`` start again from the first batch of the current epoch."""
        self.batch_index = 0

    def __iter__(self) -> "NumpyArrayIterator":
        return self

    def __next__(self):
        if self.batch_index >= len(self):
            self.on_epoch_end()
        batch = self[self.batch_index]
        self.batch_index += 1
        return batch

    next = __next__  # Keras's name

    def _save(self, x: Array, chosen: np.ndarray, rng: np.random.Generator) -> None:
        """Each image as a PNG, scaled to 0..255 as Keras's array_to_img does."""
        import matplotlib.image  # noqa: PLC0415  (only when saving)

        for image, index in zip(backend.to_host(x).astype(np.float64), chosen):
            image = image + max(-image.min(), 0)
            top = image.max()
            if top != 0:
                image = image / top
            pixels = (image * 255).astype(np.uint8)
            if pixels.shape[2] == 1:
                pixels = np.repeat(pixels, 3, axis=2)  # grey as RGB: no colour map involved
            name = f"{self.save_prefix}_{int(index)}_{int(rng.integers(10**4))}.png"
            fileio.write_atomic(os.path.join(self.save_to_dir, name),
                                lambda f, p=pixels: matplotlib.image.imsave(f, p, format="png"))
