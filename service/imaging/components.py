"""Ink -> the digit's crop: which strokes form the digit, and which are specks or clutter.

Components of the ink are found on a coarse grid of cells (at most :data:`ANALYSIS_SIDE`
along the longer side), so that a digit's broken strokes a few pixels apart count as one
piece and the work does not grow with the picture. OpenCV labels them
(``connectedComponentsWithStats``: boxes and areas in one pass).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Final

import cv2
import numpy as np
from numpy.typing import NDArray

from service.imaging.clean import no_digit

FloatArray = NDArray[np.float32]

#: Components are found on a grid of at most this many cells along the longer side.
ANALYSIS_SIDE: Final = 128
#: A pixel belongs to the ink mask used for components at this normalised strength.
_MASK_LEVEL: Final = 0.25
#: Components under this fraction of the largest one's ink are specks.
_SPECK_FRACTION: Final = 0.03
#: Components within this fraction of the digit's size from it are part of the digit.
_JOIN_MARGIN: Final = 0.25
#: A component lying along this fraction of a picture side is the paper's or frame's edge.
_EDGE_CONTACT: Final = 0.5
#: The digit is looked for off the edges if the largest component there has at least this
#: fraction of the ink of the largest overall (a table around the paper can hold 50x the ink).
_INNER_FRACTION: Final = 0.005


@dataclass(frozen=True)
class Components:
    """The ink's 8-connected components on the coarse grid (component 0 is the background).

    Only the cells of the ink's bounding box are labelled (everything else is exactly 0);
    ``origin`` is where that box starts, in cells of the whole picture's grid.
    """

    labels: NDArray[np.uint16]  # (rows, cols) of the box: each cell's component
    mass: FloatArray  # (count,): each component's ink
    top: NDArray[np.int32]  # (count,): each component's box, in cells of the box, inclusive
    left: NDArray[np.int32]
    bottom: NDArray[np.int32]
    right: NDArray[np.int32]
    edge: NDArray[np.bool_]  # (count,): lies along a side of the picture
    factor: int  # pixels per cell along each side
    origin: tuple[int, int]  # (row, column) of the box's first cell in the picture's grid


def components(ink: FloatArray) -> Components:
    """Label the components of ``ink`` (bright on an exactly black background)."""
    height, width = ink.shape
    factor = max(1, math.ceil(max(height, width) / ANALYSIS_SIDE))
    grid_rows, grid_cols = -(-height // factor), -(-width // factor)  # the picture's grid
    strong = (ink > _MASK_LEVEL).view(np.uint8)  # 1 where the mask is set
    x, y, box_width, box_height = cv2.boundingRect(strong)
    if box_width == 0:
        raise no_digit()
    # The box in whole cells of the picture's grid, so that cells are the same as if the
    # whole picture were analysed.
    top, left = y // factor, x // factor
    rows, cols = -(-(y + box_height) // factor) - top, -(-(x + box_width) // factor) - left
    region = (
        slice(top * factor, (top + rows) * factor),
        slice(left * factor, (left + cols) * factor),
    )
    cell_ink, cell_strong = ink[region], strong[region]
    if factor > 1:
        pad_rows, pad_cols = rows * factor - cell_ink.shape[0], cols * factor - cell_ink.shape[1]
        if pad_rows or pad_cols:  # the picture's last cells are partial: pad them with 0
            cell_ink = cv2.copyMakeBorder(cell_ink, 0, pad_rows, 0, pad_cols, cv2.BORDER_CONSTANT)
            cell_strong = cv2.copyMakeBorder(
                cell_strong, 0, pad_rows, 0, pad_cols, cv2.BORDER_CONSTANT
            )
        cell_ink = cv2.resize(cell_ink, (cols, rows), interpolation=cv2.INTER_AREA)  # means
        # A cell is in the mask if any of its pixels is: the block maximum.
        cell_strong = cv2.dilate(cell_strong, _block(factor), anchor=(0, 0))[::factor, ::factor]
        cell_strong = np.ascontiguousarray(cell_strong)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(
        cell_strong, connectivity=8, ltype=cv2.CV_16U
    )
    mass = np.bincount(labels.ravel(), weights=cell_ink.ravel(), minlength=count)
    mass[0] = 0.0
    edge = np.zeros(count, dtype=bool)
    # Sides of the picture the box reaches, with the length a component must lie along.
    sides = (
        (labels[0], top == 0, grid_cols),
        (labels[-1], top + rows == grid_rows, grid_cols),
        (labels[:, 0], left == 0, grid_rows),
        (labels[:, -1], left + cols == grid_cols, grid_rows),
    )
    for side, reached, length in sides:
        if reached:
            edge |= np.bincount(side, minlength=count) >= _EDGE_CONTACT * length
    edge[0] = False
    box_left, box_top = stats[:, cv2.CC_STAT_LEFT], stats[:, cv2.CC_STAT_TOP]
    return Components(
        labels=labels,
        mass=mass.astype(np.float32),
        top=box_top,
        left=box_left,
        bottom=box_top + stats[:, cv2.CC_STAT_HEIGHT] - 1,
        right=box_left + stats[:, cv2.CC_STAT_WIDTH] - 1,
        edge=edge,
        factor=factor,
        origin=(top, left),
    )


@functools.lru_cache(maxsize=64)
def _block(factor: int) -> NDArray[np.uint8]:
    """A ``factor`` x ``factor`` square structuring element."""
    return np.ones((factor, factor), dtype=np.uint8)


def digit_components(found: Components) -> NDArray[np.bool_]:
    """Which components (index 0..count-1, 0 never) form the one digit.

    Specks (tiny next to the largest component) and components lying along a side of the
    picture (the edge of the paper, a table, a scanner shadow) are dropped; the digit is the
    largest remaining component plus whatever else lies close to it (broken strokes, dots).
    """
    mass, edge = found.mass, found.edge
    if mass.size <= 1:
        raise no_digit()
    # Specks are judged against the largest component off the edges, unless there is none
    # of note (then the digit itself lies along an edge: a tight crop).
    largest = float(mass.max())
    inner = float(np.where(edge, 0.0, mass).max())
    if inner >= _INNER_FRACTION * largest:
        candidate = ~edge & (mass >= _SPECK_FRACTION * inner)
    else:
        candidate = mass >= _SPECK_FRACTION * largest
    candidate[0] = False
    keep = np.zeros(mass.size, dtype=bool)
    keep[int(np.argmax(np.where(candidate, mass, -1.0)))] = True
    while True:  # grow the digit by the candidates close to it
        box_top, box_bottom = found.top[keep].min(), found.bottom[keep].max()
        box_left, box_right = found.left[keep].min(), found.right[keep].max()
        margin = _JOIN_MARGIN * max(box_bottom - box_top + 1, box_right - box_left + 1)
        near = (
            candidate
            & ~keep
            & (found.top <= box_bottom + margin)
            & (found.bottom >= box_top - margin)
            & (found.left <= box_right + margin)
            & (found.right >= box_left - margin)
        )
        if not near.any():
            return keep
        keep |= near


#: A component counts as a digit seen when it is at least this tall and this heavy, as
#: fractions of the tallest and the heaviest component's.
_SEEN_HEIGHT: Final = 0.5
_SEEN_MASS: Final = 0.15


def crop_to_ink(ink: FloatArray) -> FloatArray:
    """The digit's bounding box out of ``ink``, with specks and clutter inside it zeroed."""
    return crop_and_count(ink)[0]


