"""Small helpers with Keras's names."""
from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike


def to_categorical(y: ArrayLike, num_classes: int | None = None, dtype: str = "float32"
                   ) -> np.ndarray:
    """Integer labels (N,) or (N, 1) -> one-hot rows (N, num_classes)."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(f"to_categorical: expected labels of shape (N,) or (N, 1), got {y.shape}")
    if y.size and not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.equal(np.mod(y, 1), 0)):
            raise ValueError("to_categorical: labels must be whole numbers")
        y = y.astype(np.int64)
    if num_classes is None:
        num_classes = int(y.max()) + 1 if y.size else 0
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"to_categorical: labels must lie in [0, {num_classes - 1}], "
                         f"got values from {y.min()} to {y.max()}")
    out = np.zeros((y.shape[0], num_classes), dtype=dtype)
    out[np.arange(y.shape[0]), y] = 1
    return out


class Sequence:
    """Keras's ``keras.utils.Sequence``: a dataset of batches that knows its length.

    Subclasses implement ``__getitem__(index)`` returning one batch, ``(x, y)`` or
    ``(x, y, sample_weight)``, and ``__len__()``, the number of batches in an
    epoch. ``fit`` calls ``on_epoch_end()`` after every epoch (shuffle there).
    Indexing by batch, not by a stateful iterator, makes an epoch repeatable.
    """

    def __getitem__(self, index: int):
        raise NotImplementedError(f"{type(self).__name__}: a Sequence implements __getitem__")

    def __len__(self) -> int:
        raise NotImplementedError(f"{type(self).__name__}: a Sequence implements __len__")

    def on_epoch_end(self) -> None:
        """Called by ``fit`` at the end of every epoch; does nothing by default."""

    def __iter__(self):
        for index in range(len(self)):
            yield self[index]
