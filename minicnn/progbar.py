"""Keras-style progress display for ``fit``, ``evaluate`` and ``ProgbarLogger``
(below the callbacks and the training loop, which both draw it).

    Epoch 1/20
    50000/50000 [==============================] - 24s 480us/step - loss: 1.9456 - acc: 0.2772

verbose=1 redraws one line in place (at most every ``interval`` seconds),
verbose=2 prints only the finished line of each epoch, verbose=0 nothing.
When the stream is not a terminal (a log file, a pipe) verbose=1 writes as
verbose=2 does: a file keeps every redraw, thousands of ``\r`` lines per epoch.
"""
from __future__ import annotations

import sys
import time
from typing import TextIO


def format_duration_per_step(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.0f}s/step"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.0f}ms/step"
    return f"{seconds * 1e6:.0f}us/step"


def _is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


class Progbar:
    def __init__(self, target: int, verbose: int = 1, width: int = 30, interval: float = 0.1,
                 stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout
        if verbose == 1 and not _is_terminal(self.stream):
            verbose = 2
        self.target, self.verbose, self.width, self.interval = target, verbose, width, interval
        self.start = time.perf_counter()
        self._last_draw = 0.0

    def line(self, seen: int, values: dict[str, float]) -> str:
        digits = len(str(self.target))
        done = int(self.width * seen / self.target) if self.target else self.width
        bar = "=" * max(done - 1, 0) + (">" if done < self.width else "=") if done else ""
        elapsed = time.perf_counter() - self.start
        text = f"{seen:>{digits}}/{self.target} [{bar:<{self.width}}]"
        if seen >= self.target:
            text += f" - {elapsed:.0f}s {format_duration_per_step(elapsed / max(seen, 1))}"
        else:
            eta = elapsed / max(seen, 1) * (self.target - seen)
            text += f" - ETA: {eta:.0f}s"
        for name, value in values.items():
            text += f" - {name}: {value:.4f}"
        return text

    def update(self, seen: int, values: dict[str, float], final: bool = False) -> None:
        if self.verbose == 0:
            return
        now = time.perf_counter()
        if self.verbose == 1 and (final or now - self._last_draw >= self.interval):
            self.stream.write("\r" + self.line(seen, values) + ("\n" if final else ""))
            self.stream.flush()
            self._last_draw = now
        elif self.verbose == 2 and final:
            self.stream.write(self.line(seen, values) + "\n")
            self.stream.flush()

    def interrupt(self) -> None:
        """End a half-drawn line so the next message starts on its own line."""
        if self.verbose == 1 and self._last_draw:
            self.stream.write("\n")
            self.stream.flush()

    def wants_values(self) -> bool:
        """True when the next ``update`` would draw (so the caller may sync the device)."""
        return self.verbose == 1 and time.perf_counter() - self._last_draw >= self.interval
