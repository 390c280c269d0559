"""The layers tier: one layer per module, each a forward/backward pair over
``base.Layer`` whose maths are calls into ``minicnn.ops``.

Imports ``backend``, ``activations``, ``initializers`` and ``ops`` below it.
"""
from __future__ import annotations

from minicnn.layers.activation import Activation
from minicnn.layers.advanced_activations import ELU, LeakyReLU, PReLU
from minicnn.layers.average_pooling import AveragePooling2D
from minicnn.layers.base import Layer
from minicnn.layers.conv2d import Conv2D
from minicnn.layers.dense import Dense
from minicnn.layers.dropout import Dropout
from minicnn.layers.flatten import Flatten
from minicnn.layers.global_pooling import GlobalAveragePooling2D, GlobalMaxPooling2D
from minicnn.layers.normalization import BatchNormalization
from minicnn.layers.padding import Cropping2D, ZeroPadding2D
from minicnn.layers.pooling import MaxPooling2D
from minicnn.layers.rescaling import Rescaling
from minicnn.layers.reshape import Reshape

__all__ = ["Activation", "AveragePooling2D", "BatchNormalization", "Conv2D", "Cropping2D", "Dense", "Dropout", "ELU",
           "Flatten", "GlobalAveragePooling2D", "GlobalMaxPooling2D", "Layer", "LeakyReLU",
           "MaxPooling2D", "PReLU", "Rescaling", "Reshape", "ZeroPadding2D"]
