"""Keras 2.2.4's optimizers: SGD, RMSprop, Adagrad, Adadelta, Adam, Adamax, Nadam.

Every optimizer (but Nadam, which Keras gives no ``decay``) uses Keras 2's
time-based decay, t = updates (batches) done so far:

    lr_t = lr / (1 + decay * t)

(``lr`` may also be a ``schedules.LearningRateSchedule``: lr(t) then replaces
lr, read at every update) and then, per weight w with gradient g (eps =
``epsilon``, 1e-7 by default, Keras's K.epsilon(); every slot starts at zero;
n = t + 1 counts this update):

    SGD       v = momentum * v - lr_t * g;  w += v
              (Nesterov: w += momentum * v - lr_t * g;  no momentum: w -= lr_t * g)
    RMSprop   a = rho * a + (1 - rho) * g^2;  w -= lr_t * g / (sqrt(a) + eps)
    Adagrad   a = a + g^2;                    w -= lr_t * g / (sqrt(a) + eps)
    Adadelta  a = rho * a + (1 - rho) * g^2
              u = g * sqrt(d + eps) / sqrt(a + eps);  w -= lr_t * u
              d = rho * d + (1 - rho) * u^2
    Adam      m = beta_1 * m + (1 - beta_1) * g;  v = beta_2 * v + (1 - beta_2) * g^2
              w -= lr_t * sqrt(1 - beta_2^n) / (1 - beta_1^n) * m / (sqrt(v) + eps)
              (amsgrad: v_hat = max(v_hat, v) replaces v in the last line)
    Adamax    m = beta_1 * m + (1 - beta_1) * g;  u = max(beta_2 * u, |g|)
              w -= lr_t / (1 - beta_1^n) * m / (u + eps)
    Nadam     mu_n = beta_1 * (1 - 0.5 * 0.96^(n * schedule_decay)),  P_n = mu_1 ... mu_n
              m = beta_1 * m + (1 - beta_1) * g;  v = beta_2 * v + (1 - beta_2) * g^2
              m_bar = (1 - mu_n) * g / (1 - P_n) + mu_{n+1} * m / (1 - P_n * mu_{n+1})
              w -= lr * m_bar / (sqrt(v / (1 - beta_2^n)) + eps)

SGD's additions, for modern recipes (off by default, so Keras's SGD is unchanged):
a learning-rate multiplier c per weight (``lr_multipliers``) and a weight decay
lambda (``weight_decay``) that enters the gradient before the momentum, as
PyTorch's SGD ``weight_decay`` does, but divided by the multiplier:

    g' = g + (lambda / c) w,  then the SGD lines above with lr_t * c and g'

so every update shrinks w by lr_t * lambda * w through the momentum whatever
its multiplier (PyTorch: a param group with lr * c and weight_decay lambda / c).
With momentum m and a constant lr this is exactly PyTorch's SGD:
buf = m buf + g', w -= lr c (g' + m buf) with Nesterov, w -= lr c buf without
(Keras's velocity is -lr c buf). Under a schedule the two differ slightly, as
Keras's and PyTorch's SGD always have: Keras scales each gradient by the rate of
its own step before it enters the velocity, PyTorch scales the whole buffer by
the current rate. ``momentum_style="pytorch"`` keeps PyTorch's buffer instead
(the ``velocities`` slot then holds buf), for updates equal to PyTorch's under
any schedule. A multiplier c = 0 freezes the weight (no decay either).

With ``clipnorm`` every gradient is first scaled by clipnorm / ||g|| when the
norm of all gradients together exceeds it (Keras 2.2's rule); with
``clipvalue`` each entry is clipped to [-clipvalue, clipvalue]. A layer with
``trainable = False`` (or a weight made with ``add_weight(trainable=False)``)
is left alone.

Updates are in place, so arrays held elsewhere (``layer.params``) see them.
The state that must survive a restart (``iterations`` and every slot: SGD's
``velocities``, Adam's ``ms`` and ``vs``, ...) comes out of ``get_state()`` and
goes back with ``set_state``, keyed by layer and weight name.
"""
from __future__ import annotations

import functools
import math
import numbers
from typing import Any, Iterable

