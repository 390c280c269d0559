"""The training loop and what runs around it: ``fit``'s epochs (``loop``), one
step and its profile (``step``), checkpoints, the gradient tracer and clean
stops (``interrupts``). The callbacks it calls live in ``minicnn.callbacks``,
Keras's path, so ``from keras.callbacks import ...`` ports by renaming; the
progress bar in ``minicnn.progbar``, below both.

It sits on the layers, losses and optimizers and drives a model through the
model's public step API (``loss_input``, ``backward``, ``loss_function``,
``relu_moves``); it never imports ``minicnn.models``, which calls into it.
"""
