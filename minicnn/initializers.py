"""Weight initializers with Keras 2.2.4's names, parameters and defaults, drawn on the host.

An initializer is any callable ``f(shape, rng) -> np.ndarray``; the names below
are functions with Keras's defaults, the classes take Keras's parameters
(``RandomNormal(stddev=0.01)``; ``seed=`` draws from a generator of that seed
instead of minicnn's).

    zeros, ones, Constant(value=0)        W = 0, 1, value
    RandomNormal(mean=0, stddev=0.05)     W ~ N(mean, stddev^2)
    RandomUniform(minval=-0.05, maxval=0.05)
    TruncatedNormal(mean=0, stddev=0.05)  N(mean, stddev^2), values beyond 2 stddev redrawn
    VarianceScaling(scale=1, mode='fan_in', distribution='normal')
        n = fan_in, fan_out or their mean (mode); v = scale / max(1, n)
        'normal':  truncated normal at 2s, s = sqrt(v) / 0.87962566 so that the
                   truncated values have variance v (0.8796... is the std of a
                   standard normal truncated at +-2)
        'uniform': U(-l, l), l = sqrt(3 v)
    Orthogonal(gain=1)                    the Q of a (prod(shape[:-1]), shape[-1])
                                          Gaussian matrix's SVD, times gain
    Dirac(others=None)                    conv kernel (kh, kw, c_in, filters): filter i < min(c_in,
                                          filters) is the identity on channel i at the centre tap
                                          (PyTorch's dirac_); the other filters are zero, or drawn
                                          by ``others`` (an initializer) when given

    glorot_uniform  VarianceScaling(1, 'fan_avg', 'uniform')   l = sqrt(6 / (fan_in + fan_out))
    glorot_normal   VarianceScaling(1, 'fan_avg', 'normal')
    he_normal       VarianceScaling(2, 'fan_in', 'normal')     variance 2 / fan_in
    he_uniform      VarianceScaling(2, 'fan_in', 'uniform')
    lecun_normal    VarianceScaling(1, 'fan_in', 'normal')
    lecun_uniform   VarianceScaling(1, 'fan_in', 'uniform')

For a conv kernel (kh, kw, c_in, filters): fan_in = kh*kw*c_in and
fan_out = kh*kw*filters; for a dense kernel (in, units): fan_in = in, fan_out = units.
Weights are drawn with NumPy whatever the backend, so a seed gives the same
network on the CPU and on the GPU.

``patch_whitening(images, kernel_size, eps)`` is no initializer but the kernel
a whitening convolution is set to from data (see its docstring).

``serialize`` gives Keras's form of an initializer, ``{"class_name":
"VarianceScaling", "config": {...}}`` (what Keras writes for glorot_uniform and
the other named functions too); ``deserialize`` and ``get`` take it back.
"""
from __future__ import annotations

import math
import numbers
from typing import Callable

import numpy as np

from minicnn import backend

TRUNCATED_STD = 0.87962566103423978  # std of a standard normal truncated at +-2


def fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """(fan_in, fan_out) of a kernel shape, Keras's convention."""
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive_field = math.prod(shape[:-2])
    return shape[-2] * receptive_field, shape[-1] * receptive_field


def _number(value: float, what: str, where: str, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) \
            or not math.isfinite(value) or (positive and value <= 0):
        kind = "a finite number > 0" if positive else "a finite number"
        raise ValueError(f"{where}: {what} must be {kind}, got {value!r}")
    return float(value)


