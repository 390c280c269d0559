"""Check analytic gradients against central differences, in float64.

    dF/dθ_i  ≈  (F(θ + h e_i) - F(θ - h e_i)) / 2h          (error O(h²))
    rel_i    =  |analytic_i - numeric_i| / max(|analytic_i| + |numeric_i|, floor)

For a layer, F(x, θ) = sum(layer.forward(x) * R) with a fixed random R, so
``layer.backward(R)`` must return dF/dx and fill dF/dθ. For a model, F is the
compiled loss. Layers that draw random numbers (Dropout) are rewound before
every evaluation, so all evaluations see the same mask.

    >>> minicnn.set_floatx("float64")
    >>> result = check_layer(Conv2D(4, 3), x)      # x float64, (N, H, W, C)
    >>> result.passed, result.max_error, result.where
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from minicnn import backend
from minicnn.backend import Array

DEFAULT_TOLERANCE = 1e-5


@dataclass
class GradCheckResult:
    """Worst relative error over all checked entries, and where it occurred."""
    max_error: float
    where: str
    tolerance: float
    errors: dict[str, float] = field(default_factory=dict)  # worst error per tensor

    @property
    def passed(self) -> bool:
        return self.max_error <= self.tolerance

    def __str__(self) -> str:
        verdict = "passed" if self.passed else "FAILED"
        per_tensor = ", ".join(f"{k}: {v:.2e}" for k, v in self.errors.items())
        return (f"gradient check {verdict}: worst relative error {self.max_error:.2e} at "
                f"{self.where} (tolerance {self.tolerance:.0e}; {per_tensor})")


def _rewinder(layers) -> Callable[[], None]:
    """A function that puts every layer's random generator back where it is now."""
    holders = [layer for layer in layers if getattr(layer, "rng", None) is not None]
    states = [backend.rng_state(layer.rng) for layer in holders]
    for layer, state in zip(holders, states):
        if state is None:
            raise ValueError(f"gradcheck: cannot rewind the random generator of "
                             f"{layer.describe()} on the {backend.get_backend()} backend; "
                             "check layers that draw random numbers on numpy")

    def rewind() -> None:
        for layer, state in zip(holders, states):
            backend.set_rng_state(layer.rng, state)
    return rewind


def numerical_gradient(f: Callable[[], float], array: Array, eps: float,
                       indices: np.ndarray) -> np.ndarray:
    """Central differences of ``f()`` with respect to ``array`` (changed in place and
    restored) at the flat ``indices``; returns the values there."""
    flat = array.reshape(-1)  # a view: writing into it perturbs the array itself
    numeric = np.empty(len(indices))
    for k, i in enumerate(indices):
        original = float(flat[i])
        flat[i] = original + eps
        plus = f()
        flat[i] = original - eps
        minus = f()
        flat[i] = original
        numeric[k] = (plus - minus) / (2 * eps)
    return numeric


def _compare(name, analytic, array, f, eps, max_entries, rng, floor, worst, errors):
    size = int(array.size)
    indices = np.arange(size) if max_entries is None or size <= max_entries else \
        np.sort(rng.choice(size, max_entries, replace=False))
    numeric = numerical_gradient(f, array, eps, indices)
    expected = backend.to_host(analytic).reshape(-1)[indices]
    rel = np.abs(expected - numeric) / np.maximum(np.abs(expected) + np.abs(numeric), floor)
    k = int(np.argmax(rel)) if rel.size else 0
    errors[name] = float(rel[k]) if rel.size else 0.0
    if rel.size and rel[k] > worst[0]:
        position = np.unravel_index(int(indices[k]), array.shape)
        worst[:] = [float(rel[k]), f"{name}[{', '.join(map(str, position))}] "
                    f"(analytic {expected[k]:.6g}, numeric {numeric[k]:.6g})"]


def _require_float64(where: str, arrays: dict) -> None:
    """float32 would drown the differences in rounding: name the first array that is not float64."""
    for name, a in arrays.items():
        if a.dtype != np.float64:
            raise ValueError(f"{where}: gradient checks need float64 arrays, but {name} is "
                             f"{a.dtype}: call minicnn.set_floatx('float64') before building "
                             "the layer or model, and pass float64 x")


def check_layer(layer: Any, x: Array, training: bool = True, eps: float = 1e-6,
                tolerance: float = DEFAULT_TOLERANCE, max_entries: int | None = None,
                seed: int = 0, floor: float = 1e-8) -> GradCheckResult:
    """Compare ``layer.backward`` with central differences for x and every parameter."""
    rng = np.random.default_rng(seed)
    x = backend.to_device(x)
    if not layer.built:
        layer.maybe_build(x.shape)
    _require_float64(f"check_layer({layer.describe()})",
                     {"x": x, **{f"{layer.describe()} {k}": p for k, p in layer.params.items()}})
    rewind = _rewinder([layer])
    y = layer.forward(x, training)
    weights = backend.to_device(rng.standard_normal(y.shape))
    analytic = {"x": layer.backward(weights)}
    analytic.update({name: layer.grads[name].copy() for name in layer.params})
    if analytic["x"] is None:
        del analytic["x"]

    def f() -> float:
        rewind()
        return float((layer.forward(x, training) * weights).sum())

    worst, errors = [0.0, "nowhere"], {}
    for name, grad in analytic.items():
        array = x if name == "x" else layer.params[name]
        _compare(name, grad, array, f, eps, max_entries, rng, floor, worst, errors)
    return GradCheckResult(worst[0], worst[1], tolerance, errors)


def check_model(model: Any, x: Array, y: Array, eps: float = 1e-6,
                tolerance: float = DEFAULT_TOLERANCE, max_entries: int | None = 20,
                seed: int = 0, floor: float = 1e-8) -> GradCheckResult:
    """Compare the gradients of a compiled model's loss with central differences for
    every parameter (at most ``max_entries`` random entries per tensor)."""
    rng = np.random.default_rng(seed)
    if backend.floatx() != "float64":  # the model casts every batch to it
        raise ValueError("check_model: gradient checks need float64, but the default float "
                         f"type is {backend.floatx()}: call minicnn.set_floatx('float64') "
                         "before building the model")
    x = backend.to_device(x, dtype=np.float64)
    if not model.built:
        model.build(x.shape)
    _require_float64("check_model", {f"{layer.describe()} {k}": p for layer in model.layers
                                     for k, p in layer.params.items()})
    rewind = _rewinder(model.layers)
    try:
        model.compute_gradients(x, y)  # training mode, as a step: Dropout draws its masks
    except ValueError as exc:  # bad x or y: say who was called
        raise ValueError(f"check_model: {exc}") from None
    analytic = {f"{layer.name}/{name}": (layer, name, layer.grads[name].copy())
                for layer in model.layers for name in layer.params}

    def f() -> float:
        rewind()  # the same Dropout masks as the analytic pass
        return float(model.compute_loss(x, y, training=True))

    worst, errors = [0.0, "nowhere"], {}
    for key, (layer, name, grad) in analytic.items():
        _compare(key, grad, layer.params[name], f, eps, max_entries, rng, floor, worst, errors)
    return GradCheckResult(worst[0], worst[1], tolerance, errors)
