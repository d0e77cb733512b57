"""A number's strokes -> *atoms*: pieces of ink, left to right, of which every digit is a run
of one or more (at most :data:`service.imaging.reading.MAX_SPAN`).

The ink's components (OpenCV) are the first guess at the digits. Then:

- specks (a small fraction of a digit's ink) are dropped, and so are components lying along
  a side of the picture (the paper's or a table's edge);
- fragments (a 5's detached top bar, a broken stroke: shorter than ``_FRAGMENT`` of a digit's
  height) join the component they overlap most along x, when they overlap one;
- the ink is scaled so that a digit is :data:`DIGIT_SCALE` px tall, and one pen measured
  (and thickened if thin) for the whole number;
- a component wider than :data:`service.imaging.seams.CUT_WIDTH` digit heights may be two
  or more digits touching: it is cut along seams (:mod:`service.imaging.seams`), each piece
  an atom, each seam's cost (the ink it crosses, in pens) kept so that a reading through it
  pays for it.

Which runs of atoms are the digits is decided afterwards, with the model's help
(:mod:`service.imaging.reading`): a seam through a single wide digit, or a component that is
only half a digit, then costs the reading more than it gains.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import cv2
import numpy as np
from numpy.typing import NDArray

from service.imaging.clean import no_digit
from service.imaging.form_lines import stroke_mask
from service.imaging.layout import DIGIT_SCALE, stroke_width, thicken_at_digit_scale
from service.imaging.seams import cut

FloatArray = NDArray[np.float32]

#: Components with less ink than this fraction of the median digit-sized one's are specks.
_SPECK: Final = 0.04
#: Components at least this tall, as a fraction of the tallest, are digit-sized.
_DIGIT_SIZED: Final = 0.4
#: Components shorter than this fraction of the digit height are fragments of a digit.
_FRAGMENT: Final = 0.5
#: A component along a picture side over this fraction of it is the paper's edge.
_EDGE_CONTACT: Final = 0.5
#: How far (px) thickened strokes reach beyond the ink they grew from (the widest dilation).
_OWNER_REACH: Final = cv2.getStructuringElement(cv2.MORPH_RECT, (7, 7))


#: Atoms are found on the strokes scaled so that a digit is this tall (px): enough for seams
#: and layout (MNIST's digits are 20 px), and the same work whatever the picture's size.
#: Pictures are scaled to at most this many pixels, whatever the number's extent.
_MAX_SCALED_PIXELS: Final = 1_000_000


@dataclass(frozen=True)
class Atoms:
    """The atoms of a number, left to right, on the strokes scaled to :data:`DIGIT_SCALE`."""

    ink: FloatArray  # (h, w) the strokes, bright on exactly black, a digit ~DIGIT_SCALE tall
    labels: NDArray[np.int32]  # (h, w): atom index + 1 at each stroke pixel, 0 elsewhere
    boxes: NDArray[np.int32]  # (n, 4): x, y, width, height of each atom (a pixel loose)
    seam_cost: FloatArray  # (n,): ink (in pens) of the seam left of each atom; 0: a gap
    digit_height: float  # median height of the digit-sized components, pixels of ``ink``
    origin: tuple[int, int]  # (x, y) of ``ink``'s first pixel in the strokes given
    factor: float  # pixels of ``ink`` per pixel of the strokes given

    @property
    def count(self) -> int:
        return int(self.boxes.shape[0])

    def in_strokes(self, box: tuple[int, int, int, int]) -> tuple[float, float, float, float]:
        """A box of ``ink`` in pixels of the strokes given."""
        x, y, width, height = box
        return (
            x / self.factor + self.origin[0],
            y / self.factor + self.origin[1],
            width / self.factor,
            height / self.factor,
        )


class TooManyPieces(Exception):
    """More separate pieces of ink than a number of the allowed length could have."""

    def __init__(self, pieces: int) -> None:
        super().__init__(f"{pieces} separate pieces of ink")
        self.pieces = pieces


def find_atoms(ink: FloatArray, *, max_atoms: int) -> Atoms:
    """The atoms of ``ink`` (strokes bright on exactly black). Raises ``no_digit`` when there
    is no ink, and :class:`TooManyPieces` beyond ``max_atoms`` components of note."""
    mask = stroke_mask(ink)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(
        mask, connectivity=8, ltype=cv2.CV_32S
    )
    if count <= 1:
        raise no_digit()
    stats = stats[1:]
    area = stats[:, cv2.CC_STAT_AREA].astype(np.float32)
    heights = stats[:, cv2.CC_STAT_HEIGHT]
    keep = ~_along_an_edge(labels, count, ink.shape)
    if not keep.any():
        keep[:] = True  # the digits themselves lie along the edges: a tight crop
    tallest = heights[keep].max()
    sized = keep & (heights >= _DIGIT_SIZED * tallest)
    keep &= area >= _SPECK * float(np.median(area[sized]))
    if np.count_nonzero(keep) > max_atoms:
        raise TooManyPieces(int(np.count_nonzero(keep)))
    digit_height = float(np.median(heights[keep & sized]))
    groups = _join_fragments(stats, keep, digit_height)
    return _atoms(ink, labels, stats, groups, digit_height)


def _along_an_edge(
    labels: NDArray[np.int32], count: int, shape: tuple[int, ...]
) -> NDArray[np.bool_]:
    """Per component (1..count-1, as 0..count-2): whether it lies along a side of the picture."""
    height, width = shape
    edge = np.zeros(count, dtype=bool)
    for side, length in (
        (labels[0], width),
        (labels[-1], width),
        (labels[:, 0], height),
        (labels[:, -1], height),
    ):
        edge |= np.bincount(side, minlength=count) >= _EDGE_CONTACT * length
    return edge[1:]


def _join_fragments(
    stats: NDArray[np.int32], keep: NDArray[np.bool_], digit_height: float
) -> list[list[int]]:
    """Groups of component indices (0-based), each a candidate atom: fragments joined to
    the digit-sized component they overlap most along x."""
    left = stats[:, cv2.CC_STAT_LEFT]
    right = left + stats[:, cv2.CC_STAT_WIDTH]
    heights = stats[:, cv2.CC_STAT_HEIGHT]
    kept = np.flatnonzero(keep)
    whole = [int(i) for i in kept if heights[i] >= _FRAGMENT * digit_height]
    groups = {i: [i] for i in whole}
    for index in (int(i) for i in kept if heights[i] < _FRAGMENT * digit_height):
        if whole:
            overlaps = np.minimum(right[whole], right[index]) - np.maximum(left[whole], left[index])
            best = int(np.argmax(overlaps))
            if overlaps[best] > 0:
                groups[whole[best]].append(index)
                continue
        groups[index] = [index]  # alone: a reading may join it to a neighbour, or skip it
    return list(groups.values())


def _atoms(
    ink: FloatArray,
    labels: NDArray[np.int32],
    stats: NDArray[np.int32],
    groups: list[list[int]],
    digit_height: float,
) -> Atoms:
    """Scale the groups' ink so that a digit is :data:`DIGIT_SCALE` tall, number the groups
    left to right (by the centre of their box) as atoms, and cut the wide ones at seams."""
    boxes = [_union_box(stats, group) for group in groups]
    order = sorted(range(len(groups)), key=lambda g: boxes[g][0] + boxes[g][2] / 2)
    group_label = np.zeros(stats.shape[0] + 1, dtype=np.uint16)  # component label -> group
    for rank, g in enumerate(order):
        group_label[np.asarray(groups[g]) + 1] = rank + 1
    # The region of the kept ink, with a margin, scaled.
    margin = max(2, round(0.25 * digit_height))
    left, top, width, height = _union_box(stats, [c for group in groups for c in group])
    x0, y0 = max(0, left - margin), max(0, top - margin)
    x1 = min(ink.shape[1], left + width + margin)
    y1 = min(ink.shape[0], top + height + margin)
    factor = min(
        DIGIT_SCALE / digit_height, math.sqrt(_MAX_SCALED_PIXELS / ((x1 - x0) * (y1 - y0)))
    )
    size = (max(1, round((x1 - x0) * factor)), max(1, round((y1 - y0) * factor)))
    region_groups = group_label[labels[y0:y1, x0:x1]]  # (h, w) uint16
    region_ink = np.where(region_groups > 0, ink[y0:y1, x0:x1], np.float32(0.0))
    shrink = cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
    scaled = cv2.resize(region_ink, size, interpolation=shrink)
    scaled_groups = cv2.resize(region_groups, size, interpolation=cv2.INTER_NEAREST)
    thick = thicken_at_digit_scale(scaled)
    if thick is not scaled:  # padded by the dilation's radius: back to the same frame
        pad_y, pad_x = (thick.shape[0] - size[1]) // 2, (thick.shape[1] - size[0]) // 2
        scaled = np.ascontiguousarray(thick[pad_y : pad_y + size[1], pad_x : pad_x + size[0]])
        grown = cv2.dilate(scaled_groups, _OWNER_REACH)  # the thickened ink's owners
        scaled_groups = np.where(scaled_groups > 0, scaled_groups, grown)
    scaled_groups = np.where(scaled > 0, scaled_groups, 0).astype(np.int32)
    scaled_height = digit_height * factor
    pen = _pen_width(scaled)
    group_atom = np.zeros(len(groups) + 1, dtype=np.int32)
    pieces: list[tuple[int, int, int, int]] = []
    seam_costs: list[float] = []
    cuts: list[tuple[int, tuple[int, int, int, int], NDArray[np.int32]]] = []
    for rank, g in enumerate(order):
        box = _scaled_box(boxes[g], x0, y0, factor, size)
        first = len(pieces) + 1
        group_atom[rank + 1] = first
        seams = cut(scaled, scaled_groups, rank + 1, box, scaled_height, pen)
        pieces.append(box)
        seam_costs.append(0.0)
        if seams:
            cuts.append((first, box, np.stack([path for path, _ in seams])))
            for _, cost in seams:
                pieces.append(box)
                seam_costs.append(cost)
    atom_labels = group_atom[scaled_groups]  # (h, w)
    atom_boxes = np.asarray(pieces, dtype=np.int32).reshape(-1, 4)
    for first, (x, y, box_width, box_height), paths in cuts:
        region = atom_labels[y : y + box_height, x : x + box_width]
        columns = np.arange(box_width, dtype=np.int32)[None, :]  # (1, w)
        # A pixel's piece: how many seams pass left of (or through) its column.
        passed = (columns[None, :, :] >= paths[:, :, None]).sum(axis=0, dtype=np.int32)
        own = region == first
        region[own] = first + passed[own]
        for piece in range(paths.shape[0] + 1):
            px, py, pw, ph = cv2.boundingRect((region == first + piece).view(np.uint8))
            atom_boxes[first - 1 + piece] = (x + px, y + py, pw, ph)
    return Atoms(
        ink=scaled,
        labels=atom_labels,
        boxes=atom_boxes,
        seam_cost=np.asarray(seam_costs, dtype=np.float32),
        digit_height=scaled_height,
        origin=(x0, y0),
        factor=factor,
    )


def _scaled_box(
    box: tuple[int, int, int, int], x0: int, y0: int, factor: float, size: tuple[int, int]
) -> tuple[int, int, int, int]:
    """A box of the strokes given -> the same in the scaled picture, a pixel loose."""
    x, y, width, height = box
    left = max(0, math.floor((x - x0) * factor) - 1)
    top = max(0, math.floor((y - y0) * factor) - 1)
    right = min(size[0], math.ceil((x - x0 + width) * factor) + 1)
    bottom = min(size[1], math.ceil((y - y0 + height) * factor) + 1)
    return left, top, right - left, bottom - top


def _union_box(stats: NDArray[np.int32], group: list[int]) -> tuple[int, int, int, int]:
    left = int(stats[group, cv2.CC_STAT_LEFT].min())
    top = int(stats[group, cv2.CC_STAT_TOP].min())
    right = int((stats[group, cv2.CC_STAT_LEFT] + stats[group, cv2.CC_STAT_WIDTH]).max())
    bottom = int((stats[group, cv2.CC_STAT_TOP] + stats[group, cv2.CC_STAT_HEIGHT]).max())
    return left, top, right - left, bottom - top


def _pen_width(ink: FloatArray) -> float:
    """The strokes' mean width in pixels (at least 1)."""
    width = stroke_width(ink)
    return max(1.0, width) if math.isfinite(width) else 1.0
