"""Check analytic gradients against central differences, in float64.

What is differentiated
    layer:  F(x, θ) = sum(layer.forward(x) * R) with a fixed standard-normal R,
            so ``layer.backward(R)`` must return dF/dx and fill dF/dθ;
    loss:   F = R * loss(y_pred, y_true), against R * ``loss.backward()``;
    model:  F = the compiled loss, against ``model.compute_gradients``.
Layers that draw random numbers (Dropout) are rewound before every
evaluation, so every evaluation sees the same mask.

The numeric derivative of entry i of a tensor u (x or a parameter)
    h   = eps, or by default 1e-6 * max(1, rms(u))       (the step follows u's scale)
    n_i = sum((y(u + h e_i) - y(u - h e_i)) * R) / 2h     (y: the layer's output)
The two outputs are subtracted element by element before the sum, in float64
on the host: outputs that the nudge does not reach come out bitwise equal and
cancel exactly, so only the few reached outputs carry roundoff, not the whole
sum. For a model y is the loss itself. The truncation error, h² F'''/6, is
about 1e-12 of the slope where F varies on a scale of 1, and (h/s)² where it
varies on a scale s (log p near p = 1e-3): there, pass a smaller eps. A step
of 1e-5 would cut the roundoff tenfold, but a kernel's nudge is multiplied by
x, and its truncation error in a saturated tanh reached 8e-7; 1e-6 keeps both
small.

The error of entry i, with a floor under small entries
    e_i     = |a_i - n_i| / max(|a_i| + |n_i|, floor_u, 1e7 noise_i)
    floor_u = max(1e-3 * max_j (|a_j| + |n_j|), floor)    (j: the tensor's checked entries)
    noise_i = eps64 * sum_j |R_j| (|y_j(u + h e_i)| + |y_j(u - h e_i)|) / 2h
              (j: the outputs the nudge moved; eps64 = 2.2e-16)
A purely relative error has nothing under a small entry: roundoff of 1e-10 in
n_i is already 1e-5 of an entry of 1e-5, and a correct layer fails on some
CPUs and not others. floor_u measures such an entry against the tensor's own
gradient scale instead; noise_i, what rounding the moved outputs can put into
n_i, keeps a tensor whose gradients are all tiny next to its outputs (a
saturated tanh) from failing on roundoff. Bugs still show: a gradient 1% off
gives e = 5e-3 on the large entries, and any entry off by more than 1e-8 of
its tensor's largest gradient (and by more than 100 roundoffs) fails. The
check passes when every e_i <= tolerance (1e-5). ``floor`` (absolute) only
matters for a tensor whose gradient is all zero. Entries whose gradient is
below the forward's resolution (the nudge moves no output bit) cannot be
checked by differences at all: check at inputs of order 1. Measured over 50
to 300 random seeds of every layer and loss, on three BLAS kernels (Haswell,
Sandybridge, Nehalem): correct layers score at most 1.3e-7, and a backward
1% off at least 5.0e-3.

Kinks. Within h of a point where F is not differentiable (a max-pool tie,
ReLU at 0) the central difference averages two different slopes, and no
backward can match it. So for an entry that fails, the one-sided slopes
    s+ = (F(u + h e_i) - F(u)) / h         s- = (F(u) - F(u - h e_i)) / h
are compared (one more evaluation, at u itself, shared by all entries).
Where F is smooth they differ by h F'', a millionth of the slope; across a
kink by the jump itself, and a kink moves n_i by at most half of its jump.
The entry sits on a kink when
    several outputs: the outputs y_j whose own one-sided slopes differ by more
        than 1e-3 of their size (smooth outputs: ~1e-6) have jumps that explain
        the failure: sum_j |R_j| |jump_j| >= |a_i - n_i|;
    one output (a loss, a model): |s+ - s-| > 1e-3 (|s+| + |s-|), |s+ - s-| >=
        |a_i - n_i|, and a_i lies within |a_i - n_i| / 4 of s+ or s- (a kink's
        gradient is one of its one-sided slopes, not a wrong value between).
Failures that all sit on kinks make the verdict "inconclusive" (not passed;
``result.kinks`` lists them); any other failure makes it "FAILED".

    >>> minicnn.set_floatx("float64")
    >>> result = check_layer(Conv2D(4, 3), x)      # x float64, (N, H, W, C)
    >>> result.verdict, result.max_error, result.where, result.kinks
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from minicnn import backend
from minicnn.backend import Array

DEFAULT_TOLERANCE = 1e-5
STEP = 1e-6             # h = STEP * max(1, rms(u)) unless eps is given
RELATIVE_FLOOR = 1e-3   # floor_u = RELATIVE_FLOOR * the tensor's largest |a| + |n|
ABSOLUTE_FLOOR = 1e-12  # the floor of a tensor whose gradient is zero
ROUNDOFF_FLOOR = 1e7    # and at least ROUNDOFF_FLOOR * noise_i: 100 roundoffs score 1e-5
KINK_JUMP = 1e-3        # a slope that changes by more than this fraction within h has a kink
EPSILON = float(np.finfo(np.float64).eps)


@dataclass
class Kink:
    """An entry whose check failed because a non-differentiable point lies within h."""
    where: str          # e.g. "x[0, 1, 2, 0]"
    what: str           # "a max-pool tie", "a ReLU at 0", "a kink"
    analytic: float
    numeric: float
    left_slope: float   # s- = (F(u) - F(u - h e_i)) / h
    right_slope: float  # s+ = (F(u + h e_i) - F(u)) / h
    error: float
    output: str = ""    # the output whose slope jumps, where F's own slopes hide it

    def __str__(self) -> str:
        slope = f"the slope of {self.output}" if self.output else "the slope"
        return (f"{self.where} sits on {self.what} ({slope} jumps from {self.left_slope:.3g} "
                f"to {self.right_slope:.3g} within h); the gradient is not defined there: "
                "perturb the input")


@dataclass
class GradCheckResult:
    """The worst error over the checked entries that are not on kinks, where it
    occurred, and the failing entries that sit on kinks."""
    max_error: float
    where: str
    tolerance: float
    errors: dict[str, float] = field(default_factory=dict)  # worst error per tensor, kinks aside
    kinks: list[Kink] = field(default_factory=list)  # worst first
    entries: int = 0  # how many entries were compared, over all tensors

    @property
    def verdict(self) -> str:
        """"passed"; "FAILED" (an entry away from any kink is wrong); or
        "inconclusive" (every failing entry sits on a kink)."""
        if self.max_error > self.tolerance:
            return "FAILED"
        return "inconclusive" if self.kinks else "passed"

    @property
    def passed(self) -> bool:
        return self.verdict == "passed"

    def __str__(self) -> str:
        per_tensor = ", ".join(f"{k}: {v:.2e}" for k, v in self.errors.items())
        worst = (f"worst relative error {self.max_error:.2e} at {self.where} "
                 f"(tolerance {self.tolerance:.0e}; {per_tensor})")
        kinks = len(self.kinks)
        if self.verdict == "inconclusive":
            if kinks == self.entries:
                return (f"gradient check inconclusive: {self.kinks[0]}; all {kinks} entries "
                        f"checked sit on kinks (tolerance {self.tolerance:.0e})")
            return (f"gradient check inconclusive: {self.kinks[0]}; {kinks} of the {self.entries} "
                    f"entries checked {'sits' if kinks == 1 else 'sit'} on kinks, the others "
                    f"agree: {worst}")
        text = f"gradient check {self.verdict}: {worst}"
        if kinks:
            text += (f"; besides, {kinks} {'entry sits' if kinks == 1 else 'entries sit'} "
                     f"on kinks, e.g. {self.kinks[0]}")
        return text


def _build(layer: Any, x: Array) -> None:
    """Build a layer or model for batches like ``x`` (Keras's shapes: batch axis included)."""
    if not layer.built:  # a layer's maybe_build checks the rank first; a model has build
        getattr(layer, "maybe_build", layer.build)(tuple(x.shape))


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


def step_size(array: Array, eps: float | None = None, caller: str = "step_size") -> float:
    """The finite-difference step for ``array``: ``eps`` if given, else
    STEP * max(1, rms(array)), the same small fraction of the values whatever
    their scale. ``caller`` names who asked, in the error for a bad eps."""
    if eps is None:
        values = backend.to_host(array).astype(np.float64, copy=False)
        rms = math.sqrt(float(np.mean(values * values))) if values.size else 0.0
        return STEP * max(1.0, rms)
    if isinstance(eps, bool) or not isinstance(eps, (int, float, np.integer, np.floating)) \
            or not math.isfinite(eps) or eps <= 0:
        raise ValueError(f"{caller}: eps must be a positive number, or None to choose the "
                         f"step from each array's scale, got {eps!r}")
    return float(eps)


def _nudge(array: Array, i: int, h: float, evaluate: Callable[[], Any]):
    """evaluate() with flat entry i of ``array`` moved by -h and +h (in place, then
    restored bitwise); returns (at -h, at +h, h_minus, h_plus), the steps as
    they are represented."""
    flat = array.reshape(-1)  # a view: writing into it perturbs the array itself
    original = float(flat[i])
    up, down = original + h, original - h
    flat[i] = up
    plus = evaluate()
    flat[i] = down
    minus = evaluate()
    flat[i] = original
    return minus, plus, original - down, up - original


def numerical_gradient(f: Callable[[], float], array: Array, eps: float | None,
                       indices: np.ndarray) -> np.ndarray:
    """Central differences of the scalar ``f()`` with respect to ``array`` (changed in
    place and restored) at the flat ``indices``; ``eps=None`` picks the step."""
    h = step_size(array, eps, "numerical_gradient")
    numeric = np.empty(len(indices))
    for k, i in enumerate(indices):
        minus, plus, h_minus, h_plus = _nudge(array, int(i), h, f)
        numeric[k] = (plus - minus) / (h_minus + h_plus)
    return numeric


def _kink_name(layers) -> str:
    """The non-differentiable points these layers have, in words: each layer and
    activation that has some says so in its ``kink`` attribute."""
    names = []
    for layer in layers:
        for kink in (getattr(layer, "kink", None),
                     getattr(getattr(layer, "activation", None), "kink", None)):
            if kink and kink not in names:
                names.append(kink)
    return " or ".join(names) if names else "a kink"


def _position(name: str, shape: tuple[int, ...], flat_index: int) -> str:
    index = np.unravel_index(flat_index, shape) if shape else ()
    return f"{name}[{', '.join(str(int(i)) for i in index)}]"


class _Function:
    """F = sum(y * R), with ``evaluate()`` giving y (a layer's output, or a loss as a
    0-d array) as a float64 host copy."""

    def __init__(self, evaluate: Callable[[], np.ndarray], weights: np.ndarray) -> None:
        self.evaluate, self.weights = evaluate, weights
        self.at_point = evaluate()  # y(u): the one extra evaluation the kink test needs
        self.output_name = "y"

    @property
    def one_output(self) -> bool:
        return self.at_point.size == 1

    def probe(self, array: Array, i: int, h: float) -> dict:
        """The central difference at flat entry i, its roundoff, and what the kink test needs."""
        minus, plus, h_minus, h_plus = _nudge(array, i, h, self.evaluate)
        R = self.weights
        numeric = float(((plus - minus) * R).sum() / (h_minus + h_plus))
        moved = plus != minus  # the others cancel exactly and add no roundoff
        noise = float(EPSILON * (np.abs(R) * (np.abs(plus) + np.abs(minus)))[moved].sum()
                      / (h_minus + h_plus))
        right = (plus - self.at_point) / h_plus  # every output's one-sided slopes
        left = (self.at_point - minus) / h_minus
        jump = np.abs(right - left)
        kinked = jump > KINK_JUMP * (np.abs(right) + np.abs(left))
        explained = np.where(kinked, jump * np.abs(R), 0.0).reshape(-1)
        j = int(np.argmax(explained))
        return dict(numeric=numeric, noise=noise,
                    left=float((left * R).sum()), right=float((right * R).sum()),
                    budget=float(explained.sum()), output=j,
                    output_left=float(left.reshape(-1)[j]),
                    output_right=float(right.reshape(-1)[j]))

    def is_kink(self, analytic: float, p: dict) -> bool:
        miss = abs(analytic - p["numeric"])
        if not self.one_output:
            return p["budget"] >= miss
        jump = abs(p["right"] - p["left"])
        return (p["budget"] > 0 and jump >= miss  # budget > 0: the slopes differ by > KINK_JUMP
                and min(abs(analytic - p["right"]), abs(analytic - p["left"])) <= miss / 4)

    def kink(self, where: str, what: str, analytic: float, p: dict, error: float) -> Kink:
        if not self.one_output and abs(p["right"] - p["left"]) < abs(analytic - p["numeric"]):
            # F's slopes hide the jumps (kinks of opposite sign): show one output's
            output = _position(self.output_name, self.at_point.shape, p["output"])
            return Kink(where, what, analytic, p["numeric"], p["output_left"],
                        p["output_right"], error, output)
        return Kink(where, what, analytic, p["numeric"], p["left"], p["right"], error)


def _compare(name: str, analytic: Array, array: Array, function: _Function, h: float,
             max_entries: int | None, rng: np.random.Generator, floor: float,
             tolerance: float, kink_name: str, result: dict) -> None:
    """Check one tensor; fold its worst entry, its kinks and its count into ``result``."""
    size = int(array.size)
    indices = np.arange(size) if max_entries is None or size <= max_entries else \
        np.sort(rng.choice(size, max_entries, replace=False))
    probes = [function.probe(array, int(i), h) for i in indices]
    numeric = np.array([p["numeric"] for p in probes], dtype=np.float64)
    noise = np.array([p["noise"] for p in probes], dtype=np.float64)
    expected = backend.to_host(analytic).astype(np.float64).reshape(-1)[indices]
    magnitude = np.abs(expected) + np.abs(numeric)
    floor_u = max(RELATIVE_FLOOR * float(magnitude.max(initial=0.0)), floor)
    errors = np.abs(expected - numeric) / np.maximum(np.maximum(magnitude, floor_u),
                                                     ROUNDOFF_FLOOR * noise)
    shape = tuple(array.shape)
    on_kink = np.zeros(len(indices), dtype=bool)
    for k in np.flatnonzero(errors > tolerance):
        if function.is_kink(float(expected[k]), probes[k]):
            on_kink[k] = True
            result["kinks"].append(function.kink(
                _position(name, shape, int(indices[k])), kink_name, float(expected[k]),
                probes[k], float(errors[k])))
    result["entries"] += len(indices)
    trusted = np.where(on_kink, -1.0, errors)
    k = int(np.argmax(trusted)) if trusted.size else 0
    result["errors"][name] = max(float(trusted[k]), 0.0) if trusted.size else 0.0
    if trusted.size and trusted[k] >= 0 and (result["worst"] is None
                                            or trusted[k] > result["worst"][0]):
        result["worst"] = (float(trusted[k]),
                           f"{_position(name, shape, int(indices[k]))} "
                           f"(analytic {expected[k]:.6g}, numeric {numeric[k]:.6g})")


def _new_result() -> dict:
    return {"worst": None, "errors": {}, "kinks": [], "entries": 0}


def _result(result: dict, tolerance: float) -> GradCheckResult:
    worst = result["worst"] or (0.0, "nowhere")
    kinks = sorted(result["kinks"], key=lambda kink: -kink.error)
    return GradCheckResult(worst[0], worst[1], tolerance, result["errors"], kinks,
                           result["entries"])


def _require_float64(where: str, arrays: dict) -> None:
    """float32 would drown the differences in rounding: name the first array that is not float64."""
    for name, a in arrays.items():
        if a.dtype != np.float64:
            raise ValueError(f"{where}: gradient checks need float64 arrays, but {name} is "
                             f"{a.dtype}: call minicnn.set_floatx('float64') before building "
                             "the layer or model, and pass float64 x")


def _check(layer: Any, x: Array, training: bool, eps: float | None, tolerance: float,
           max_entries: int | None, seed: int, floor: float, caller: str,
           kink_name: str, input_name: str = "x") -> GradCheckResult:
    """check_layer for anything that keeps the layer contract (check_loss wraps a loss)."""
    rng = np.random.default_rng(seed)
    _require_float64(caller, {input_name: x, **{f"{layer.describe()} {k}": p
                                                for k, p in layer.params.items()}})
    rewind = _rewinder([layer])
    y = layer.forward(x, training)
    weights = rng.standard_normal(tuple(y.shape))
    analytic = {input_name: layer.backward(backend.to_device(weights))}
    analytic.update({name: layer.grads[name].copy() for name in layer.params})
    if analytic[input_name] is None:
        del analytic[input_name]

    def evaluate() -> np.ndarray:
        rewind()  # the same Dropout mask as the analytic pass
        return np.array(backend.to_host(layer.forward(x, training)), dtype=np.float64)  # a copy

    function = _Function(evaluate, weights)
    result = _new_result()
    for name, grad in analytic.items():
        array = x if name == input_name else layer.params[name]
        _compare(name, grad, array, function, step_size(array, eps, caller), max_entries,
                 rng, floor, tolerance, kink_name, result)
    return _result(result, tolerance)


def check_layer(layer: Any, x: Array, training: bool = True, eps: float | None = None,
                tolerance: float = DEFAULT_TOLERANCE, max_entries: int | None = None,
                seed: int = 0, floor: float = ABSOLUTE_FLOOR) -> GradCheckResult:
    """Compare ``layer.backward`` with central differences for x and every parameter
    (at most ``max_entries`` random entries per tensor; None checks all). ``eps=None``
    picks the step from each tensor's scale; the module docstring gives the measure."""
    x = backend.to_device(x)
    _build(layer, x)
    return _check(layer, x, training, eps, tolerance, max_entries, seed, floor,
                  f"check_layer({layer.describe()})", _kink_name([layer]))


class _LossAsLayer:
    """A loss with its target fixed, seen as a layer: y = loss(y_pred) (0-d)."""

    def __init__(self, loss: Any, y_true: Array) -> None:
        self.loss, self.y_true = loss, y_true
        self.built, self.params, self.grads = True, {}, {}

    def describe(self) -> str:
        return f"loss {self.loss.name}"

    def forward(self, y_pred: Array, training: bool = True) -> Array:
        return self.loss.forward(y_pred, self.y_true)

    def backward(self, grad: Array) -> Array:
        return self.loss.backward() * grad


def check_loss(loss: Any, y_pred: Array, y_true: Array, eps: float | None = None,
               tolerance: float = DEFAULT_TOLERANCE, seed: int = 0,
               floor: float = ABSOLUTE_FLOOR) -> GradCheckResult:
    """Compare ``loss.backward()`` (dL/dy_pred after ``loss.forward(y_pred, y_true)``)
    with central differences of the loss, for every entry of y_pred (named
    "y_pred" in the result)."""
    y_pred = backend.to_device(y_pred)
    clipped = type(loss).__name__ in ("CategoricalCrossentropy", "SparseCategoricalCrossentropy")
    return _check(_LossAsLayer(loss, backend.to_device(y_true)), y_pred, True, eps, tolerance,
                  None, seed, floor, f"check_loss({getattr(loss, 'name', type(loss).__name__)})",
                  "the clip of the probabilities" if clipped else "a kink", "y_pred")


def check_model(model: Any, x: Array, y: Array, eps: float | None = None,
                tolerance: float = DEFAULT_TOLERANCE, max_entries: int | None = 20,
                seed: int = 0, floor: float = ABSOLUTE_FLOOR) -> GradCheckResult:
    """Compare the gradients of a compiled model's loss with central differences for
    every parameter (at most ``max_entries`` random entries per tensor; None checks
    all). ``eps=None`` picks the step from each tensor's scale."""
    rng = np.random.default_rng(seed)
    if backend.floatx() != "float64":  # the model casts every batch to it
        raise ValueError("check_model: gradient checks need float64, but the default float "
                         f"type is {backend.floatx()}: call minicnn.set_floatx('float64') "
                         "before building the model")
    x = backend.to_device(x, dtype=np.float64)
    _build(model, x)
    _require_float64("check_model", {f"{layer.describe()} {k}": p for layer in model.layers
                                     for k, p in layer.params.items()})
    rewind = _rewinder(model.layers)
    try:
        model.compute_gradients(x, y)  # training mode, as a step: Dropout draws its masks
    except ValueError as exc:  # bad x or y: say who was called
        raise ValueError(f"check_model: {exc}") from None
    analytic = {f"{layer.name}/{name}": (position, layer, name, layer.grads[name].copy())
                for position, layer in enumerate(model.layers) for name in layer.params}

    def evaluate() -> np.ndarray:
        rewind()  # the same Dropout masks as the analytic pass
        return np.array(float(model.compute_loss(x, y, training=True)), dtype=np.float64)

    function = _Function(evaluate, np.ones(()))
    result = _new_result()
    for key, (position, layer, name, grad) in analytic.items():
        array = layer.params[name]
        # a kink can only lie in this layer or one after it
        _compare(key, grad, array, function, step_size(array, eps, "check_model"), max_entries,
                 rng, floor, tolerance, _kink_name(model.layers[position:]), result)
    return _result(result, tolerance)
