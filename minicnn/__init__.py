"""minicnn: a convolutional-network framework written from scratch on NumPy.

``minicnn.set_backend("cupy")`` runs the same code on the GPU through CuPy.
The package reads bottom-up: ``backend`` -> ``activations``/``initializers`` ->
``layers`` -> ``losses``/``optimizers`` -> ``models`` -> ``gradcheck``.
"""
from minicnn.backend import (floatx, get_array_module, get_backend, set_backend, set_floatx,
                             set_seed, to_device, to_host, use_backend, use_floatx)

__version__ = "0.1.0"

__all__ = ["floatx", "get_array_module", "get_backend", "set_backend", "set_floatx", "set_seed",
           "to_device", "to_host", "use_backend", "use_floatx", "__version__"]