def _truncated_standard_normal(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    values = rng.standard_normal(size=shape)
    outside = np.abs(values) > 2
    while outside.any():  # redraw the tails: a normal truncated at +-2 std
        values[outside] = rng.standard_normal(size=int(outside.sum()))
        outside = np.abs(values) > 2
    return values


class Initializer:
    """Keras's initializer classes: ``init(shape, rng)``; ``seed`` replaces ``rng``."""

    def __init__(self, seed: int | None = None) -> None:
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
            raise ValueError(f"{type(self).__name__}: seed must be an int or None, got {seed!r}")
        self.seed = seed

    def _rng(self, rng: np.random.Generator) -> np.random.Generator:
        return rng if self.seed is None else np.random.default_rng(self.seed)

    def get_config(self) -> dict:
        return {"seed": self.seed}

    @classmethod
    def from_config(cls, config: dict) -> "Initializer":
        return cls(**config)

    def __repr__(self) -> str:
        arguments = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({arguments})"


class Constant(Initializer):
    def __init__(self, value: float = 0.0) -> None:
        super().__init__()
        self.value = _number(value, "value", "Constant")

    def __call__(self, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
        return np.full(shape, self.value)

    def get_config(self) -> dict:
        return {"value": self.value}


class RandomNormal(Initializer):
    def __init__(self, mean: float = 0.0, stddev: float = 0.05, seed: int | None = None) -> None:
        super().__init__(seed)
        self.mean = _number(mean, "mean", "RandomNormal")
        self.stddev = _number(stddev, "stddev", "RandomNormal", positive=True)

    def __call__(self, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
        return self.mean + self.stddev * self._rng(rng).standard_normal(size=shape)

    def get_config(self) -> dict:
        return {"mean": self.mean, "stddev": self.stddev, "seed": self.seed}


class TruncatedNormal(RandomNormal):
    def __call__(self, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
        return self.mean + self.stddev * _truncated_standard_normal(shape, self._rng(rng))


class RandomUniform(Initializer):
    def __init__(self, minval: float = -0.05, maxval: float = 0.05,
                 seed: int | None = None) -> None:
        super().__init__(seed)
        self.minval = _number(minval, "minval", "RandomUniform")
        self.maxval = _number(maxval, "maxval", "RandomUniform")
        if self.maxval < self.minval:
            raise ValueError(f"RandomUniform: minval {minval!r} must not exceed "
                             f"maxval {maxval!r}")

    def __call__(self, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
        return self._rng(rng).uniform(self.minval, self.maxval, size=shape)

    def get_config(self) -> dict:
        return {"minval": self.minval, "maxval": self.maxval, "seed": self.seed}


MODES = ("fan_in", "fan_out", "fan_avg")
DISTRIBUTIONS = ("normal", "uniform")


class VarianceScaling(Initializer):
    def __init__(self, scale: float = 1.0, mode: str = "fan_in", distribution: str = "normal",
                 seed: int | None = None) -> None:
        super().__init__(seed)
        self.scale = _number(scale, "scale", "VarianceScaling", positive=True)
        if mode not in MODES:
            raise ValueError(f"VarianceScaling: mode must be one of {', '.join(MODES)}, "
                             f"got {mode!r}")
        if distribution not in DISTRIBUTIONS:
            raise ValueError(f"VarianceScaling: distribution must be 'normal' or 'uniform', "
                             f"got {distribution!r}")
        self.mode, self.distribution = mode, distribution

    def __call__(self, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
        fan_in, fan_out = fans(shape)
        n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[self.mode]
        variance = self.scale / max(1.0, n)
        rng = self._rng(rng)
        if self.distribution == "normal":
            return _truncated_standard_normal(shape, rng) * (math.sqrt(variance) / TRUNCATED_STD)
        limit = math.sqrt(3.0 * variance)
        return rng.uniform(-limit, limit, size=shape)

    def get_config(self) -> dict:
        return {"scale": self.scale, "mode": self.mode, "distribution": self.distribution,
                "seed": self.seed}


class Orthogonal(Initializer):
    def __init__(self, gain: float = 1.0, seed: int | None = None) -> None:
        super().__init__(seed)
        self.gain = _number(gain, "gain", "Orthogonal")

    def __call__(self, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
        if len(shape) < 2:
            raise ValueError(f"Orthogonal: needs a shape of rank 2 or more, got {tuple(shape)}")
        rows, columns = math.prod(shape[:-1]), shape[-1]
        a = self._rng(rng).standard_normal(size=(rows, columns))
        u, _, v = np.linalg.svd(a, full_matrices=False)
        q = u if u.shape == (rows, columns) else v  # orthonormal columns, or rows
        return self.gain * q.reshape(shape)

    def get_config(self) -> dict:
        return {"gain": self.gain, "seed": self.seed}


class Dirac(Initializer):
    """PyTorch's ``dirac_`` for a channels-last conv kernel (kh, kw, c_in, filters): the
    first min(c_in, filters) filters pass channel i through unchanged (a 1 at the
    centre tap, (kh // 2, kw // 2)); the rest are zero, or drawn by ``others``."""

    def __init__(self, others: str | dict | Callable | None = None) -> None:
        super().__init__()
        self.others = None if others is None else get(others, "Dirac others")

    def __call__(self, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
        if len(shape) != 4:
            raise ValueError(f"Dirac: needs a conv kernel shape (kh, kw, c_in, filters), got "
                             f"{tuple(shape)}")
        kh, kw, c_in, filters = shape
        kernel = np.zeros(shape)
        identity = min(c_in, filters)
        if self.others is not None and filters > identity:
            kernel[..., identity:] = self.others((kh, kw, c_in, filters - identity), rng)
        kernel[kh // 2, kw // 2, np.arange(identity), np.arange(identity)] = 1.0
        return kernel

    def get_config(self) -> dict:
        return {"others": None if self.others is None else serialize(self.others)}

    def __repr__(self) -> str:
        return f"Dirac(others={self.get_config()['others']!r})"


def patch_whitening(images: np.ndarray, kernel_size: int | tuple[int, int] = 2,
                    eps: float = 5e-4, chunk: int = 512) -> np.ndarray:
    """The kernel of a "whitening" convolution (airbench's first layer), from data.

    Every kh x kw patch of ``images`` (N, H, W, C), flattened in the kernel's
    (kh, kw, C) order to a vector p of D = kh*kw*C values, gives the patches'
    second-moment matrix S = mean(p p^T) (not mean-centred, as airbench) and its
    eigen-decomposition S = V diag(lambda) V^T (largest lambda first). Filter j
    is v_j / sqrt(lambda_j + eps), and filters D..2D-1 are their negatives, so
    the kernel has shape (kh, kw, C, 2D) and its first D outputs have
    mean(o o^T) = diag(lambda / (lambda + eps)): about the identity where lambda
    is well above eps. ``chunk`` images at a time are summed, in float64, on the
    host (images on the GPU are copied over); the result is a host array.
    """
    kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, numbers.Integral) \
        else tuple(kernel_size)
    x = backend.to_host(images)  # from any backend: the sums run on the host
    if x.ndim != 4 or x.shape[1] < kh or x.shape[2] < kw or x.shape[0] < 1:
        raise ValueError(f"patch_whitening: images must be (N, H, W, C) with H >= {kh} and "
                         f"W >= {kw}, got shape {x.shape}")
    eps = _number(eps, "eps", "patch_whitening", positive=True)
    n, h, w, c = x.shape
    oh, ow = h - kh + 1, w - kw + 1
    taps = [(a, b) for a in range(kh) for b in range(kw)]
    moments = np.zeros((kh * kw * c, kh * kw * c))
    for start in range(0, n, chunk):
        part = x[start:start + chunk].astype(np.float64)
        # columns in (a, b, channel) order: one (M, C) block per tap, side by side
        columns = np.concatenate([part[:, a:a + oh, b:b + ow, :].reshape(-1, c)
                                  for a, b in taps], axis=1)
        moments += columns.T @ columns
    moments /= n * oh * ow
    eigenvalues, eigenvectors = np.linalg.eigh(moments)
    eigenvalues, eigenvectors = eigenvalues[::-1], eigenvectors[:, ::-1]  # largest first
    scaled = eigenvectors / np.sqrt(np.maximum(eigenvalues, 0.0) + eps)
    return np.concatenate([scaled, -scaled], axis=1).reshape(kh, kw, c, 2 * kh * kw * c)


def zeros(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    return np.zeros(shape)


def ones(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    return np.ones(shape)


_SCALINGS: dict[str, tuple[float, str, str]] = {}  # name: VarianceScaling's arguments


def _scaling(name: str, scale: float, mode: str, distribution: str) -> Callable:
    _SCALINGS[name] = (scale, mode, distribution)

    def init(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
        return VarianceScaling(scale, mode, distribution)(shape, rng)
    init.__name__ = init.__qualname__ = name
    init.__doc__ = f"VarianceScaling({scale}, {mode!r}, {distribution!r}), Keras's {name}."
    return init


glorot_uniform = _scaling("glorot_uniform", 1.0, "fan_avg", "uniform")
glorot_normal = _scaling("glorot_normal", 1.0, "fan_avg", "normal")
he_normal = _scaling("he_normal", 2.0, "fan_in", "normal")
he_uniform = _scaling("he_uniform", 2.0, "fan_in", "uniform")
lecun_normal = _scaling("lecun_normal", 1.0, "fan_in", "normal")
lecun_uniform = _scaling("lecun_uniform", 1.0, "fan_in", "uniform")

INITIALIZERS: dict[str, Callable] = {
    f.__name__: f for f in (glorot_uniform, glorot_normal, he_normal, he_uniform, lecun_normal,
                            lecun_uniform, zeros, ones)}
# Keras's other names for its classes with their defaults (keras/initializers.py).
INITIALIZERS.update({
    "zero": zeros, "one": ones, "constant": Constant(), "random_normal": RandomNormal(),
    "normal": RandomNormal(), "random_uniform": RandomUniform(), "uniform": RandomUniform(),
    "truncated_normal": TruncatedNormal(), "variance_scaling": VarianceScaling(),
    "orthogonal": Orthogonal(), "dirac": Dirac()})


# Keras's class names (keras/initializers.py), for the dict form of serialize/deserialize.
CLASSES: dict[str, Callable] = {
    cls.__name__: cls for cls in (Constant, RandomNormal, TruncatedNormal, RandomUniform,
                                  VarianceScaling, Orthogonal, Dirac)}
CLASSES.update({"Zeros": lambda: zeros, "Ones": lambda: ones})


def serialize(initializer: Callable) -> dict | str:
    """Keras's form of an initializer: ``{"class_name": "VarianceScaling", "config":
    {...}}``. The named functions give what Keras writes for them (glorot_uniform is
    VarianceScaling(1, 'fan_avg', 'uniform'), zeros is Zeros); any other function
    gives its name, for ``deserialize``'s custom_objects."""
    if isinstance(initializer, Initializer):
        return {"class_name": type(initializer).__name__, "config": initializer.get_config()}
    if initializer is zeros or initializer is ones:
        return {"class_name": initializer.__name__.capitalize(), "config": {}}
    name = getattr(initializer, "__name__", None)
    if name in _SCALINGS and INITIALIZERS.get(name) is initializer:
        scale, mode, distribution = _SCALINGS[name]
        return {"class_name": "VarianceScaling",
                "config": {"scale": scale, "mode": mode, "distribution": distribution,
                           "seed": None}}
    if hasattr(initializer, "get_config"):  # a custom class in Keras's style
        return {"class_name": type(initializer).__name__, "config": initializer.get_config()}
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"initializers.serialize: cannot name the initializer {initializer!r}; "
                         "use a def'd function or a class with get_config(), and give it to "
                         "the loader in custom_objects")
    return name


def deserialize(config: dict | str, custom_objects: dict | None = None,
                where: str = "initializers.deserialize") -> Callable:
    """The initializer ``serialize`` described: a name, or ``{"class_name", "config"}``.
    ``custom_objects`` maps the names of your own initializers (functions, or classes
    built with ``from_config``/``cls(**config)``) to them."""
    custom_objects = custom_objects or {}
    if isinstance(config, str):
        if config in custom_objects:
            return custom_objects[config]
        if config not in INITIALIZERS:
            raise ValueError(f"{where}: unknown initializer {config!r}; if it is your own, "
                             f"pass it as custom_objects={{{config!r}: {config}}}")
        return get(config, where)
    if not (isinstance(config, dict) and isinstance(config.get("class_name"), str)
            and isinstance(config.get("config", {}), dict)):
        raise ValueError(f"{where}: expected an initializer name or a dict "
                         f'{{"class_name": ..., "config": {{...}}}}, got {config!r}')
    name, arguments = config["class_name"], config.get("config", {})
    cls = custom_objects.get(name, CLASSES.get(name))
    if cls is None:
        raise ValueError(f"{where}: unknown initializer class {name!r}: expected one of "
                         f"{', '.join(sorted(CLASSES))}, or pass your class as "
                         f"custom_objects={{{name!r}: {name}}}")
    try:
        return cls.from_config(arguments) if hasattr(cls, "from_config") else cls(**arguments)
    except TypeError as exc:
        raise ValueError(f"{where}: {name} does not take the config {arguments!r}: {exc}") \
            from None


def get(identifier: str | dict | Callable, where: str = "initializers.get") -> Callable:
    """An initializer ``f(shape, rng) -> np.ndarray`` from its name, a ``serialize`` dict,
    or a callable as is; ``where`` names the caller (a layer) in the error for an
    unknown name."""
    if callable(identifier):
        return identifier
    if isinstance(identifier, dict):
        return deserialize(identifier, where=where)
    if not isinstance(identifier, str) or identifier not in INITIALIZERS:
        raise ValueError(f"{where}: unknown initializer {identifier!r}: expected one of "
                         f"{', '.join(sorted(INITIALIZERS))} or a callable f(shape, rng)")
    return INITIALIZERS[identifier]
