"""Printed form lines out of a number's strokes: a baseline under the digits, a box around
them, a comb with one cell per digit.

Lines are told from digits by shape, on the strokes' mask, component by component
(OpenCV's ``connectedComponentsWithStats``):

- a *frame* (a box or a comb) is a component whose bounding box holds another digit-sized
  component, with long horizontal runs along its top and its bottom: its straight runs (a
  horizontal one at least half its width, a vertical one at least ``_FRAME_SIDE`` of its
  height) are erased, which leaves whatever digit touched it;
- a *rule* (a baseline, an underline) is a component much wider than a digit is tall: its
  horizontal runs of at least ``_RULE_LENGTH`` digit heights and ``_RULE_SPAN`` of its width
  are erased, which leaves the digits that sit on it.

Both are looked for straightened too (within ``_MAX_SKEW`` degrees): a form photographed a
little askew.

The runs are found by morphological openings with line-shaped kernels, on the component's
box only, so the work is bounded by the picture's size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Final

import cv2
import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float32]
Mask = NDArray[np.uint8]

#: A pixel is a stroke's at this normalised strength (as in :mod:`service.imaging.components`).
MASK_LEVEL: Final = 0.25
#: A frame's vertical runs erased span at least this fraction of its height (a cell's divider
#: spans all of it; a digit inside a cell, with its margins, less).
_FRAME_SIDE: Final = 0.8
#: A frame's horizontal runs erased span at least this fraction of its width, and lie
#: within this fraction of its height from its top and its bottom.
_FRAME_TOP: Final = 0.5
_FRAME_EDGE: Final = 0.15
#: A rule is a component at least this many digit heights wide; its runs this long are erased.
_RULE_WIDTH: Final = 1.6
_RULE_LENGTH: Final = 1.5
#: ... and at least this fraction of the component's width: a baseline spans the digits that
#: stand on it, while no stroke of touching digits spans their width.
_RULE_SPAN: Final = 0.8
#: Components at least this tall, as a fraction of the tallest, count as digits when the
#: digit height is estimated.
_DIGIT_SIZED: Final = 0.4
#: Lines are looked for at these angles (degrees) as well as level: a form photographed
#: a little askew.
_MAX_SKEW: Final = 4.0
_SKEWS: Final = [a for a in np.arange(-_MAX_SKEW, _MAX_SKEW + 0.01, 0.5) if a != 0.0]
#: Erased runs are widened by this many pixels, for their anti-aliased edges.
_EDGE: Final = cv2.getStructuringElement(cv2.MORPH_RECT, (3, 3))


def stroke_mask(ink: FloatArray) -> Mask:
    """1 where ``ink`` is a stroke's, else 0."""
    return (ink > MASK_LEVEL).view(np.uint8)


def remove_form_lines(ink: FloatArray) -> FloatArray:
    """``ink`` (bright on exactly black) with frames' and rules' straight runs zeroed; the
    same array when there are none."""
    mask = stroke_mask(ink)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if count <= 1:
        return ink
    lefts, tops = stats[1:, cv2.CC_STAT_LEFT], stats[1:, cv2.CC_STAT_TOP]
    widths, heights = stats[1:, cv2.CC_STAT_WIDTH], stats[1:, cv2.CC_STAT_HEIGHT]
    digit_height = _digit_height(widths, heights)
    erase = np.zeros_like(mask)
    for index in range(count - 1):
        x, y, width, height = (
            int(v) for v in (lefts[index], tops[index], widths[index], heights[index])
        )
        rule = width >= _RULE_WIDTH * digit_height and height < width
        # A frame is taller than the digits it holds (a cheap test first: specks are many).
        frame = height > digit_height and _holds_another(
            index, lefts, tops, widths, heights, digit_height
        )
        if not (frame or rule):
            continue  # a digit: the common case, no opening needed
        box = (slice(y, y + height), slice(x, x + width))
        own = (labels[box] == index + 1).view(np.uint8)
        # Level first; lines photographed askew are found straightened, erased where they lie.
        for upright, back in _views(own):
            runs = _line_runs(upright, frame=frame, rule=rule, digit_height=digit_height)
            if runs is not None:
                erase[box] |= back(runs) & own
                break
    if not erase.any():
        return ink
    erase = cv2.dilate(erase, _EDGE)
    cleaned = ink.copy()
    cleaned[erase > 0] = 0.0
    return cleaned


def _digit_height(widths: NDArray[np.int32], heights: NDArray[np.int32]) -> float:
    """The median height of the digit-sized components that are not line-shaped."""
    tall = heights >= _DIGIT_SIZED * heights.max()
    digit_like = tall & (widths < 3 * heights)
    chosen = heights[digit_like] if digit_like.any() else heights[tall]
    return float(np.median(chosen))


