"""Learning-rate schedules read at every step, tf.keras's ``optimizers.schedules``.

A schedule is a function of the step t (the optimizer's ``iterations``: 0 for
the first update) that returns the learning rate; give one as any optimizer's
``lr`` and the rate follows it batch by batch instead of epoch by epoch (Keras
2's ``decay``, if set, still divides it by 1 + decay * t):

    PiecewiseLinear          lr(t) = values linearly interpolated between boundaries,
                             held at the end values outside them (NumPy's interp)
    PiecewiseConstantDecay   lr(t) = values[i] for boundaries[i-1] < t <= boundaries[i]
    ExponentialDecay         lr(t) = lr_0 * rate^(t / steps)  (staircase: floor(t / steps))
    CosineDecay              lr(t) = lr_0 * ((1 - alpha) * c + alpha),
                             c = (1 + cos(pi * min(t, steps) / steps)) / 2

Each has ``get_config``/``from_config``; ``serialize``/``deserialize`` give and
take tf.keras's ``{"class_name": ..., "config": ...}``, which is how an
optimizer's config (and so a saved model or checkpoint) holds one.
"""
from __future__ import annotations

import bisect
import math
import numbers
from typing import Any, Sequence


def _real(value: Any, owner: str, name: str, low: float = -math.inf,
          low_open: bool = False) -> float:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = low < value if low_open else low <= value
    if not ok:
        bound = "" if math.isinf(low) else (f" > {low:g}" if low_open else f" >= {low:g}")
        raise ValueError(f"{owner}: {name} must be a finite number{bound}, got {value!r}")
    return float(value)


def _reals(values: Any, owner: str, name: str) -> list[float]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
        raise ValueError(f"{owner}: {name} must be a non-empty list of numbers, got {values!r}")
    return [_real(v, owner, f"{name}[{i}]") for i, v in enumerate(values)]


class LearningRateSchedule:
    """The base class: ``schedule(step)`` -> the learning rate for update number step + 1."""

    def __call__(self, step: int) -> float:
        raise NotImplementedError(f"{type(self).__name__} must define __call__(step)")

    def get_config(self) -> dict:
        raise NotImplementedError(f"{type(self).__name__} must define get_config()")

    @classmethod
    def from_config(cls, config: dict) -> "LearningRateSchedule":
        return cls(**config)

    def __float__(self) -> float:
        # What LearningRateScheduler and ReduceLROnPlateau do with optimizer.lr.
        raise TypeError(f"{type(self).__name__} sets the learning rate at every step: a "
                        "callback that sets optimizer.lr per epoch cannot also change it; "
                        "use one or the other")

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class PiecewiseLinear(LearningRateSchedule):
    """Straight lines through (boundaries[i], values[i]), flat before the first and after
    the last: a warm-up then a linear decay is ``PiecewiseLinear([0, w, T], [a, b, c])``."""

    def __init__(self, boundaries: Sequence[float], values: Sequence[float]) -> None:
        owner = "PiecewiseLinear"
        self.boundaries = _reals(boundaries, owner, "boundaries")
        self.values = _reals(values, owner, "values")
        if len(self.boundaries) != len(self.values):
            raise ValueError(f"{owner}: boundaries and values must have the same length, got "
                             f"{len(self.boundaries)} and {len(self.values)}")
        if any(b <= a for a, b in zip(self.boundaries, self.boundaries[1:])):
            raise ValueError(f"{owner}: boundaries must increase strictly, got {boundaries!r}")

    def __call__(self, step: int) -> float:
        b, v = self.boundaries, self.values
        if step <= b[0]:
            return v[0]
        if step >= b[-1]:
            return v[-1]
        i = bisect.bisect_right(b, step)  # b[i-1] <= step < b[i]
        f = (step - b[i - 1]) / (b[i] - b[i - 1])
        return v[i - 1] + f * (v[i] - v[i - 1])

    def get_config(self) -> dict:
        return {"boundaries": list(self.boundaries), "values": list(self.values)}


