"""Seams: where a piece of ink that may be touching digits is cut.

A seam is a top-to-bottom path through a component's box that crosses the least ink, each
row's column at most one pixel from the row above's (dynamic programming over the rows: a
row's least costs are the previous row's three-wide minimum, an erosion, plus its own ink).
The cheapest seam anywhere is tried, and the cheapest near each place where the component
would divide into two, three or four digits of equal width: a touching pair's junction is
often not the component's cheapest cut (a 4's bar is thinner than where a 3 runs into it).
"""

from __future__ import annotations

from typing import Final

import cv2
import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float32]

#: Components wider than this many digit heights are cut at seams.
CUT_WIDTH: Final = 0.5
#: Seams start and end at least this fraction of the component's width from its sides ...
_SEAM_MARGIN: Final = 0.15
#: ... at least this many digit heights apart, and at most this many per component ...
_SEAM_SPACING: Final = 0.2
_MAX_SEAMS: Final = 4
#: ... each near a place where the component would divide into digits this wide (digit
#: heights), within this many digit heights of it.
_DIGIT_WIDTH: Final = 0.6
_SEAM_BAND: Final = 0.15
#: A seam's diagonal step costs this much ink (keeps seams straight where ink is absent).
_STEP_COST: Final = 0.05
#: A component narrower than this many digit heights is cut only where a seam crosses at most
#: this many pens of ink (a thin junction: a 1 touching its neighbour, two digits touching at
#: a point). Measured on numbers of training digits: dearer seams of such components never
#: made a right reading, and leaving them out saves a third of the candidates.
_NARROW: Final = 1.3
_NARROW_CROSSING: Final = 1.0
#: Row minima over a column and its two neighbours.
_ROW_NEIGHBOURS: Final = np.ones((1, 3), dtype=np.uint8)


def cut(
    ink: FloatArray,
    labels: NDArray[np.int32],
    group: int,
    box: tuple[int, int, int, int],
    digit_height: float,
    pen: float,
) -> list[tuple[NDArray[np.int32], float]]:
    """Up to ``_MAX_SEAMS`` cuts of a wide group, left to right: each a column per row of its
    box (``(h,)``) and the ink it crosses in pen widths.

    The seams tried: the cheapest anywhere in the group, and the cheapest near where the
    group would divide if it were two, three or four digits of equal width (a touching
    pair's junction is often not the group's cheapest cut: a 4's bar is thinner than the
    place where a 3 runs into it).
    """
    x, y, width, height = box
    if width <= CUT_WIDTH * digit_height or height < 2:
        return []
    own = labels[y : y + height, x : x + width] == group
    cost = np.where(own, ink[y : y + height, x : x + width], np.float32(0.0))  # (h, w)
    # Rows in pairs: half the dynamic program's steps, the ink crossed the same, the seam
    # still free to drift a column every two rows.
    if height % 2:
        cost = np.vstack((cost, np.zeros((1, width), dtype=np.float32)))
    cost = cost[0::2] + cost[1::2]  # (ceil(h / 2), w)
    margin = max(1, round(_SEAM_MARGIN * width))
    if width - 2 * margin < 1:
        return []
    band = max(2, round(_SEAM_BAND * digit_height))
    parts = min(_MAX_SEAMS + 1, max(2, round(width / (_DIGIT_WIDTH * digit_height))))
    targets = [round(width * i / k) for k in range(2, parts + 1) for i in range(1, k)]
    spacing = max(1, round(_SEAM_SPACING * digit_height))
    seams: list[tuple[NDArray[np.int32], float]] = []
    for target in [None, *targets]:  # each its own table: a band's seam stays in its band
        left, right = (
            (margin, width - margin)
            if target is None
            else (
                max(margin, target - band),
                min(width - margin, target + band + 1),
            )
        )
        if right - left < 1:
            continue
        table = _seam_table(np.ascontiguousarray(cost[:, left:right]))
        end = int(np.argmin(table[-1]))
        crossed = float(table[-1, end]) / pen
        if width < _NARROW * digit_height and crossed > _NARROW_CROSSING:
            if target is None:
                break  # the cheapest seam anywhere is too dear: so is every banded one
            continue  # a narrow piece is cut only at a thin junction (a 1 touching a digit)
        path = np.repeat(_backtrack(table, end), 2)[:height] + left  # (h,)
        if any(abs(int(path[-1]) - int(other[-1])) < spacing for other, _ in seams):
            continue
        seams.append((path, crossed))
        if len(seams) == _MAX_SEAMS:
            break
    return sorted(seams, key=lambda seam: int(seam[0].mean()))


def _seam_table(cost: FloatArray) -> FloatArray:
    """``(h, w)``: the least ink a top-to-bottom path ending at each pixel crosses, a column's
    step costing ``_STEP_COST``: per row, the previous row's 3-wide minimum (an erosion)."""
    table = np.empty_like(cost)
    table[0] = cost[0]
    for row in range(1, cost.shape[0]):
        above = table[row - 1 : row]  # (1, w)
        reach = cv2.erode(above, _ROW_NEIGHBOURS, borderType=cv2.BORDER_REPLICATE)
        np.minimum(above, reach + np.float32(_STEP_COST), out=table[row : row + 1])
        table[row] += cost[row]
    return table


def _backtrack(table: FloatArray, end: int) -> NDArray[np.int32]:
    """The seam's column in each row, from the bottom column ``end`` up: each row's cheapest
    of the (at most three) columns it may have come from."""
    rows, cols = table.shape
    path = np.empty(rows, dtype=np.int32)
    column = end
    for row in range(rows - 1, 0, -1):
        path[row] = column
        above = table[row - 1]
        options = [(float(above[column]), column)]  # staying costs no step
        options += [
            (float(above[c]) + _STEP_COST, c) for c in (column - 1, column + 1) if 0 <= c < cols
        ]
        column = min(options)[1]
    path[0] = column
    return path
