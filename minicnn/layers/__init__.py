"""The layers tier: one layer per module, each a forward/backward pair over
``base.Layer`` whose maths are calls into ``minicnn.ops``.

Imports ``backend``, ``activations``, ``initializers`` and ``ops`` below it.
"""
from __future__ import annotations

from minicnn.layers.activation import Activation
from minicnn.layers.base import Layer
from minicnn.layers.conv2d import Conv2D
from minicnn.layers.dense import Dense
from minicnn.layers.dropout import Dropout
from minicnn.layers.flatten import Flatten
from minicnn.layers.normalization import BatchNormalization
from minicnn.layers.pooling import MaxPooling2D

__all__ = ["Activation", "Conv2D", "Dense", "Dropout", "Flatten", "Layer", "MaxPooling2D"]