from minicnn import backend, ops, schedules
from minicnn.schedules import LearningRateSchedule

EPSILON = 1e-7  # Keras's K.epsilon(): what epsilon=None means

Key = tuple[str, str]  # (layer name, weight name)


def _number(value: Any, owner: str, name: str, low: float, high: float = math.inf,
            high_open: bool = False, low_open: bool = False) -> float:
    """A finite real in the given range, else a ValueError naming optimizer and argument."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (low < value if low_open else low <= value) and \
            (value < high if high_open else value <= high)
    if not ok:
        if math.isinf(high):
            bound = f"> {low:g}" if low_open else f">= {low:g}"
        else:
            bound = f"[{low:g}, {high:g}" + (")" if high_open else "]")
        raise ValueError(f"{owner}: {name} must be a finite number {bound}, got {value!r}")
    return float(value)


class Optimizer:
    """What every optimizer shares: lr and its decay, clipping, iterations, the slots
    (per-weight state arrays, each a dict keyed (layer, weight) in an attribute of the
    slot's name) and their get_state/set_state. A subclass sets ``slots`` and writes
    ``_update``; Keras's Optimizer plays the same part."""

    slots: tuple[str, ...] = ()

    def __init__(self, lr: float, decay: float = 0.0, clipnorm: float | None = None,
                 clipvalue: float | None = None, learning_rate: float | None = None) -> None:
        if learning_rate is not None:  # the name Keras 2.3+ and PyTorch users type
            lr = learning_rate
        self.learning_rate = self._rate(lr)
        self.decay = self._check(decay, "decay", 0.0)
        # Keras's default for both is "no clipping"; 0 means the same there.
        self.clipnorm = None if clipnorm is None else self._check(clipnorm, "clipnorm", 0.0)
        self.clipvalue = None if clipvalue is None else self._check(clipvalue, "clipvalue", 0.0)
        self.iterations = 0
        for slot in self.slots:
            setattr(self, slot, {})

    def _rate(self, lr: Any) -> float | LearningRateSchedule:
        """A learning rate: a number >= 0, a schedule, or a schedule's serialized dict."""
        if isinstance(lr, dict):
            lr = schedules.deserialize(lr)
        if isinstance(lr, LearningRateSchedule):
            return lr
        return self._check(lr, "lr", 0.0)

    def _check(self, value: Any, name: str, low: float, high: float = math.inf,
               **bounds: bool) -> float:
        return _number(value, type(self).__name__, name, low, high, **bounds)

    def _epsilon(self, epsilon: float | None) -> float:
        return EPSILON if epsilon is None else self._check(epsilon, "epsilon", 0.0, low_open=True)

    def _unit(self, value: Any, name: str) -> float:
        """A rate in [0, 1): rho, beta_1, beta_2, momentum (1 would freeze the average)."""
        return self._check(value, name, 0.0, 1.0, high_open=True)

    def _config(self) -> dict:
        """The optimizer's own Keras 2.2.4 config keys after lr, in Keras's order."""
        return {}

    def get_config(self) -> dict:
        lr = self.learning_rate
        if isinstance(lr, LearningRateSchedule):
            lr = schedules.serialize(lr)
        config = {"lr": lr, **self._config()}
        for name in ("clipnorm", "clipvalue"):
            if getattr(self, name):
                config[name] = getattr(self, name)
        return config

    @classmethod
    def from_config(cls, config: dict) -> "Optimizer":
        return cls(**config)

    @property
    def current_learning_rate(self) -> float:
        """The rate the next update will use (before Adam's and Adamax's bias correction)."""
        lr = self.learning_rate
        if isinstance(lr, LearningRateSchedule):
            lr = float(lr(self.iterations))
        return lr / (1.0 + self.decay * self.iterations)

    @property
    def lr(self) -> float | LearningRateSchedule:
        """Keras 2's name for the initial learning rate (or the schedule)."""
        return self.learning_rate

    @lr.setter
    def lr(self, value: float | LearningRateSchedule) -> None:  # Keras's K.set_value(lr, ...)
        self.learning_rate = self._rate(value)

    def get_state(self) -> dict:
        """What a restart needs: ``{"iterations": t, slot: {layer: {weight: array}}}`` for
        every slot (the live arrays, on the backend: copy them to keep a snapshot)."""
        state: dict[str, Any] = {"iterations": self.iterations}
        for slot in self.slots:
            arrays: dict[str, dict[str, Any]] = {}
            for (layer, weight), value in getattr(self, slot).items():
                arrays.setdefault(layer, {})[weight] = value
            state[slot] = arrays
        return state

    def set_state(self, state: dict) -> None:
        """Continue from ``get_state()`` output: copies of its arrays, on the backend in
        floatx (so two optimizers never share a buffer); a slot it lacks starts empty."""
        self.iterations = int(state["iterations"])
        for slot in self.slots:
            setattr(self, slot, {(layer, weight): backend.to_device(value, dtype=backend.floatx()).copy()
                                 for layer, weights in state.get(slot, {}).items()
                                 for weight, value in weights.items()})

    def _slot(self, slot: str, key: Key, param: Any) -> Any:
        """The slot's array for this weight, zeros (as Keras starts them) the first time."""
        arrays = getattr(self, slot)
        if key not in arrays:
            arrays[key] = backend.get_array_module(param).zeros_like(param)
        return arrays[key]

    def gradients(self, layers: Iterable[Any]) -> list[tuple[Key, Any, Any]]:
        """((layer name, weight name), parameter, gradient) for every weight to update,
        with Keras's clipping applied (to copies: the layers keep their raw gradients)."""
        items = [((layer.name, name), layer.params[name], layer.grads[name])
                 for layer in layers for name in layer.trained_params()]
        if self.clipnorm:
            xp = backend.get_array_module(items[0][1]) if items else None
            norm = float(xp.sqrt(sum((g * g).sum() for _, _, g in items))) if items else 0.0
            if norm >= self.clipnorm:
                items = [(key, p, g * (self.clipnorm / norm)) for key, p, g in items]
        if self.clipvalue:
            items = [(key, p, backend.get_array_module(g).clip(g, -self.clipvalue, self.clipvalue))
                     for key, p, g in items]
        return items

    def _begin(self, n: int) -> None:
        """Work shared by all weights of update number n (1 for the first)."""

    def _update(self, key: Key, param: Any, grad: Any, lr: float, n: int) -> None:
        raise NotImplementedError(f"{type(self).__name__} must define _update")

    def apply(self, layers: Iterable[Any]) -> None:
        """One update of every trainable parameter of ``layers`` from its gradient."""
        lr, n = self.current_learning_rate, self.iterations + 1
        self._begin(n)
        for key, param, grad in self.gradients(layers):
            self._update(key, param, grad, lr, n)
        self.iterations += 1


def _selected(table: dict, layer_name: str, weight: str) -> Any:
    """The entry for this weight: its "layer/weight" key, else its bare "weight" key."""
    full = f"{layer_name}/{weight}"
    return table[full] if full in table else table.get(weight)


class SGD(Optimizer):
    """Keras 2.2.4's SGD, plus PyTorch's per-parameter options (see the module docstring).

    ``lr_multipliers``: a dict mapping "layer_name/weight_name" (one weight) or
    "weight_name" (that weight in every layer, e.g. "beta" for every
    BatchNormalization's bias) to the factor c on the learning rate; the full name
    wins over the bare one, weights not named keep c = 1. Or a function
    ``f(layer, weight_name) -> c``. ``weight_decay``: lambda, the decay per unit of
    learning rate. ``exclude_from_weight_decay``: names in the same two forms (a list),
    or a function ``f(layer, weight_name) -> bool``, for weights that do not decay
    (all do by default, biases and BatchNormalization's included). Functions are
    not part of ``get_config``: a model whose optimizer uses one saves without it.
    """
    slots = ("velocities",)

    def __init__(self, lr: float = 0.01, momentum: float = 0.0, decay: float = 0.0,
                 nesterov: bool = False, clipnorm: float | None = None,
                 clipvalue: float | None = None, learning_rate: float | None = None,
                 weight_decay: float = 0.0, lr_multipliers: dict | Any = None,
                 exclude_from_weight_decay: Any = None, momentum_style: str = "keras") -> None:
        super().__init__(lr, decay, clipnorm, clipvalue, learning_rate)
        self.momentum = self._unit(momentum, "momentum")
        if not isinstance(nesterov, (bool, numbers.Integral)):
            raise ValueError(f"SGD: nesterov must be True or False, got {nesterov!r}")
        self.nesterov = bool(nesterov)
        self.weight_decay = self._check(weight_decay, "weight_decay", 0.0)
        if lr_multipliers is None:
            lr_multipliers = {}
        if isinstance(lr_multipliers, dict):
            lr_multipliers = {self._name(k, "lr_multipliers"):
                              self._check(v, f"lr_multipliers[{k!r}]", 0.0)
                              for k, v in lr_multipliers.items()}
        elif not callable(lr_multipliers):
            raise ValueError(f"SGD: lr_multipliers must be a dict of weight names to factors "
                             f"or a function f(layer, weight_name), got {lr_multipliers!r}")
        self.lr_multipliers = lr_multipliers
        excluded = exclude_from_weight_decay
        if excluded is None:
            excluded = []
        if not callable(excluded):
            if isinstance(excluded, (str, bytes, dict)) or not isinstance(excluded, Iterable):
                raise ValueError(f"SGD: exclude_from_weight_decay must be a list of weight names "
                                 f"or a function f(layer, weight_name), got {excluded!r}")
            excluded = [self._name(k, "exclude_from_weight_decay") for k in excluded]
        self.exclude_from_weight_decay = excluded
        if momentum_style not in ("keras", "pytorch"):
            raise ValueError(f'SGD: momentum_style must be "keras" or "pytorch", '
                             f"got {momentum_style!r}")
        self.momentum_style = momentum_style
        self._factors: dict[Key, tuple[float, bool]] = {}  # per weight: (c, decays)
        self._scratch: dict[Key, Any] = {}  # work arrays, not state

    @staticmethod
    def _name(key: Any, argument: str) -> str:
        if not isinstance(key, str) or not key or key.count("/") > 1:
            raise ValueError(f'SGD: {argument} names weights as "layer_name/weight_name" or '
                             f'"weight_name", got {key!r}')
        return key

    def _config(self) -> dict:
        config = {"momentum": self.momentum, "decay": self.decay, "nesterov": self.nesterov}
        # Only when used, so the config stays Keras's own otherwise.
        if self.weight_decay:
            config["weight_decay"] = self.weight_decay
        if isinstance(self.lr_multipliers, dict) and self.lr_multipliers:
            config["lr_multipliers"] = dict(self.lr_multipliers)
        if isinstance(self.exclude_from_weight_decay, list) and self.exclude_from_weight_decay:
            config["exclude_from_weight_decay"] = list(self.exclude_from_weight_decay)
        if self.momentum_style != "keras":
            config["momentum_style"] = self.momentum_style
        return config

    def _factor(self, layer: Any, weight: str) -> tuple[float, bool]:
        """(c, decays) for one weight of a layer."""
        if callable(self.lr_multipliers):
            c = self._check(self.lr_multipliers(layer, weight),
                            f"lr_multipliers({layer.name!r}, {weight!r})", 0.0)
        else:
            c = _selected(self.lr_multipliers, layer.name, weight)
            c = 1.0 if c is None else c
        if callable(self.exclude_from_weight_decay):
            excluded = bool(self.exclude_from_weight_decay(layer, weight))
        else:
            names = self.exclude_from_weight_decay
            excluded = f"{layer.name}/{weight}" in names or weight in names
        return c, self.weight_decay > 0 and not excluded

    def apply(self, layers: Iterable[Any]) -> None:
        layers = list(layers)
        plain = not self.lr_multipliers and not self.weight_decay
        self._factors = {} if plain else {(layer.name, name): self._factor(layer, name)
                                          for layer in layers for name in layer.trained_params()}
        super().apply(layers)

    def _step(self, key: Key, param: Any) -> Any:
        """A scratch array for lr*g, kept per parameter: NumPy has no fused axpy, and
        w -= lr*g would allocate lr*g every step."""
        step = self._scratch.get(key)
        if step is None or step.shape != param.shape or step.dtype != param.dtype:
            step = self._scratch[key] = backend.get_array_module(param).empty_like(param)
        return step

    def _update(self, key: Key, param: Any, grad: Any, lr: float, n: int) -> None:
        xp = backend.get_array_module(param)
        c, decays = self._factors.get(key, (1.0, False))
        if c == 0.0:  # PyTorch's group with lr 0: the weight stays where it is
            return
        shrink = lr * self.weight_decay if decays else 0.0  # lr c * (lambda / c)
        lr = lr * c
        if self.momentum == 0.0:
            ops.sgd_update(param, grad, lr, functools.partial(self._step, key, param), shrink)
            return
        step = self._step(key, param)
        if self.momentum_style == "pytorch":
            self._pytorch_update(key, param, grad, step, lr,
                                 self.weight_decay / c if decays else 0.0)
            return
        xp.multiply(grad, lr, out=step)  # lr*g; a Python float keeps float32
        if shrink:
            step += param * shrink
        v = self._slot("velocities", key, param)
        v *= self.momentum
        v -= step
        if self.nesterov:  # w += momentum*v - lr*g
            param -= step
            xp.multiply(v, self.momentum, out=step)
            param += step
        else:
            param += v

    def _pytorch_update(self, key: Key, param: Any, grad: Any, step: Any, lr: float,
                        coupled: float) -> None:
        """PyTorch's: d = g + coupled w;  buf = m buf + d;  w -= lr (d + m buf) (Nesterov)
        or w -= lr buf (buf starts at zero, so its first value is d, as PyTorch's)."""
        xp = backend.get_array_module(param)
        xp.copyto(step, grad)
        if coupled:
            step += param * coupled
        buf = self._slot("velocities", key, param)
        buf *= self.momentum
        buf += step
        if self.nesterov:
            step += buf * self.momentum
        else:
            xp.copyto(step, buf)
        step *= lr
        param -= step


class RMSprop(Optimizer):
    slots = ("accumulators",)

    def __init__(self, lr: float = 0.001, rho: float = 0.9, epsilon: float | None = None,
                 decay: float = 0.0, clipnorm: float | None = None,
                 clipvalue: float | None = None, learning_rate: float | None = None) -> None:
        super().__init__(lr, decay, clipnorm, clipvalue, learning_rate)
        self.rho = self._unit(rho, "rho")
        self.epsilon = self._epsilon(epsilon)

    def _config(self) -> dict:
        return {"rho": self.rho, "decay": self.decay, "epsilon": self.epsilon}

    def _update(self, key: Key, param: Any, grad: Any, lr: float, n: int) -> None:
        xp = backend.get_array_module(param)
        a = self._slot("accumulators", key, param)
        a *= self.rho
        a += (1.0 - self.rho) * grad * grad
        param -= lr * grad / (xp.sqrt(a) + self.epsilon)


class Adagrad(Optimizer):
    slots = ("accumulators",)

    def __init__(self, lr: float = 0.01, epsilon: float | None = None, decay: float = 0.0,
                 clipnorm: float | None = None, clipvalue: float | None = None,
                 learning_rate: float | None = None) -> None:
        super().__init__(lr, decay, clipnorm, clipvalue, learning_rate)
        self.epsilon = self._epsilon(epsilon)

    def _config(self) -> dict:
        return {"decay": self.decay, "epsilon": self.epsilon}

    def _update(self, key: Key, param: Any, grad: Any, lr: float, n: int) -> None:
        xp = backend.get_array_module(param)
        a = self._slot("accumulators", key, param)
        a += grad * grad
        param -= lr * grad / (xp.sqrt(a) + self.epsilon)


class Adadelta(Optimizer):
    slots = ("accumulators", "delta_accumulators")

    def __init__(self, lr: float = 1.0, rho: float = 0.95, epsilon: float | None = None,
                 decay: float = 0.0, clipnorm: float | None = None,
                 clipvalue: float | None = None, learning_rate: float | None = None) -> None:
        super().__init__(lr, decay, clipnorm, clipvalue, learning_rate)
        self.rho = self._unit(rho, "rho")
        self.epsilon = self._epsilon(epsilon)

    def _config(self) -> dict:
        return {"rho": self.rho, "decay": self.decay, "epsilon": self.epsilon}

    def _update(self, key: Key, param: Any, grad: Any, lr: float, n: int) -> None:
        xp = backend.get_array_module(param)
        a = self._slot("accumulators", key, param)
        d = self._slot("delta_accumulators", key, param)
        a *= self.rho
        a += (1.0 - self.rho) * grad * grad
        update = grad * xp.sqrt(d + self.epsilon) / xp.sqrt(a + self.epsilon)
        param -= lr * update
        d *= self.rho
        d += (1.0 - self.rho) * update * update


class Adam(Optimizer):
    def __init__(self, lr: float = 0.001, beta_1: float = 0.9, beta_2: float = 0.999,
                 epsilon: float | None = None, decay: float = 0.0, amsgrad: bool = False,
                 clipnorm: float | None = None, clipvalue: float | None = None,
                 learning_rate: float | None = None) -> None:
        if not isinstance(amsgrad, (bool, numbers.Integral)):
            raise ValueError(f"Adam: amsgrad must be True or False, got {amsgrad!r}")
        self.amsgrad = bool(amsgrad)
        self.slots = ("ms", "vs", "vhats") if self.amsgrad else ("ms", "vs")
        super().__init__(lr, decay, clipnorm, clipvalue, learning_rate)
        self.beta_1 = self._unit(beta_1, "beta_1")
        self.beta_2 = self._unit(beta_2, "beta_2")
        self.epsilon = self._epsilon(epsilon)

    def _config(self) -> dict:
        return {"beta_1": self.beta_1, "beta_2": self.beta_2, "decay": self.decay,
                "epsilon": self.epsilon, "amsgrad": self.amsgrad}

    def _update(self, key: Key, param: Any, grad: Any, lr: float, n: int) -> None:
        xp = backend.get_array_module(param)
        lr_t = lr * math.sqrt(1.0 - self.beta_2 ** n) / (1.0 - self.beta_1 ** n)
        m = self._slot("ms", key, param)
        v = self._slot("vs", key, param)
        m *= self.beta_1
        m += (1.0 - self.beta_1) * grad
        v *= self.beta_2
        v += (1.0 - self.beta_2) * grad * grad
        if self.amsgrad:
            vhat = self._slot("vhats", key, param)
            xp.maximum(vhat, v, out=vhat)
            v = vhat
        param -= lr_t * m / (xp.sqrt(v) + self.epsilon)


class Adamax(Optimizer):
    slots = ("ms", "us")

    def __init__(self, lr: float = 0.002, beta_1: float = 0.9, beta_2: float = 0.999,
                 epsilon: float | None = None, decay: float = 0.0,
                 clipnorm: float | None = None, clipvalue: float | None = None,
                 learning_rate: float | None = None) -> None:
        super().__init__(lr, decay, clipnorm, clipvalue, learning_rate)
        self.beta_1 = self._unit(beta_1, "beta_1")
        self.beta_2 = self._unit(beta_2, "beta_2")
        self.epsilon = self._epsilon(epsilon)

    def _config(self) -> dict:
        return {"beta_1": self.beta_1, "beta_2": self.beta_2, "decay": self.decay,
                "epsilon": self.epsilon}

    def _update(self, key: Key, param: Any, grad: Any, lr: float, n: int) -> None:
        xp = backend.get_array_module(param)
        lr_t = lr / (1.0 - self.beta_1 ** n)
        m = self._slot("ms", key, param)
        u = self._slot("us", key, param)
        m *= self.beta_1
        m += (1.0 - self.beta_1) * grad
        u *= self.beta_2
        xp.maximum(u, xp.abs(grad), out=u)
        param -= lr_t * m / (u + self.epsilon)


class Nadam(Optimizer):
    slots = ("ms", "vs")

    def __init__(self, lr: float = 0.002, beta_1: float = 0.9, beta_2: float = 0.999,
                 epsilon: float | None = None, schedule_decay: float = 0.004,
                 clipnorm: float | None = None, clipvalue: float | None = None,
                 learning_rate: float | None = None) -> None:
        super().__init__(lr, 0.0, clipnorm, clipvalue, learning_rate)
        self.beta_1 = self._unit(beta_1, "beta_1")
        self.beta_2 = self._unit(beta_2, "beta_2")
        self.epsilon = self._epsilon(epsilon)
        self.schedule_decay = self._check(schedule_decay, "schedule_decay", 0.0)
        self.m_schedule = 1.0  # P_t, the product of the momentum caches so far
        self._step_constants = (0.0, 0.0, 0.0, 0.0)

    def _config(self) -> dict:
        return {"beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon,
                "schedule_decay": self.schedule_decay}

    def _momentum_cache(self, n: int) -> float:
        return self.beta_1 * (1.0 - 0.5 * 0.96 ** (n * self.schedule_decay))

    def set_state(self, state: dict) -> None:
        super().set_state(state)
        # P_t follows from t: rebuilt by the same products, in the same order, as the run did.
        self.m_schedule = 1.0
        for n in range(1, self.iterations + 1):
            self.m_schedule = self.m_schedule * self._momentum_cache(n)

    def _begin(self, n: int) -> None:
        mu, mu_next = self._momentum_cache(n), self._momentum_cache(n + 1)
        self.m_schedule = self.m_schedule * mu
        self._step_constants = (mu, mu_next, self.m_schedule, self.m_schedule * mu_next)

    def _update(self, key: Key, param: Any, grad: Any, lr: float, n: int) -> None:
        xp = backend.get_array_module(param)
        mu, mu_next, schedule, schedule_next = self._step_constants
        m = self._slot("ms", key, param)
        v = self._slot("vs", key, param)
        m *= self.beta_1
        m += (1.0 - self.beta_1) * grad
        v *= self.beta_2
        v += (1.0 - self.beta_2) * grad * grad
        m_bar = (1.0 - mu) * (grad / (1.0 - schedule)) + mu_next * (m / (1.0 - schedule_next))
        param -= lr * m_bar / (xp.sqrt(v / (1.0 - self.beta_2 ** n)) + self.epsilon)


OPTIMIZERS: dict[str, type[Optimizer]] = {
    "sgd": SGD, "rmsprop": RMSprop, "adagrad": Adagrad, "adadelta": Adadelta,
    "adam": Adam, "adamax": Adamax, "nadam": Nadam}


def serialize(optimizer: Optimizer) -> dict:
    """Keras's form: ``{"class_name": "SGD", "config": optimizer.get_config()}``."""
    return {"class_name": type(optimizer).__name__, "config": optimizer.get_config()}


def deserialize(config: dict, custom_objects: dict | None = None) -> Optimizer:
    """A new optimizer from ``serialize``'s dict; the class name is matched without
    case, as Keras does ("SGD", "sgd"); ``custom_objects`` maps your own classes' names
    to them."""
    if not (isinstance(config, dict) and isinstance(config.get("class_name"), str)
            and isinstance(config.get("config", {}), dict)):
        raise ValueError(f"optimizers.deserialize: expected a dict "
                         f'{{"class_name": ..., "config": {{...}}}}, got {config!r}')
    name, arguments = config["class_name"], config.get("config", {})
    cls = (custom_objects or {}).get(name) or OPTIMIZERS.get(name.lower())
    if cls is None:
        raise ValueError(f"optimizers.deserialize: unknown optimizer class {name!r}: expected "
                         f"one of {', '.join(type_.__name__ for type_ in OPTIMIZERS.values())}, "
                         f"or pass your class as custom_objects={{{name!r}: {name}}}")
    try:
        return cls.from_config(arguments)
    except TypeError as exc:
        raise ValueError(f"optimizers.deserialize: {name} does not take the config "
                         f"{arguments!r}: {exc}") from None


def get(identifier: str | dict | Optimizer) -> Optimizer:
    """An optimizer by Keras's string name (with its defaults), from a ``serialize``
    dict, or the instance itself."""
    if isinstance(identifier, Optimizer):
        return identifier
    if isinstance(identifier, dict):
        return deserialize(identifier)
    if not isinstance(identifier, str) or identifier not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {identifier!r}: expected one of "
                         f"{', '.join(OPTIMIZERS)}, a config dict or an optimizer instance")
    return OPTIMIZERS[identifier]()
