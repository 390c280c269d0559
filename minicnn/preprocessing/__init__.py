"""Data preprocessing with Keras's names (``keras.preprocessing``).

* ``minicnn.preprocessing.image.ImageDataGenerator``: Keras 2's real-time image
  augmentation and normalization, transforming whole batches on the batch's device.
* ``minicnn.preprocessing.transforms``: the batch-wise geometric operations it is
  built on (flip, whole-pixel translate, affine warp), usable on their own.
"""
from __future__ import annotations

__all__ = ["image", "transforms"]

from minicnn.preprocessing import image, transforms  # noqa: E402