def crop_and_count(ink: FloatArray) -> tuple[FloatArray, int]:
    """:func:`crop_to_ink`, and how many digit-sized groups of ink the picture holds: the
    components off the edges at least half as tall as the tallest and with a sixth or so of
    the heaviest one's ink (at least 1). A picture of a number still yields one digit, and
    says that it saw more."""
    found = components(ink)
    keep = digit_components(found)
    return _crop(ink, found, keep), max(1, _digits_seen(found))


def _digits_seen(found: Components) -> int:
    inner = ~found.edge
    inner[0] = False
    if not inner.any():
        return 1
    heights = found.bottom - found.top + 1
    seen = (
        inner
        & (heights >= _SEEN_HEIGHT * heights[inner].max())
        & (found.mass >= _SEEN_MASS * found.mass[inner].max())
    )
    return int(np.count_nonzero(seen))


def _crop(ink: FloatArray, found: Components, keep: NDArray[np.bool_]) -> FloatArray:
    factor, (origin_row, origin_col) = found.factor, found.origin
    top, bottom = int(found.top[keep].min()), int(found.bottom[keep].max()) + 1  # cells
    left, right = int(found.left[keep].min()), int(found.right[keep].max()) + 1
    region = ink[
        (origin_row + top) * factor : (origin_row + bottom) * factor,
        (origin_col + left) * factor : (origin_col + right) * factor,
    ].copy()
    cells = found.labels[top:bottom, left:right]
    drop = (cells > 0) & ~keep[cells]  # other components' cells inside the digit's box
    if drop.any():  # zeroed, so that they cannot leak into the digit
        spread = cv2.resize(
            drop.view(np.uint8),
            (drop.shape[1] * factor, drop.shape[0] * factor),
            interpolation=cv2.INTER_NEAREST,
        )
        region[spread[: region.shape[0], : region.shape[1]] > 0] = 0.0
    # The cells' box is up to factor-1 px loose; tighten it to the ink itself.
    x, y, width, height = cv2.boundingRect((region > 0.0).view(np.uint8))
    if width == 0:
        raise no_digit()
    return region[y : y + height, x : x + width]
