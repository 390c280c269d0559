"""Layers, one per module, each a forward/backward pair over ``base.Layer``.

``im2col`` holds the window maths that Conv2D and MaxPooling2D share.
"""
from __future__ import annotations

from minicnn.layers.activation import Activation
from minicnn.layers.base import Layer
from minicnn.layers.conv2d import Conv2D
from minicnn.layers.dense import Dense
from minicnn.layers.dropout import Dropout
from minicnn.layers.flatten import Flatten
from minicnn.layers.pooling import MaxPooling2D

__all__ = ["Activation", "Conv2D", "Dense", "Dropout", "Flatten", "Layer", "MaxPooling2D"]
