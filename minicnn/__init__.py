"""minicnn: a convolutional-network framework written from scratch on NumPy.

``minicnn.set_backend("cupy")`` runs the same code on the GPU through CuPy.
The package reads bottom-up; each module imports only from the levels below it
(``tests/test_import_graph.py`` holds the list and checks it):
``backend`` (with ``strict``, the test backend; ``initializers``, ``regularizers``, ``schedules``,
``fileio``, ``utils``, ``progbar``) -> ``ops`` (the computations, fast and plain:
``minicnn.set_ops("reference")`` runs the textbook versions) -> ``activations``,
``gradcheck`` -> the layers -> ``losses``, ``metrics``, ``optimizers`` ->
``inspection``, ``plan`` (the fusions), ``datachecks``, ``serialization``,
``callbacks``, ``distributed`` -> ``training`` (fit's loop and batch sources, one
step, checkpoints, tracing, clean stops) -> ``models`` (``Sequential``, which runs
fit through ``training``) -> ``datasets`` (CIFAR-10), ``preprocessing``
(augmentation), ``viz`` (plots, pictures, the report).
"""
from __future__ import annotations

import os as _os

# OpenBLAS's idle worker threads spin on their cores for a long while after each
# matrix product (about 2^28 cycles), which starves the threads minicnn uses for
# pooling, dropout and im2col right after it. A short timeout sends them to sleep
# at once. It is read when NumPy loads OpenBLAS, so it only helps if minicnn is
# imported before NumPy; a value the user set is kept.
_os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

from minicnn.backend import (floatx, get_array_module, get_backend, set_backend,  # noqa: E402
                             set_floatx, set_seed, to_device, to_host, use_backend, use_floatx)
from minicnn.ops import get_ops, set_ops, use_ops  # noqa: E402

# The subpackages as attributes, so Keras-style code works after renaming the import
# alone: ``import minicnn; minicnn.layers.Dense(10)`` as ``keras.layers.Dense(10)``.
from minicnn import (activations, callbacks, datasets, initializers, layers,  # noqa: E402
                     losses, metrics, models, ops, optimizers, preprocessing, regularizers, utils)

__version__ = "0.1.0"

__all__ = ["activations", "callbacks", "datasets", "initializers", "layers", "losses", "metrics",
           "models", "ops", "optimizers", "preprocessing", "regularizers", "utils", "floatx", "get_array_module", "get_backend", "get_ops",
           "set_backend", "set_floatx", "set_ops", "set_seed", "to_device", "to_host",
           "use_backend", "use_floatx", "use_ops", "__version__"]
