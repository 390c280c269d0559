"""Random crops and flips of whole batches, as fast CIFAR recipes (airbench) train.

``CropFlipSequence(x, y, batch_size, pad=2, flip="alternating")`` is a
``minicnn.utils.Sequence`` over arrays whose batch i of epoch e is, for each
chosen image n (W pixels across):

    out[n, i, j] = x[n, mirror(i + dr[n]), col(j)]
    col(j) = flip1(mirror(flip2(j) + dc[n]))

* dr, dc: each image's translation, drawn per epoch uniformly from -pad..pad:
  a random pad x pad crop of the image padded by ``pad`` pixels with "mirror"
  reflection (d c b | a b c d | c b a: torch's and numpy.pad's "reflect");
* flip="alternating" (airbench's): flip1 mirrors the images picked once, with
  probability 1/2, before training (a fixed pre-flip), and flip2 mirrors every
  image on odd epochs (0-based): each image is seen both ways in any two
  epochs in a row, which beats a fresh coin per epoch in short runs;
  flip="random": a fresh coin per image and epoch (flip2); flip=None: none.
* shuffled per epoch (``shuffle``), the last partial batch dropped (``drop_last``).

Each batch is one gather from x on its own device (the indices are computed on
the host, B x (H + W) of them, and moved once), so nothing the size of the
dataset is written per epoch: no padded copy, no cropped copy. Epoch e draws
everything from a generator seeded by (seed, e): a batch is the same whenever
it is asked for. ``fit`` calls ``on_epoch_end`` after each epoch.
"""
from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from minicnn import backend
from minicnn.preprocessing.transforms import _gather, _map_indices, like
from minicnn.utils import Sequence

FLIPS = ("alternating", "random", None)


class CropFlipSequence(Sequence):
    """Batches of randomly translated (mirror-padded crops) and flipped images; see
    the module docstring for the scheme."""

    def __init__(self, x: Any, y: Any, batch_size: int, pad: int = 2,
                 flip: str | None = "alternating", shuffle: bool = True,
                 drop_last: bool = True, seed: int | None = None) -> None:
        where = "CropFlipSequence"
        if getattr(x, "ndim", None) != 4:
            raise ValueError(f"{where}: x must be a batch of images (N, H, W, C), got shape "
                             f"{getattr(x, 'shape', type(x).__name__)}")
        n, h, w, _ = x.shape
        if y is not None and (getattr(y, "ndim", 0) == 0 or y.shape[0] != n):
            raise ValueError(f"{where}: x and y must have the same length, got x.shape = "
                             f"{tuple(x.shape)}, y.shape = {getattr(y, 'shape', None)}")
        for name, value, low in (("batch_size", batch_size, 1), ("pad", pad, 0)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
                raise ValueError(f"{where}: {name} must be an int >= {low}, got {value!r}")
        if pad >= min(h, w):
            raise ValueError(f"{where}: pad={pad} must be smaller than the image ({h}x{w})")
        if flip not in FLIPS:
            raise ValueError(f"{where}: flip must be 'alternating', 'random' or None, got "
                             f"{flip!r}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
            raise ValueError(f"{where}: seed must be an int or None, got {seed!r}")
        if drop_last and n < batch_size:
            raise ValueError(f"{where}: drop_last with {n} images and batch_size {batch_size} "
                             "leaves no batch")
        self.x = backend.to_device(x)
        self.y = None if y is None else backend.to_device(y)
        self.n, self.batch_size, self.pad, self.flip = n, int(batch_size), int(pad), flip
        self.shuffle, self.drop_last = bool(shuffle), bool(drop_last)
        self.seed = int(np.random.SeedSequence().entropy % 2**63) if seed is None else int(seed)
        pre = np.random.default_rng([self.seed, 2**32])  # the one pre-flip of the whole run
        self.preflipped = (pre.random(n) < 0.5) if flip == "alternating" else np.zeros(n, bool)
        self.epoch = 0
        self._draw()

    def _draw(self) -> None:
        """This epoch's order, translations and flips (host arrays, one value per image)."""
        rng = np.random.default_rng([self.seed, self.epoch])
        self.order = rng.permutation(self.n) if self.shuffle else np.arange(self.n)
        self.row_shifts = rng.integers(-self.pad, self.pad + 1, self.n)
        self.col_shifts = rng.integers(-self.pad, self.pad + 1, self.n)
        if self.flip == "alternating":
            self.flipped = np.full(self.n, self.epoch % 2 == 1)
        elif self.flip == "random":
            self.flipped = rng.random(self.n) < 0.5
        else:
            self.flipped = np.zeros(self.n, bool)

    def __len__(self) -> int:
        full, rest = divmod(self.n, self.batch_size)
        return full if self.drop_last or not rest else full + 1

    def __getitem__(self, index: int):
        if isinstance(index, bool) or not isinstance(index, numbers.Integral) \
                or not 0 <= index < len(self):
            raise IndexError(f"CropFlipSequence: batch index {index!r} out of range; there "
                             f"are {len(self)} batches")
        chosen = self.order[self.batch_size * index:self.batch_size * (index + 1)]
        _, h, w, _ = self.x.shape
        rows = _map_indices(np, np.arange(h)[None, :] + self.row_shifts[chosen, None], h,
                            "mirror")
        j = np.arange(w)[None, :]
        j = np.where(self.flipped[chosen, None], w - 1 - j, j)  # flip2: after the crop
        cols = _map_indices(np, j + self.col_shifts[chosen, None], w, "mirror")
        cols = np.where(self.preflipped[chosen, None], w - 1 - cols, cols)  # flip1: before it
        pixels = (chosen[:, None, None] * (h * w) + rows[:, :, None] * w + cols[:, None, :])
        xp = backend.get_array_module(self.x)
        batch = _gather(xp, self.x, like(self.x, pixels.astype(np.int64)))
        if self.y is None:
            return batch
        return batch, self.y[like(self.y, chosen.astype(np.int64))]

    def on_epoch_end(self) -> None:
        """The next epoch: a new order, new translations, the flips of its parity."""
        self.epoch += 1
        self._draw()
