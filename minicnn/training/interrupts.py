"""Stopping training cleanly: Ctrl-C / SIGTERM between steps, and divergence.

Inside ``fit`` the first SIGINT or SIGTERM only raises a flag; the loop
finishes the step it is in, then stops with ``TrainingInterrupted`` (a
``KeyboardInterrupt``) whose message says where it stopped and how to resume.
A second Ctrl-C stops at once, as usual. A signal the process ignores
(SIG_IGN, as a shell sets SIGINT for its background jobs) stays ignored.
"""
from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped by a signal between two steps; the message says how to resume."""


class TrainingDiverged(FloatingPointError):
    """The loss or a gradient became NaN or infinite."""


class StopFlag:
    signum: int | None = None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""

    def __bool__(self) -> bool:
        return self.signum is not None


@contextlib.contextmanager
def deferred_signals() -> Iterator[StopFlag]:
    """Within the block, SIGINT/SIGTERM set the yielded flag instead of killing the step."""
    flag = StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag  # signal handlers can only be set from the main thread
        return

    def handler(signum, frame):
        if flag and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        flag.signum = signum

    # A signal the process ignores stays ignored: a shell starts its background jobs
    # with SIGINT ignored, so that a Ctrl-C meant for the foreground leaves them be.
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)
                if signal.getsignal(sig) != signal.SIG_IGN}
    try:
        yield flag
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
