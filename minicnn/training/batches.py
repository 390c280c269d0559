"""Where ``fit``'s batches come from: arrays cut into batches, or a Python
generator or ``minicnn.utils.Sequence`` that yields them (Keras's ``fit_generator``).

The training loop asks a source for one epoch at a time::

    for x_batch, y_batch in source.epoch(rng, shuffle, where): ...   # checked batches
    source.end_epoch()

* ``Arrays``: batches of ``batch_size`` samples taken in a permutation of the
  samples drawn from fit's generator (or in order without ``shuffle``); the
  last batch of an epoch may be smaller.
* ``Stream`` over a Sequence: ``steps`` batches (default ``len(sequence)``), the
  batch indices in an order drawn from fit's generator, then ``on_epoch_end()``.
  Every epoch starts a new pass, so it is repeatable and resumes exactly.
* ``Stream`` over a Python generator: the next ``steps`` batches it yields. It is
  read on across epochs, never restarted, so it must loop forever, as Keras's
  do; ``shuffle`` does not apply to it.

Each batch of a stream is checked as ``fit`` checks arrays (by the ``check``
function the model gives), so a bad batch is named; the check runs with the
fetch, on the read-ahead thread, so its host reads overlap the training step.
Read-ahead: with ``workers >= 1`` a thread pool fetches up to
``max_queue_size`` batches before the step that needs them: a Sequence's in
parallel on ``workers`` threads, a generator's one after the other (``next``
cannot run twice at once). The loop still takes them in order, so a run does
not depend on the number of workers. ``workers=0`` fetches in the loop's thread.
"""
from __future__ import annotations

import collections
import functools
import math
import numbers
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from minicnn import backend
from minicnn.backend import Array
from minicnn.progbar import Progbar
from minicnn.utils import Sequence


def is_stream(data: Any) -> bool:
    """A Sequence or an iterator (a Python generator): what Keras's fit_generator takes."""
    return isinstance(data, Sequence) or (hasattr(data, "__next__") and not hasattr(data, "shape"))


def unpack(batch: Any, where: str) -> tuple[Any, Any, Any]:
    """(x, y, sample_weight or None) from one batch (x, y) or (x, y, sample_weight) of a
    generator or Sequence."""
    if not isinstance(batch, (tuple, list)):
        raise ValueError(f"{where}: a generator or Sequence must give batches (x, y), "
                         f"got a {type(batch).__name__}")
    if len(batch) not in (2, 3):
        raise ValueError(f"{where}: a generator or Sequence must give batches (x, y) or "
                         f"(x, y, sample_weight), got a {type(batch).__name__} of "
                         f"{len(batch)} items")
    return batch[0], batch[1], batch[2] if len(batch) == 3 else None


def inputs(batch: Any) -> Any:
    """x from a batch given to predict: x alone, or the x of (x, y) or (x, y, sample_weight)."""
    return batch[0] if isinstance(batch, tuple) and len(batch) in (2, 3) else batch


