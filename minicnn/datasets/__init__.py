"""Dataset loaders (standard library and NumPy only).

``minicnn.datasets.cifar10.load_data()`` returns CIFAR-10 exactly like
``keras.datasets.cifar10.load_data()``: ``((x_train, y_train), (x_test, y_test))``
with uint8 channels-last images ``(N, 32, 32, 3)`` and uint8 labels ``(N, 1)``.
"""
from __future__ import annotations

__all__ = ["cifar10"]

from minicnn.datasets import cifar10  # noqa: E402  (keras.datasets imports its loaders too)
