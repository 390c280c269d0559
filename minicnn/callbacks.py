"""Callbacks: code that ``fit`` runs at the start and end of training, epochs and batches.

Keras 2's shape: subclass ``Callback`` and override any of

    on_train_begin(logs)          on_train_end(logs)
    on_epoch_begin(epoch, logs)   on_epoch_end(epoch, logs)
    on_batch_begin(batch, logs)   on_batch_end(batch, logs)

``self.model`` is the model being trained; setting ``self.model.stop_training
= True`` ends ``fit`` after the current epoch. A plain function
``f(epoch, logs)`` also works: it is called at the end of every epoch.
``fit`` checks every callback before the first step, so a wrong one never
costs an epoch of training.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable

HOOKS = ("on_train_begin", "on_train_end", "on_epoch_begin", "on_epoch_end",
         "on_batch_begin", "on_batch_end")


class Callback:
    """Keras's base class: every hook does nothing until overridden."""

    def __init__(self) -> None:
        self.model: Any = None
        self.params: dict = {}

    def set_model(self, model: Any) -> None:
        self.model = model

    def set_params(self, params: dict) -> None:
        self.params = params

    def on_train_begin(self, logs: dict | None = None) -> None: ...
    def on_train_end(self, logs: dict | None = None) -> None: ...
    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None: ...
    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None: ...
    def on_batch_begin(self, batch: int, logs: dict | None = None) -> None: ...
    def on_batch_end(self, batch: int, logs: dict | None = None) -> None: ...


class _EpochFunction(Callback):
    """A plain function f(epoch, logs), run at the end of every epoch."""

    def __init__(self, function: Callable[[int, dict], Any]) -> None:
        super().__init__()
        self.function = function

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.function(epoch, logs)


class CallbackList:
    """The callbacks of one ``fit``, checked up front and called in order."""

    def __init__(self, callbacks: Iterable[Any] | None, model: Any, params: dict) -> None:
        if callbacks is not None and not isinstance(callbacks, (list, tuple)):
            raise TypeError(f"fit: callbacks must be a list, got {type(callbacks).__name__}")
        self.callbacks = []
        for callback in callbacks or []:
            if any(callable(getattr(callback, hook, None)) for hook in HOOKS):
                self.callbacks.append(callback)
            elif callable(callback):
                self.callbacks.append(_EpochFunction(callback))
            else:
                raise TypeError(f"fit: callback {callback!r} is neither a function "
                                "f(epoch, logs) nor an object with Keras's hooks "
                                f"({', '.join(HOOKS)})")
        for callback in self.callbacks:
            if callable(getattr(callback, "set_model", None)):
                callback.set_model(model)
            else:
                callback.model = model
            if callable(getattr(callback, "set_params", None)):
                callback.set_params(params)

    def wants(self, hook: str) -> bool:
        """Does any callback define ``hook``? (batch hooks cost a host read per step)"""
        return any(callable(getattr(c, hook, None)) and
                   getattr(type(c), hook, None) is not getattr(Callback, hook, None)
                   for c in self.callbacks)

    def call(self, hook: str, *args: Any) -> None:
        for callback in self.callbacks:
            method = getattr(callback, hook, None)
            if callable(method):
                method(*args)