def reading_options(workers: Any, max_queue_size: Any, use_multiprocessing: Any,
                    where: str) -> dict[str, int]:
    """Keras's read-ahead arguments, checked: {"workers": ..., "max_queue_size": ...}."""
    if use_multiprocessing:
        raise ValueError(f"{where}: use_multiprocessing=True is not supported; minicnn reads "
                         "batches ahead in threads (workers=N)")
    for name, value, low in (("workers", workers, 0), ("max_queue_size", max_queue_size, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{where}: {name} must be an int >= {low}, got {value!r}")
    return {"workers": int(workers), "max_queue_size": int(max_queue_size)}


def step_count(steps: Any, name: str, where: str) -> int:
    """A number of batches: an int >= 1, or a finite real > 0 rounded up, as Keras's
    loop ``while steps_done < steps_per_epoch`` does (its docs pass
    ``len(x_train) / 32``)."""
    if isinstance(steps, bool) or not isinstance(steps, numbers.Real) or \
            not math.isfinite(steps) or steps <= 0:
        raise ValueError(f"{where}: {name} must be a positive number of batches, got {steps!r}")
    return math.ceil(steps)


class GeneratorExhausted(ValueError):
    """A generator stopped before fit had all the batches it was told to expect."""


class ReadAhead:
    """Runs fetches on ``workers`` threads, at most ``depth`` ahead of the one
    wanted, and hands back their results in order; with no workers each fetch
    runs when its result is wanted. On the GPU each fetch runs on the device that
    was current where the ReadAhead was made (CuPy's current device is per
    thread, and a pool thread would otherwise allocate on device 0)."""

    def __init__(self, workers: int, depth: int) -> None:
        self.depth = depth
        self.device = backend.current_device()
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="minicnn-batches") \
            if workers else None

    def on_device(self, fetch: Callable[[], Any]) -> Any:
        with backend.device_context(self.device):
            return fetch()

    def results(self, fetches: Iterable[Callable[[], Any]]) -> Iterator[Any]:
        if self.pool is None:
            for fetch in fetches:
                yield fetch()
            return
        pending: collections.deque = collections.deque()
        try:
            for fetch in fetches:
                pending.append(self.pool.submit(self.on_device, fetch))
                if len(pending) >= self.depth:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:  # a pass left early: fetch nothing more for it
            for future in pending:
                future.cancel()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


class Arrays:
    """Checked arrays, ``batch_size`` samples a step; the progress bar counts samples.
    With ``sample_weight`` (N,) each batch is (x, y, sample_weight)."""

    def __init__(self, x: Array, y: Array, batch_size: int,
                 sample_weight: Array | None = None) -> None:
        self.x, self.y, self.batch_size = x, y, batch_size
        self.sample_weight = sample_weight
        self.target = int(x.shape[0])  # what the progress bar counts to
        self.steps = -(-self.target // batch_size)
        self.sample = x  # an array on the backend fit runs on
        self.params = {"batch_size": batch_size, "samples": self.target}  # for the callbacks

    def epoch(self, rng: Any, shuffle: bool, where: str) -> Iterator[tuple[Array, Array]]:
        n, size = self.target, self.batch_size
        order = backend.permutation(rng, n) if shuffle else \
            backend.get_array_module(self.x).arange(n)
        w = self.sample_weight
        return ((self.x[index], self.y[index]) + (() if w is None else (w[index],))
                for index in (order[start:start + size] for start in range(0, n, size)))

    def progress(self, step: int, samples: int) -> int:
        return samples

    def end_epoch(self) -> None:
        pass

    def evaluate(self, model: Any, where: str) -> dict[str, float]:
        return model.evaluate_batches(self.x, self.y, self.batch_size, self.sample_weight)

    def close(self) -> None:
        pass


class Stream:
    """Batches from a Python generator or a ``Sequence``, each checked by ``check``
    (``check(batch, where)`` returns what the loop uses); the progress bar counts steps."""

    def __init__(self, data: Any, steps: Any, check: Callable[[Any, str], Any], where: str,
                 steps_name: str = "steps", workers: int = 1, max_queue_size: int = 10) -> None:
        if not is_stream(data):
            raise TypeError(f"{where}: expected a Python generator or a minicnn.utils.Sequence, "
                            f"got {type(data).__name__}")
        self.data, self.check, self.where = data, check, where
        self.is_sequence = isinstance(data, Sequence)
        length = len(data) if self.is_sequence else None
        if self.is_sequence and length < 1:
            raise ValueError(f"{where}: the Sequence {type(data).__name__} is empty "
                             f"(len() is {length})")
        if steps is None:
            if not self.is_sequence:
                raise ValueError(f"{where}: a Python generator has no length: give {steps_name} "
                                 "(its number of batches per epoch), or use a "
                                 "minicnn.utils.Sequence")
            steps = length
        steps = step_count(steps, steps_name, where)
        if self.is_sequence and steps > length:
            raise ValueError(f"{where}: {steps_name}={steps} is more than the {length} batches "
                             f"of the Sequence {type(data).__name__}; an epoch is at most "
                             "one pass over it")
        self.steps = self.target = int(steps)
        self.params = {"steps": self.steps}
        # One generator cannot be read by two threads at once.
        self.read_ahead = ReadAhead(workers if self.is_sequence else min(workers, 1),
                                    max_queue_size)
        self.kept = None  # a generator's batch read by first_batch, to be trained on first
        self.pulled = 0   # batches taken from a generator so far
        self.sample = None

    def first_batch(self) -> Any:
        """The first batch, checked, before any training: the model builds on it.
        A Sequence's is read again in the epoch; a generator's is kept for it."""
        if self.is_sequence:
            where = f"{self.where}, {type(self.data).__name__}[0]"
            batch = self.data[0]
        else:
            where = f"{self.where}, generator batch 0"
            batch = self.kept = self.pull()
        checked = self.checked(batch, where)
        self.sample = checked[0] if isinstance(checked, tuple) else checked
        return checked

    def pull(self) -> Any:
        if self.kept is not None:
            batch, self.kept = self.kept, None
            return batch
        try:
            batch = next(self.data)
        except StopIteration:
            raise GeneratorExhausted(
                f"{self.where}: the generator stopped after {self.pulled} batches; fit takes "
                f"{self.steps} batches from it every epoch, so it must loop forever (Keras's "
                "generators run `while True:`)") from None
        self.pulled += 1
        return batch

    def epoch(self, rng: Any, shuffle: bool, where: str) -> Iterator[Any]:
        """The checked batches of one pass; errors name the Sequence index or the
        generator batch (counted from 0 in the pass)."""
        if self.is_sequence:
            n = len(self.data)
            order = backend.to_host(backend.permutation(rng, n)) if shuffle else np.arange(n)
            order = [int(i) for i in order[:self.steps]]
            fetches = [functools.partial(self.data.__getitem__, i) for i in order]
            names = [f"{where}, {type(self.data).__name__}[{i}]" for i in order]
        else:
            fetches = [self.pull] * self.steps
            names = [f"{where}, generator batch {k}" for k in range(self.steps)]
        # Each batch is checked inside its fetch, on the read-ahead thread: the check's
        # host reads (NaN, label range, class weights) overlap the training steps.
        return self.read_ahead.results(functools.partial(self.fetch_checked, fetch, name)
                                       for fetch, name in zip(fetches, names))

    def fetch_checked(self, fetch: Callable[[], Any], where: str) -> Any:
        return self.checked(fetch(), where)

    def checked(self, batch: Any, where: str) -> Any:
        """``check(batch, where)``; an error from deeper down (a layer's input check)
        gets ``where`` in front, so it names the batch too."""
        try:
            return self.check(batch, where)
        except (ValueError, TypeError) as exc:
            if type(exc) not in (ValueError, TypeError) or str(exc).startswith(where):
                raise
            raise type(exc)(f"{where}: {exc}") from exc

    def progress(self, step: int, samples: int) -> int:
        return step

    def end_epoch(self) -> None:
        """A pass is over: a Sequence's ``on_epoch_end`` (Keras's hook to reshuffle)."""
        if self.is_sequence:
            self.data.on_epoch_end()

    def evaluate(self, model: Any, where: str, verbose: int = 0) -> dict[str, float]:
        """The model's logs over one pass, each value the mean over all samples
        (batch means weighted by batch size, as Keras's evaluate_generator). The
        sums stay on the device and are read once, at the end."""
        total_loss, totals, count = 0.0, 0, 0
        bar = Progbar(self.steps, verbose=verbose)
        for step, (x, y, *weights) in enumerate(self.epoch(None, False, where), start=1):
            n = int(x.shape[0])
            loss_sum, sums = model.evaluate_sums(x, y, n, *weights)
            total_loss, totals, count = total_loss + loss_sum, totals + sums, count + n
            bar.update(step, {}, final=step == self.steps)
        self.end_epoch()
        return model.logs(total_loss, totals, count)

    def predict(self, model: Any, where: str, verbose: int = 0) -> np.ndarray:
        """The model's outputs for every sample of one pass, on the host."""
        outputs = []
        bar = Progbar(self.steps, verbose=verbose)
        for step, x in enumerate(self.epoch(None, False, where), start=1):
            outputs.append(backend.to_host(model.forward(x, training=False)))
            bar.update(step, {}, final=step == self.steps)
        self.end_epoch()
        return np.concatenate(outputs)

    def close(self) -> None:
        self.read_ahead.close()
