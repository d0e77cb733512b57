"""The digits of :mod:`benchmarks.numbers`: MNIST's own grey strokes, upscaled, one pen a number.

Each MNIST digit (its scanning dust dropped) is scaled to the number's height with a smooth
(bicubic) interpolation, turned and, where a comb's cell asks, narrowed, in one warp; its ink is
then the upscaled grey above one half, anti-aliased on a finer grid. The writer's pen is given
by growing or shrinking that ink by a signed-distance offset (a grey-level dilation or erosion)
that moves the digit's stroke width (ink area over half its outline) part of the way toward the
pen's: the strokes keep MNIST's shapes, blots and filled loops, and one number looks written
with one pen. No skeleton is redrawn: a redraw is no handwriting.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import cv2
import numpy as np
from numpy.typing import NDArray

Coverage = NDArray[np.float32]  # (h, w) ink coverage in [0, 1]
#: The upscaled grey above this is the digit's ink, before the pen's offset.
_EDGE: Final = 0.5
#: The outline's rounding (a Gaussian's sigma), MNIST pixels.
_SMOOTHING: Final = 0.4
#: How far each digit's stroke width moves toward the number's pen (0: MNIST's, 1: the pen's).
PEN_PULL: Final = 0.6
#: The most the pen may thin a stroke, as a share of its width (erosion breaks thin strokes).
_MOST_THINNING: Final = 0.3


@dataclass(frozen=True)
class Shape:
    """One MNIST digit, dust dropped, as grey ink in [0, 1] on black with a 2 px border."""

    grey: NDArray[np.float32]
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 of the ink (grey > _EDGE), px edges
    stroke: float  # its stroke width, px at 28x28

    @property
    def aspect(self) -> float:
        return (self.box[2] - self.box[0]) / (self.box[3] - self.box[1])


def stroke_width(ink: NDArray[np.float32]) -> float:
    """Mean stroke width in px: ink area over half its outline's length (as
    ``service.imaging.layout.stroke_width``)."""
    padded = cv2.copyMakeBorder(ink, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0.0)
    cols = cv2.Sobel(padded, cv2.CV_32F, 1, 0, ksize=1, scale=0.5)
    rows = cv2.Sobel(padded, cv2.CV_32F, 0, 1, ksize=1, scale=0.5)
    outline = float(cv2.magnitude(cols, rows).sum())
    return 2.0 * float(ink.sum()) / outline if outline > 0 else 0.0


def shape_of(digit: NDArray[np.uint8]) -> Shape:
    """The MNIST digit's grey, without specks (MNIST's scanning dust: small and short)."""
    grey = np.asarray(digit, np.float32) / np.float32(255)
    _, parts, stats, _ = cv2.connectedComponentsWithStats((digit > 40).astype(np.uint8), None, 8)
    areas, extents = stats[1:, cv2.CC_STAT_AREA], stats[1:, [cv2.CC_STAT_WIDTH, cv2.CC_STAT_HEIGHT]]
    tall = np.ptp(np.flatnonzero((digit > 40).any(axis=1))) + 1
    strokes = (areas >= 0.25 * areas.max()) | (extents.max(axis=1) >= 0.25 * tall)
    kept = cv2.dilate(np.isin(parts, 1 + np.flatnonzero(strokes)).astype(np.uint8), np.ones((3, 3)))
    grey = np.pad(grey * kept, 2).astype(np.float32)
    by_4 = np.array([[4.0, 0, 1.5], [0, 4.0, 1.5]])  # pixel centres p -> 4 p + 1.5
    fine = _upscaled(grey, by_4, (grey.shape[1] * 4, grey.shape[0] * 4)) > _EDGE
    rows, cols = np.flatnonzero(fine.any(axis=1)), np.flatnonzero(fine.any(axis=0))
    box = (cols[0] / 4, rows[0] / 4, (cols[-1] + 1) / 4, (rows[-1] + 1) / 4)
    return Shape(grey, box, stroke_width(fine.astype(np.float32)) / 4)


def _upscaled(
    grey: NDArray[np.float32], affine: NDArray[np.float64], size: tuple[int, int]
) -> NDArray[np.float32]:
    """``grey`` warped by ``affine`` (source pixel centres -> target pixel centres), bicubic."""
    warped = cv2.warpAffine(grey, affine, size, flags=cv2.INTER_CUBIC, borderValue=0.0)
    return np.asarray(warped, np.float32)


def render(shape: Shape, height: float, pen: float, angle: float, squeeze: float = 1.0) -> Coverage:
    """The digit ``height`` px tall, turned by ``angle`` degrees, its width times ``squeeze``,
    its strokes moved toward ``pen`` px wide; anti-aliased, cropped to its ink."""
    x0, y0, x1, y1 = shape.box
    scale = height / (y1 - y0)
    stroke = shape.stroke * scale
    wanted = stroke + PEN_PULL * (pen - stroke)
    offset = max(wanted - stroke, -_MOST_THINNING * stroke) / 2  # px each side
    turn = np.radians(angle)
    rotation = np.array([[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]])
    linear = rotation @ np.diag([squeeze, 1.0]) * scale
    centre = np.array([(x0 + x1) / 2, (y0 + y1) / 2]) - 0.5  # the box's centre, pixel coordinates
    corners = np.array([[x0, y0], [x1, y0], [x0, y1], [x1, y1]]) - 0.5 - centre
    reach = np.abs(corners @ linear.T).max(axis=0) + max(offset, 0) + 4
    ss = 4 if height < 100 else 2
    size = np.ceil(2 * reach).astype(int)
    # source pixel centres p -> fine pixel centres: ss * (linear (p - centre) + reach) - 0.5
    to_fine = np.hstack([ss * linear, (ss * (reach - linear @ centre) - 0.5)[:, None]])
    grey = _upscaled(shape.grey, to_fine, (int(size[0] * ss), int(size[1] * ss)))
    # MNIST's pixel grid shows in the outline of a large digit: rounded off, as a pen would.
    smooth = _SMOOTHING * scale * ss
    if smooth > 1.0:
        grey = cv2.GaussianBlur((grey > _EDGE).astype(np.float32), (0, 0), smooth)
    fine = np.asarray(grey > _EDGE)
    outside = cv2.distanceTransform((~fine).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    inside = cv2.distanceTransform(fine.astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    signed = np.where(fine, 0.5 - inside, outside - 0.5)  # > 0 outside the ink, fine px
    ink = np.clip(offset * ss + 0.5 - signed, 0.0, 1.0).astype(np.float32)
    coverage = cv2.resize(ink, (int(size[0]), int(size[1])), interpolation=cv2.INTER_AREA)
    ink_rows = np.flatnonzero(coverage.max(axis=1) > 0.02)
    ink_cols = np.flatnonzero(coverage.max(axis=0) > 0.02)
    return np.ascontiguousarray(
        coverage[ink_rows[0] : ink_rows[-1] + 1, ink_cols[0] : ink_cols[-1] + 1]
    )


def pen_width(rng: np.random.Generator, height: float) -> float:
    """A writer's pen for digits ``height`` px tall."""
    return max(2.0, height * rng.uniform(0.07, 0.12))


def glyphs(
    rng: np.random.Generator,
    shapes: list[Shape],
    height: float,
    pen: float,
    fit: tuple[int, int] | None = None,
) -> tuple[list[Coverage], list[float]]:
    """Each digit drawn by one hand (height ±6 %, rotation ±4°; where it must ``fit`` (width,
    height), narrower (to 70 %), then smaller), and its baseline's drop (±4 % of ``height``)."""
    drawn = []
    for shape in shapes:
        size, angle = height * rng.uniform(0.94, 1.06), rng.uniform(-4.0, 4.0)
        coverage = render(shape, size, pen, angle)
        squeeze = 1.0
        while fit is not None and (coverage.shape[1] > fit[0] or coverage.shape[0] > fit[1]):
            narrower = max(0.7, min(1.0, squeeze * (fit[0] - 1) / coverage.shape[1]))
            size *= (
                min(
                    1.0,
                    fit[0] * squeeze / (narrower * coverage.shape[1]),
                    fit[1] / coverage.shape[0],
                )
                * 0.98
            )
            squeeze = narrower
            coverage = render(shape, size, pen, angle, squeeze)
        drawn.append(coverage)
    return drawn, list(rng.uniform(-0.04, 0.04, len(shapes)) * height)
