"""Any picture of a digit -> the 28x28 image the networks were trained on.

MNIST digits are white ink on black, the ink's bounding box scaled (anti-aliased, aspect
kept) so that its longer side is 20 px, then placed in a 28x28 field with the centre of mass
at the centre. People send phone photos, canvas exports, scans and, now and then, MNIST
images themselves. :func:`preprocess` turns each into the former, one module a step::

    decode  bytes -> grey picture, upright, opaque, at working size  (decode.py)
    clean   polarity, lighting, shadows, contrast -> ink on black     (clean.py)
    crop    the digit's components, specks and clutter dropped        (components.py)
    layout  thin strokes thickened, 20 px box, centre of mass         (layout.py)

Every step is OpenCV or Pillow primitives on a picture of at most ``WORK_PIXELS``, so the
cost is bounded whatever the upload; the primitives release the GIL, so several threads
preprocess at once.
"""

from __future__ import annotations

from typing import NamedTuple

import cv2
import numpy as np
from numpy.typing import NDArray

from service.imaging import decode as decoding
from service.imaging.clean import UNIT, strokes_of
from service.imaging.components import crop_and_count
from service.imaging.decode import Grey
from service.imaging.encode import encode_png
from service.imaging.formats import ALLOWED_FORMATS
from service.imaging.layout import is_mnist_layout, mnist_layout

__all__ = ["ALLOWED_FORMATS", "FoundDigit", "encode_png", "find_digit", "preprocess", "to_mnist"]

FloatArray = NDArray[np.float32]


class FoundDigit(NamedTuple):
    """The digit a picture holds, as the networks were trained on it."""

    image: FloatArray  # (28, 28) float32 in [0, 1], white ink on black
    digits_seen: int  # digit-sized groups of ink in the picture (over 1: a number)


def preprocess(data: bytes, *, max_pixels: int) -> FloatArray:
    """Client bytes -> float32 ``(28, 28)`` in [0, 1], white ink on black (MNIST-style).

    Raises the :mod:`service.imaging.decode` errors for bytes that are no readable image,
    and ``BadImage`` (``no_digit``) when nothing stands out from the background.
    """
    return find_digit(data, max_pixels=max_pixels).image


def find_digit(data: bytes, *, max_pixels: int) -> FoundDigit:
    """:func:`preprocess`, with how many digits the picture seemed to hold."""
    return _found(decoding.decode(data, max_pixels=max_pixels).grey)


def to_mnist(grey: Grey) -> FloatArray:
    """A grey picture (8-bit, or float32 in [0, 1]) -> the MNIST-style digit in it.

    A picture already laid out as MNIST (as MNIST's own digits are) is returned as it is:
    the cleaning steps would only blur it, and cost every model accuracy (default 99.5 ->
    99.1 % on 1,000 test digits).
    """
    return _found(grey).image


def _found(grey: Grey) -> FoundDigit:
    if is_mnist_layout(grey):
        digit: FloatArray = cv2.LUT(grey, UNIT)
        return FoundDigit(digit, 1)
    crop, seen = strokes_of(grey, crop_and_count)  # (h, w), background exactly 0
    return FoundDigit(mnist_layout(crop), seen)
