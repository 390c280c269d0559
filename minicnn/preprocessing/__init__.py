"""Data preprocessing with Keras's names (``keras.preprocessing``).

* ``minicnn.preprocessing.image.ImageDataGenerator``: Keras 2's real-time image
  augmentation and normalization, transforming whole batches on the batch's device.
* ``minicnn.preprocessing.transforms``: the batch-wise geometric operations it is
  built on (flip, whole-pixel translate, affine warp), usable on their own.
* ``minicnn.preprocessing.crops.CropFlipSequence`` (also in ``image``): the random
  crop and alternating flip of fast CIFAR recipes, one gather per batch.
"""
from __future__ import annotations

__all__ = ["crops", "image", "transforms"]

from minicnn.preprocessing import crops, image, transforms  # noqa: E402
