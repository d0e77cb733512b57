"""A cropped digit -> 28x28, laid out the way MNIST's digits were.

MNIST scaled each digit's bounding box so that its longer side is 20 px (anti-aliased,
aspect kept), then placed it in a 28x28 field with its centre of mass at the centre. Pen
strokes much thinner than MNIST's are thickened first: networks trained on MNIST misread
hairlines.
"""

from __future__ import annotations

import math
from typing import Final

import cv2
import numpy as np
from numpy.typing import NDArray
from PIL import Image

from service.imaging.clean import no_digit

FloatArray = NDArray[np.float32]

MNIST_SIDE: Final = 28
#: MNIST scales the ink's bounding box so that its longer side is this many pixels.
DIGIT_BOX: Final = 20
#: MNIST's centre of mass sits at pixel (14, 14) (row, column; pixel centres at integers).
MNIST_CENTRE: Final = 14.0
#: Strokes thinner than this (px in the 20 px box, by :func:`stroke_width` on the 40 px
#: Lanczos copy: MNIST's 2nd percentile) are thickened to about the target (MNIST's median).
#: Measured on the 10,000 MNIST test digits' crops: 1st percentile 1.67, 2nd 1.75, median
#: 2.63, 90th 3.63.
_THIN_STROKE: Final = 1.75
_TARGET_STROKE: Final = 2.65
#: Pixel coordinates along an axis of the 28x28 field.
_AXIS: Final = np.arange(MNIST_SIDE, dtype=np.float32)
#: MNIST's ink reaches (nearly) full intensity in every digit.
_MNIST_FULL_INK: Final = 240
#: Resampled values under this are Lanczos ringing, not ink (half an 8-bit step).
_RINGING: Final = 0.5 / 255
#: Square structuring elements by radius, for thickening strokes.
_SQUARES: Final = {
    r: cv2.getStructuringElement(cv2.MORPH_RECT, (2 * r + 1,) * 2) for r in (1, 2, 3)
}


def is_mnist_layout(grey: NDArray[np.generic]) -> bool:
    """Whether ``grey`` already is an MNIST digit: 28x28 8-bit, white on an exactly black
    background, its ink reaching full intensity, its bounding box 20 px on the longer side
    and its centre of mass within a pixel of the centre."""
    if grey.shape != (MNIST_SIDE, MNIST_SIDE) or grey.dtype != np.uint8:
        return False
    moments = cv2.moments(grey)
    if moments["m00"] <= 0 or cv2.minMaxLoc(grey)[1] < _MNIST_FULL_INK:
        return False
    _, _, width, height = cv2.boundingRect(grey)  # of the non-zero pixels
    if max(height, width) != DIGIT_BOX:
        return False
    centre_row, centre_col = moments["m01"] / moments["m00"], moments["m10"] / moments["m00"]
    return bool(abs(centre_row - MNIST_CENTRE) <= 1.0 and abs(centre_col - MNIST_CENTRE) <= 1.0)


def mnist_layout(crop: FloatArray, *, strokes_checked: bool = False) -> FloatArray:
    """The digit's crop (bright on black) -> float32 ``(28, 28)`` in [0, 1], MNIST-style.

    ``strokes_checked``: the crop comes from a picture :func:`thicken_at_digit_scale` has
    already seen to (a number's digits share one pen: measured once, not per digit).
    """
    if not strokes_checked:
        crop = thicken_thin_strokes(crop)
    return centre_by_mass(fit_20px(crop))


def thicken_thin_strokes(digit: FloatArray) -> FloatArray:
    """Dilate a digit drawn with a pen much thinner than MNIST's (ballpoint, 1 px canvas pen).

    Widths are measured by :func:`stroke_width` at twice the final scale (a 40 px box, where
    a hairline still differs from a thin MNIST stroke) and given in pixels of the 20 px box:
    MNIST's run from 1.7 (1st percentile) over 2.6 (median) to 3.6 (90th). A digit under
    ``_THIN_STROKE`` is dilated, at the 40 px scale, by the radius that brings it closest to
    ``_TARGET_STROKE``, and returned at that scale; others are returned unchanged.
    """
    working = _lanczos(digit, 2 * DIGIT_BOX)  # (h, w), max(h, w) == 40
    if stroke_width(working) / 2 >= _THIN_STROKE:
        return digit
    return _thickened(working)


#: The digit height (px) at which :func:`thicken_at_digit_scale` wants a number's picture.
DIGIT_SCALE: Final = 2 * DIGIT_BOX