class PiecewiseConstantDecay(LearningRateSchedule):
    """tf.keras's: values[0] up to and including boundaries[0], values[1] up to
    boundaries[1], ..., values[-1] after the last boundary."""

    def __init__(self, boundaries: Sequence[float], values: Sequence[float]) -> None:
        owner = "PiecewiseConstantDecay"
        self.boundaries = _reals(boundaries, owner, "boundaries")
        self.values = _reals(values, owner, "values")
        if len(self.values) != len(self.boundaries) + 1:
            raise ValueError(f"{owner}: the length of boundaries should be 1 less than the "
                             f"length of values, got {len(self.boundaries)} and {len(self.values)}")
        if any(b <= a for a, b in zip(self.boundaries, self.boundaries[1:])):
            raise ValueError(f"{owner}: boundaries must increase strictly, got {boundaries!r}")

    def __call__(self, step: int) -> float:
        return self.values[bisect.bisect_left(self.boundaries, step)]

    def get_config(self) -> dict:
        return {"boundaries": list(self.boundaries), "values": list(self.values)}


class ExponentialDecay(LearningRateSchedule):
    """tf.keras's: initial_learning_rate * decay_rate ^ (step / decay_steps), the exponent
    floored with ``staircase=True``."""

    def __init__(self, initial_learning_rate: float, decay_steps: float, decay_rate: float,
                 staircase: bool = False) -> None:
        owner = "ExponentialDecay"
        self.initial_learning_rate = _real(initial_learning_rate, owner,
                                           "initial_learning_rate", 0.0)
        self.decay_steps = _real(decay_steps, owner, "decay_steps", 0.0, low_open=True)
        self.decay_rate = _real(decay_rate, owner, "decay_rate", 0.0)
        if not isinstance(staircase, (bool, numbers.Integral)):
            raise ValueError(f"{owner}: staircase must be True or False, got {staircase!r}")
        self.staircase = bool(staircase)

    def __call__(self, step: int) -> float:
        p = step / self.decay_steps
        exponent = math.floor(p) if self.staircase else p
        return self.initial_learning_rate * self.decay_rate ** exponent

    def get_config(self) -> dict:
        return {"initial_learning_rate": self.initial_learning_rate,
                "decay_steps": self.decay_steps, "decay_rate": self.decay_rate,
                "staircase": self.staircase}


class CosineDecay(LearningRateSchedule):
    """tf.keras's: half a cosine from initial_learning_rate down to
    alpha * initial_learning_rate over decay_steps, then flat."""

    def __init__(self, initial_learning_rate: float, decay_steps: float,
                 alpha: float = 0.0) -> None:
        owner = "CosineDecay"
        self.initial_learning_rate = _real(initial_learning_rate, owner,
                                           "initial_learning_rate", 0.0)
        self.decay_steps = _real(decay_steps, owner, "decay_steps", 0.0, low_open=True)
        self.alpha = _real(alpha, owner, "alpha", 0.0)

    def __call__(self, step: int) -> float:
        c = 0.5 * (1.0 + math.cos(math.pi * min(step, self.decay_steps) / self.decay_steps))
        return self.initial_learning_rate * ((1.0 - self.alpha) * c + self.alpha)

    def get_config(self) -> dict:
        return {"initial_learning_rate": self.initial_learning_rate,
                "decay_steps": self.decay_steps, "alpha": self.alpha}


SCHEDULES: dict[str, type[LearningRateSchedule]] = {
    cls.__name__: cls for cls in (PiecewiseLinear, PiecewiseConstantDecay, ExponentialDecay,
                                  CosineDecay)}


def serialize(schedule: LearningRateSchedule) -> dict:
    """tf.keras's form: ``{"class_name": "CosineDecay", "config": schedule.get_config()}``."""
    return {"class_name": type(schedule).__name__, "config": schedule.get_config()}


def deserialize(config: dict, custom_objects: dict | None = None) -> LearningRateSchedule:
    """A schedule from ``serialize``'s dict; ``custom_objects`` maps your own classes' names."""
    if not (isinstance(config, dict) and isinstance(config.get("class_name"), str)
            and isinstance(config.get("config", {}), dict)):
        raise ValueError(f"schedules.deserialize: expected a dict "
                         f'{{"class_name": ..., "config": {{...}}}}, got {config!r}')
    name = config["class_name"]
    cls = (custom_objects or {}).get(name) or SCHEDULES.get(name)
    if cls is None:
        raise ValueError(f"schedules.deserialize: unknown schedule {name!r}: expected one of "
                         f"{', '.join(SCHEDULES)}, or pass custom_objects={{{name!r}: {name}}}")
    return cls.from_config(config.get("config", {}))
