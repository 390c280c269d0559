"""Test-time augmentation: a model's outputs averaged over mirrored and shifted copies.

``predict_tta(model, x)`` runs ``model.predict`` on whole batches of transformed
images (N, H, W, C) and averages what the model outputs (logits for a model
that ends without a softmax, as fast CIFAR-10 recipes average them;
probabilities otherwise), with f the model and x' the mirror image of x:

    mirror(x)  = (f(x) + f(x')) / 2                      (flip=True; f(x) with flip=False)
    translate = 0:   out = mirror(x)
    translate = s:   p = x reflect-padded by s pixels on every side,
                     a = p[:, 0:H, 0:W],  b = p[:, 2s:H+2s, 2s:W+2s]  (x moved by s
                     pixels down-right and up-left)
                     out = mirror(x) / 2 + (mirror(a) + mirror(b)) / 4

(airbench's "TTA level 2" is flip=True, translate=1.) Each copy is made with
array operations on the whole batch, on x's device.

``predict_tta_levels(model, x)`` returns the three levels a recipe reports, f(x),
mirror(x) and the translated average, from the six passes the last one needs
(one set of passes instead of 1 + 2 + 6).
"""
from __future__ import annotations

import numbers
from typing import Any

from minicnn import backend
from minicnn.backend import Array


def _mirror(model: Any, x: Array, batch_size: int | None, flip: bool,
            out: Array | None = None) -> Array:
    """(f(x) + f(x')) / 2, or f(x) without ``flip``; ``out``: f(x) if already made."""
    out = model.predict(x, batch_size=batch_size) if out is None else out
    if not flip:
        return out
    return 0.5 * out + 0.5 * model.predict(x[:, :, ::-1, :], batch_size=batch_size)


def _checked(x: Array, flip: bool, translate: int, where: str) -> None:
    if getattr(x, "ndim", None) != 4:
        raise ValueError(f"{where}: expected images of shape (N, H, W, C), got "
                         f"{getattr(x, 'shape', type(x).__name__)}")
    if not isinstance(flip, (bool, numbers.Integral)):
        raise ValueError(f"{where}: flip must be True or False, got {flip!r}")
    if not isinstance(translate, numbers.Integral) or isinstance(translate, bool) or translate < 0:
        raise ValueError(f"{where}: translate must be a whole number of pixels >= 0, "
                         f"got {translate!r}")
    h, w = x.shape[1], x.shape[2]
    if translate >= min(h, w):  # reflect padding needs more pixels than it adds
        raise ValueError(f"{where}: translate={translate} must be smaller than the images' "
                         f"height and width, got images of {h}x{w}")


def _translated(model: Any, x: Array, out: Array, batch_size: int | None, flip: bool,
                translate: int) -> Array:
    """out / 2 + (mirror(a) + mirror(b)) / 4, a and b x shifted diagonally by
    ``translate`` pixels with reflected borders (out: mirror(x), or f(x) unflipped)."""
    if translate == 0:
        return out
    h, w = x.shape[1], x.shape[2]
    xp = backend.get_array_module(x)
    s = int(translate)
    padded = xp.pad(x, ((0, 0), (s, s), (s, s), (0, 0)), mode="reflect")
    up_left = padded[:, :h, :w]
    down_right = padded[:, 2 * s:h + 2 * s, 2 * s:w + 2 * s]
    shifted = (_mirror(model, up_left, batch_size, flip)
               + _mirror(model, down_right, batch_size, flip))
    return 0.5 * out + 0.25 * shifted


def predict_tta(model: Any, x: Array, batch_size: int | None = None, flip: bool = True,
                translate: int = 1) -> Array:
    """The model's outputs for the images x (N, H, W, C), averaged over mirror images
    (``flip``) and over two diagonal shifts by ``translate`` pixels with reflected
    borders, as the module docstring writes it. Returns what ``predict`` returns:
    an array of the outputs' shape, on the host."""
    _checked(x, flip, translate, "predict_tta")
    out = _mirror(model, x, batch_size, bool(flip))
    return _translated(model, x, out, batch_size, bool(flip), translate)


def predict_tta_levels(model: Any, x: Array, batch_size: int | None = None,
                       translate: int = 1) -> tuple[Array, Array, Array]:
    """(f(x), mirror(x), all): the outputs of ``predict`` (no augmentation), of
    ``predict_tta(flip=True, translate=0)`` and of ``predict_tta(flip=True,
    translate=translate)``, from one set of passes: f(x) and f(x') are computed once
    and serve all three (six passes in all for translate > 0, against nine for three
    separate calls)."""
    _checked(x, True, translate, "predict_tta_levels")
    plain = model.predict(x, batch_size=batch_size)
    mirrored = _mirror(model, x, batch_size, True, out=plain)
    return plain, mirrored, _translated(model, x, mirrored, batch_size, True, translate)