def thicken_at_digit_scale(picture: FloatArray) -> FloatArray:
    """:func:`thicken_thin_strokes` for a picture of several digits already scaled so that a
    digit is about :data:`DIGIT_SCALE` px tall: the pen measured once, for all of them."""
    if stroke_width(picture) / 2 >= _THIN_STROKE:
        return picture
    return _thickened(picture.copy())


def _thickened(working: FloatArray) -> FloatArray:
    """``working`` (at the 40 px scale) dilated to about ``_TARGET_STROKE``."""
    working *= np.float32(1.0 / max(float(working.max()), 1e-6))  # a faint hairline dilates too
    best, best_error = working, math.inf
    for radius in (1, 2, 3):  # each radius px at 40 px adds about 1 px at 20 px
        padded = cv2.copyMakeBorder(working, *(radius,) * 4, cv2.BORDER_CONSTANT, value=0.0)
        thick = cv2.dilate(padded, _SQUARES[radius])
        error = abs(stroke_width(thick) / 2 - _TARGET_STROKE)
        if error < best_error:
            best, best_error = thick, error
    thickened: FloatArray = best
    return thickened


def stroke_width(digit: FloatArray) -> float:
    """Mean stroke width in pixels: ink area over half its outline's length (sum of |grad|)."""
    padded = cv2.copyMakeBorder(digit, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0.0)  # edges count
    grad_cols = cv2.Sobel(padded, cv2.CV_32F, 1, 0, ksize=1, scale=0.5)  # central differences
    grad_rows = cv2.Sobel(padded, cv2.CV_32F, 0, 1, ksize=1, scale=0.5)
    outline = float(cv2.magnitude(grad_cols, grad_rows).sum())
    return 2.0 * float(digit.sum()) / outline if outline > 0 else float("inf")


def fit_20px(digit: FloatArray) -> FloatArray:
    """Scale the cropped ink so its longer side is 20 px, aspect kept, its peak at 1.0."""
    small = _lanczos(digit, DIGIT_BOX)
    peak = float(small.max())
    if peak <= 0.0:
        raise no_digit()
    small *= np.float32(1.0 / peak)
    return small


def _lanczos(digit: FloatArray, box: int) -> FloatArray:
    """Scale so that the longer side is ``box`` px, aspect kept, values kept in [0, 1].

    Pillow's Lanczos, whose kernel widens with the reduction: anti-aliased as MNIST's digits
    were (OpenCV's Lanczos is an interpolator and aliases when it shrinks). Large crops are
    area-averaged to about twice the box first, which leaves the kernel few taps.
    """
    height, width = digit.shape
    scale = box / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))  # of the crop as cut
    shrink = max(height, width) // (2 * box)
    if shrink > 1:
        digit = cv2.resize(
            digit,
            (max(1, round(width / shrink)), max(1, round(height / shrink))),
            interpolation=cv2.INTER_AREA,
        )
        height, width = digit.shape
    source = Image.frombuffer("F", (width, height), np.ascontiguousarray(digit), "raw", "F", 0, 1)
    small = source.resize(size, Image.Resampling.LANCZOS)
    resized = np.frombuffer(small.tobytes(), dtype=np.float32).reshape(size[1], size[0]).copy()
    # Lanczos rings: zero the faint lobes that would not survive 8 bits, clip the overshoot.
    resized[resized < _RINGING] = 0.0
    cv2.threshold(resized, 1.0, 1.0, cv2.THRESH_TRUNC, dst=resized)
    return resized


def centre_by_mass(digit: FloatArray) -> FloatArray:
    """Place a (h, w) digit in a 28x28 field with its centre of mass at pixel (14, 14).

    The shift is rounded to whole pixels, as MNIST's was (so the centre of mass lands within
    half a pixel of the centre), and clamped so that no ink falls off the field.
    """
    height, width = digit.shape
    # Row and column sums, not cv2.moments: OpenCV takes an N x 2 array for a list of points.
    total = float(digit.sum())
    centre_row = float(digit.sum(axis=1) @ _AXIS[:height]) / total
    centre_col = float(digit.sum(axis=0) @ _AXIS[:width]) / total
    top = min(max(round(MNIST_CENTRE - centre_row), 0), MNIST_SIDE - height)
    left = min(max(round(MNIST_CENTRE - centre_col), 0), MNIST_SIDE - width)
    field = np.zeros((MNIST_SIDE, MNIST_SIDE), dtype=np.float32)
    field[top : top + height, left : left + width] = digit
    return field