def _holds_another(
    index: int,
    lefts: NDArray[np.int32],
    tops: NDArray[np.int32],
    widths: NDArray[np.int32],
    heights: NDArray[np.int32],
    digit_height: float,
) -> bool:
    """Whether component ``index``'s box holds a digit-sized component's box: a frame."""
    left, top = lefts[index], tops[index]
    right, bottom = left + widths[index], top + heights[index]
    inside = (
        (lefts > left)
        & (tops > top)
        & (lefts + widths < right)
        & (tops + heights < bottom)
        & (heights >= 0.5 * digit_height)
    )
    return bool(inside.any())


def _line_runs(upright: Mask, *, frame: bool, rule: bool, digit_height: float) -> Mask | None:
    """A frame's or rule's straight runs in ``upright`` (the component, level), or ``None``
    when it holds no such lines at this angle."""
    _, _, width, height = cv2.boundingRect(upright)
    across = _runs(upright, max(3, round(_FRAME_TOP * width)), horizontal=True)
    if frame and _closed(across[np.any(upright, axis=1)]):
        return across | _runs(upright, max(3, round(_FRAME_SIDE * height)), horizontal=False)
    if rule:
        length = max(round(_RULE_LENGTH * digit_height), round(_RULE_SPAN * width))
        runs = _runs(upright, length, horizontal=True)
        if runs.any():
            return runs
    return None


def _views(own: Mask) -> Iterator[tuple[Mask, Callable[[Mask], Mask]]]:
    """``own`` as it is, then (only if asked for) straightened, each with the function that
    takes a mask of the view back to ``own``'s frame."""
    yield own, lambda mask: mask
    upright, back = _straightened(own)
    if upright is not own:
        yield upright, back


def _straightened(own: Mask) -> tuple[Mask, Callable[[Mask], Mask]]:
    """``own`` rotated by the angle (within ``_MAX_SKEW`` degrees) that lines its longest
    straight run up with the rows, and the function that takes a mask of the rotated picture
    back to ``own``'s frame. Unrotated (and the identity) when it is already level."""
    height, width = own.shape
    best, best_angle = int(own.sum(axis=1).max()), 0.0
    for angle in _SKEWS:
        rotated, _ = _rotation(own, angle)
        score = int(rotated.sum(axis=1).max())
        if score > best:
            best, best_angle = score, float(angle)
    if best_angle == 0.0:
        return own, lambda mask: mask
    rotated, matrix = _rotation(own, best_angle)
    inverse = cv2.invertAffineTransform(matrix)

    def back(mask: Mask) -> Mask:
        restored: Mask = cv2.warpAffine(mask, inverse, (width, height), flags=cv2.INTER_NEAREST)
        return restored

    return rotated, back


def _rotation(own: Mask, angle: float) -> tuple[Mask, NDArray[np.float64]]:
    """``own`` rotated by ``angle`` degrees about its centre on a canvas that holds all of
    it (nearest neighbour: a mask stays a mask), and the affine matrix used."""
    height, width = own.shape
    radians = np.deg2rad(angle)
    cos, sin = abs(np.cos(radians)), abs(np.sin(radians))
    size = (int(np.ceil(width * cos + height * sin)), int(np.ceil(width * sin + height * cos)))
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), angle, 1.0)
    matrix[0, 2] += (size[0] - width) / 2
    matrix[1, 2] += (size[1] - height) / 2
    rotated: Mask = cv2.warpAffine(own, matrix, size, flags=cv2.INTER_NEAREST)
    return rotated, matrix


def _closed(across: Mask) -> bool:
    """Whether a component's long horizontal runs lie along both its top and its bottom, as
    a box's do (a baseline with a digit standing on it has them at the bottom alone)."""
    rows = np.flatnonzero(across.any(axis=1))
    if rows.size == 0:
        return False
    band = max(1, round(_FRAME_EDGE * across.shape[0]))
    return bool(rows[0] < band and rows[-1] >= across.shape[0] - band)


def _runs(own: Mask, length: int, *, horizontal: bool) -> Mask:
    """The pixels of ``own`` on straight runs at least ``length`` long."""
    if length > (own.shape[1] if horizontal else own.shape[0]):
        return np.zeros_like(own)
    shape = (length, 1) if horizontal else (1, length)  # OpenCV sizes are (width, height)
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, shape)
    opened: Mask = cv2.morphologyEx(own, cv2.MORPH_OPEN, kernel)
    return opened
