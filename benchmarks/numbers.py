"""Handwritten numbers (1-10 digits) made from MNIST digits, deterministically from a seed.

One writer per number: every digit is re-stroked with the same pen (MNIST's strokes thinned
to their skeleton, then drawn again with one anti-aliased pen width; blots and filled loops
kept) at one height ``H`` (40-90 px) with small jitter (height ±6 %, baseline ±4 % of ``H``,
rotation ±4°). Kinds:

- ``spaced``  gaps of 0.15-0.5 H; a clean canvas-like export (RGBA, transparent, coloured
  pen; or dark on white);
- ``tight``   each digit moved as close as it goes while its ink stays 1-3 px from the ink
  before it (the boxes overlap, the ink does not touch);
- ``touching`` 2-10 digits, exactly one adjacent pair pushed 1-4 px into each other (the inks
  overlap), the other pairs tight or spaced;
- ``form_baseline`` / ``form_box`` / ``form_comb``  dark ink on white (PNG) with a printed
  baseline under the digits, a rectangle around them, or a comb: one cell per digit;
- ``photo``   a phone photo of the number on paper: 640x480 or 800x600 JPEG q 75-92, uneven
  light, noise, slight blur, rotated ±3°, 40-80 % of the width (short numbers: as wide as
  the height allows).

``make(kind, seed, source)`` draws the length and the digits (MNIST ``test`` or ``train``)
from a generator seeded with (kind, seed, source): the reader is tuned on numbers of train
digits and measured on numbers of test digits. ``python -m benchmarks.numbers DIR`` writes a
sample sheet per kind.
"""

from __future__ import annotations

import functools
import io
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

import cv2
import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw

from benchmarks.image_kinds import (
    _PEN_COLOURS,
    _PHOTO_LIGHT,
    Digit,
    _encode,
    _photographed,
    _read_idx,
    default_data_dir,
    load_mnist_test,
)

Source = Literal["test", "train"]
Coverage = NDArray[np.float32]  # (h, w) ink coverage in [0, 1]
Mask = NDArray[np.bool_]
Box = tuple[int, int, int, int]  # x, y, w, h
#: Coverage above this is ink: for the boxes, the masks and the distances between digits.
INK_LEVEL: Final = 0.25
_WORK_HEIGHT: Final = 112  # the height at which MNIST strokes are thinned to skeletons


@dataclass(frozen=True)
class NumberSample:
    """One number as a client sends it, and where each digit's ink is in the image."""

    body: bytes  # PNG or JPEG
    label: str
    kind: str
    boxes: list[Box]  # each digit's ink box (x, y, w, h), in the image's pixels, left to right
    masks: list[Mask] = field(default_factory=list, compare=False, repr=False)  # ink in box


@dataclass(frozen=True)
class _Skeleton:
    points: NDArray[np.float64]  # (P, 2) x, y of the thinned stroke at _WORK_HEIGHT
    segments: NDArray[np.intp]  # (S, 2) indices of 8-adjacent points
    shape: NDArray[np.uint8]  # the ink it was thinned from, 0 or 255
    half_width: float  # the ink's median half stroke width, px at _WORK_HEIGHT
    blotted: bool  # whether some of the ink is deeper inside than two half strokes

    @property
    def aspect(self) -> float:
        extent = np.ptp(self.points, axis=0) + 1.0
        return float(extent[0] / extent[1])


@dataclass(frozen=True)
class _Glyph:
    coverage: Coverage
    x: int
    y: int

    @property
    def mask(self) -> Mask:
        return np.asarray(self.coverage > INK_LEVEL)


Maker = Callable[[np.random.Generator, list[_Skeleton], str], NumberSample]


def load_mnist_train(data_dir: Path) -> tuple[Digit, NDArray[np.uint8]]:
    """MNIST training images ``(60000, 28, 28)`` uint8 and labels from the IDX files."""
    images = _read_idx(data_dir / "train-images-idx3-ubyte.gz")
    return images, _read_idx(data_dir / "train-labels-idx1-ubyte.gz")


@functools.cache
def _mnist(source: Source, data_dir: Path) -> tuple[Digit, NDArray[np.uint8]]:
    return load_mnist_test(data_dir) if source == "test" else load_mnist_train(data_dir)


def make(
    kind: str, seed: int, source: Source = "test", data_dir: Path | None = None
) -> NumberSample:
    """The number of ``kind`` for ``seed``, made of MNIST ``source`` digits."""
    images, labels = _mnist(source, data_dir or default_data_dir())
    rng = np.random.default_rng([list(KINDS).index(kind), seed, ("test", "train").index(source)])
    while True:  # a layout that cannot be made (rare) draws again, from the same generator
        count = int(rng.integers(2 if kind == "touching" else 1, 11))
        chosen = rng.integers(0, len(images), count)
        label = "".join(str(int(labels[i])) for i in chosen)
        try:
            return KINDS[kind](rng, [_skeleton(images[i]) for i in chosen], label)
        except _NoLayout:
            continue


class _NoLayout(Exception):
    """No pair of these digits could be pushed into touching without touching a third."""


def _zhang_suen_table(step: int) -> NDArray[np.bool_]:
    """Whether Zhang-Suen's sub-iteration ``step`` removes a pixel whose neighbours P2..P9
    (clockwise from above) are the bits 0..7 of the index."""
    table = np.zeros(256, dtype=bool)
    for code in range(256):
        p = [(code >> k) & 1 for k in range(8)]  # P2..P9
        turns = sum(p[k] == 0 and p[(k + 1) % 8] == 1 for k in range(8))
        far = (
            (p[0] * p[2] * p[4], p[2] * p[4] * p[6])
            if step == 0
            else (p[0] * p[2] * p[6], p[0] * p[4] * p[6])
        )
        table[code] = 2 <= sum(p) <= 6 and turns == 1 and far == (0, 0)
    return table


_ZHANG_SUEN: Final = (_zhang_suen_table(0), _zhang_suen_table(1))


def _thin(mask: Mask) -> Mask:
    """Zhang-Suen thinning: the one-pixel skeleton of ``mask``."""
    img = np.pad(mask, 1).astype(np.uint8)
    changed = True
    while changed:
        changed = False
        for table in _ZHANG_SUEN:
            p = img
            ring = [p[:-2, 1:-1], p[:-2, 2:], p[1:-1, 2:], p[2:, 2:]]
            ring += [p[2:, 1:-1], p[2:, :-2], p[1:-1, :-2], p[:-2, :-2]]  # P2..P9 clockwise
            code = np.zeros(ring[0].shape, dtype=np.uint8)
            for bit, neighbour in enumerate(ring):
                code |= neighbour << bit
            drop = (p[1:-1, 1:-1] == 1) & table[code]
            if drop.any():
                img[1:-1, 1:-1][drop] = 0
                changed = True
    return img[1:-1, 1:-1].astype(bool)


def _skeleton(digit: Digit) -> _Skeleton:
    """The MNIST digit's ink box, upscaled to _WORK_HEIGHT, thresholded and thinned."""
    rows, cols = np.flatnonzero((digit > 40).any(axis=1)), np.flatnonzero((digit > 40).any(axis=0))
    crop = np.pad(digit[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1], 1)
    scale = _WORK_HEIGHT / crop.shape[0]
    size = (max(3, round(crop.shape[1] * scale)), _WORK_HEIGHT)
    ink = (cv2.resize(crop, size, interpolation=cv2.INTER_CUBIC) > 70).astype(np.uint8)
    _, parts, stats, _ = cv2.connectedComponentsWithStats(ink, connectivity=8)
    # Specks (MNIST's scanning dust: small and short) are not strokes.
    areas, extents = stats[1:, cv2.CC_STAT_AREA], stats[1:, [cv2.CC_STAT_WIDTH, cv2.CC_STAT_HEIGHT]]
    strokes = (areas >= 0.25 * areas.max()) | (extents.max(axis=1) >= 0.25 * _WORK_HEIGHT)
    ink = np.isin(parts, 1 + np.flatnonzero(strokes))
    skeleton = _thin(ink)
    ys, xs = np.nonzero(skeleton)
    inside = cv2.distanceTransform(ink.astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    index = np.full(skeleton.shape, -1, dtype=np.intp)
    index[ys, xs] = np.arange(len(ys))
    pairs = []
    for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):
        ny, nx = ys + dy, xs + dx
        ok = (ny < skeleton.shape[0]) & (nx >= 0) & (nx < skeleton.shape[1])
        other = np.full(len(ys), -1, dtype=np.intp)
        other[ok] = index[ny[ok], nx[ok]]
        keep = other >= 0
        pairs.append(np.stack([np.flatnonzero(keep), other[keep]], axis=1))
    points = np.stack([xs, ys], axis=1).astype(np.float64)
    shape = ink.astype(np.uint8) * 255
    half_width = float(np.median(inside[ys, xs])) - 0.5
    blotted = bool(inside.max() - 0.5 >= 2 * half_width)
    return _Skeleton(points, np.concatenate(pairs), shape, half_width, blotted)


def _render(
    skeleton: _Skeleton, height: float, pen: float, angle: float, squeeze: float = 1.0
) -> Coverage:
    """The skeleton drawn with a round pen ``pen`` px wide, its ink ``height`` px tall, turned
    by ``angle`` degrees, its width times ``squeeze``; anti-aliased (supersampled), cropped to
    its ink. Where MNIST's ink is wider than its usual stroke (a blot, a filled loop) it stays
    so, less the difference between its stroke and the pen: a thinned blot is no digit."""
    low, high = skeleton.points.min(axis=0), skeleton.points.max(axis=0)
    scale = max(height - pen, 1.0) / max(high[1] - low[1], 1.0)
    turn = np.radians(angle)
    rotation = np.array([[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]])
    linear = np.diag([squeeze, 1.0]) @ rotation * scale
    xy = (skeleton.points - (low + high) / 2) @ linear.T
    margin = max(pen / 2, 2 * skeleton.half_width * scale * skeleton.blotted) + 3
    shift = margin - xy.min(axis=0)
    xy += shift
    width, rows = (np.ceil(xy.max(axis=0) + margin + 1)).astype(int)
    ss = 4 if height < 100 else 2
    a, b = xy[skeleton.segments[:, 0]], xy[skeleton.segments[:, 1]]
    steps = np.linspace(0.0, 1.0, int(np.ceil(scale * 1.5 * ss)) + 2)[None, :, None]
    samples = np.concatenate([(a[:, None] + steps * (b - a)[:, None]).reshape(-1, 2), xy])
    grid = np.full((rows * ss, width * ss), 255, dtype=np.uint8)
    cells = np.floor(samples * ss).astype(np.intp)
    grid[cells[:, 1], cells[:, 0]] = 0
    inked = pen * ss / 2 - cv2.distanceTransform(grid, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    if skeleton.blotted:
        # MNIST's ink on the same grid: pixel centres p -> ss * (linear (p - centre) + shift).
        to_grid = np.hstack(
            [ss * linear, (ss * (shift - linear @ ((low + high) / 2)) - 0.5)[:, None]]
        )
        shape = cv2.warpAffine(skeleton.shape, to_grid, grid.shape[::-1], flags=cv2.INTER_LINEAR)
        inked = np.maximum(inked, _blots(shape > 127, skeleton.half_width * scale * ss, pen * ss))
    fine = np.clip(inked + 0.5, 0.0, 1.0).astype(np.float32)
    coverage = cv2.resize(fine, (width, rows), interpolation=cv2.INTER_AREA)
    ink_rows, ink_cols = (
        np.flatnonzero(coverage.max(axis=1) > 0.02),
        np.flatnonzero(coverage.max(axis=0) > 0.02),
    )
    return np.ascontiguousarray(
        coverage[ink_rows[0] : ink_rows[-1] + 1, ink_cols[0] : ink_cols[-1] + 1]
    )


def _blots(ink: Mask, half_width: float, pen: float) -> NDArray[np.float32]:
    """Signed distance (> 0 inside) to ``ink``'s blots: the ink deeper inside than two of its
    usual half strokes, grown back to a pen's half width past a usual stroke's middle (an
    opening, less the stroke's excess over the pen)."""
    inside = cv2.distanceTransform(ink.astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    shallow = (inside < 2 * half_width).astype(np.uint8)
    to_blot = cv2.distanceTransform(shallow, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return np.asarray(half_width + pen / 2 - to_blot, dtype=np.float32)


def _pen(rng: np.random.Generator, height: float) -> float:
    return max(2.0, height * rng.uniform(0.07, 0.12))


def _glyphs(
    rng: np.random.Generator,
    skeletons: list[_Skeleton],
    height: float,
    pen: float,
    fit: tuple[int, int] | None = None,
) -> tuple[list[Coverage], list[float]]:
    """Each digit drawn by one hand (height ±6 %, rotation ±4°; where it must ``fit`` (width,
    height), narrower (to 70 %), then smaller), and its baseline's drop (±4 % of ``height``)."""
    drawn = []
    for skeleton in skeletons:
        size, angle = height * rng.uniform(0.94, 1.06), rng.uniform(-4.0, 4.0)
        coverage = _render(skeleton, size, pen, angle)
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
            coverage = _render(skeleton, size, pen, angle, squeeze)
        drawn.append(coverage)
    return drawn, list(rng.uniform(-0.04, 0.04, len(skeletons)) * height)


def _clear(union: Mask, mask: Mask, y: int, radius: int) -> int:
    """The least x at which ``mask`` (its top at row ``y``) keeps ``radius`` px clear of every
    ink pixel of ``union`` to its left, row by row (``union`` dilated by ``radius``)."""
    grown = union.astype(np.uint8)
    if radius:
        grown = cv2.dilate(grown, np.ones((2 * radius + 1, 2 * radius + 1), np.uint8))
    band = grown[y : y + mask.shape[0]] > 0
    right = band.shape[1] - 1 - np.argmax(band[:, ::-1], axis=1)
    both = band.any(axis=1) & mask.any(axis=1)
    return int((right - np.argmax(mask, axis=1) + 1)[both].max()) if both.any() else -(10**6)


def _paint(shape: tuple[int, int], glyphs: Sequence[_Glyph]) -> Mask:
    canvas = np.zeros(shape, dtype=bool)
    for g in glyphs:
        canvas[g.y : g.y + g.mask.shape[0], g.x : g.x + g.mask.shape[1]] |= g.mask
    return canvas


def _row(
    coverages: list[Coverage], drops: list[float], gaps: list[tuple[str, int]]
) -> tuple[list[_Glyph], int]:
    """The digits placed left to right, each after the one before by its gap: ``("space",
    px)`` between ink boxes, ``("tight", px)`` between inks, ``("touch", px)`` pushed into the
    previous digit's ink. Positions from the row's top left; and the baseline's row."""
    tops = [round(d) - c.shape[0] for c, d in zip(coverages, drops, strict=True)]
    top = min(tops)
    shape = (
        max(t + c.shape[0] for t, c in zip(tops, coverages, strict=True)) - top,
        sum(c.shape[1] for c in coverages) + sum(a for h, a in gaps if h == "space") + 8,
    )
    placed: list[_Glyph] = []
    for i, (coverage, y) in enumerate(zip(coverages, (t - top for t in tops), strict=True)):
        mask, x = coverage > INK_LEVEL, 0
        if placed:
            (how, amount), prev = gaps[i - 1], placed[-1]
            # Reading order: each digit starts right of the last one's start and ends past its end.
            order = max(prev.x + 1, prev.x + prev.coverage.shape[1] + 1 - coverage.shape[1])
            if how == "space":
                x = max(g.x + g.coverage.shape[1] for g in placed) + amount
            elif how == "tight":
                x = max(order, _clear(_paint(shape, placed), mask, y, amount))
            else:
                away = max(order, _clear(_paint(shape, placed[:-1]), mask, y, 1))
                contact = _clear(_paint(shape, [prev]), mask, y, 0)
                for push in range(amount, 0, -1):
                    x = max(away, contact - push)
                    if (_paint(shape, [prev]) & _paint(shape, [_Glyph(coverage, x, y)])).any():
                        break
                else:
                    raise _NoLayout
        placed.append(_Glyph(coverage, x, y))
    return placed, -top


def _extent(glyphs: Sequence[_Glyph]) -> tuple[int, int]:
    """(width, height) of the glyphs' boxes from (0, 0)."""
    return max(g.x + g.coverage.shape[1] for g in glyphs), max(
        g.y + g.coverage.shape[0] for g in glyphs
    )


def _compose(glyphs: Sequence[_Glyph], size: tuple[int, int], at: tuple[int, int]) -> Coverage:
    """A (height, width) = ``size[::-1]`` coverage with the glyphs at offset ``at`` (x, y)."""
    canvas = np.zeros((size[1], size[0]), dtype=np.float32)
    for g in glyphs:
        region = canvas[
            at[1] + g.y : at[1] + g.y + g.coverage.shape[0],
            at[0] + g.x : at[0] + g.x + g.coverage.shape[1],
        ]
        np.maximum(region, g.coverage, out=region)
    return canvas


def _ink_box(mask: Mask) -> tuple[Box, Mask]:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    box = (int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1))
    return box, mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def _sample(
    kind: str, body: bytes, label: str, glyphs: Sequence[_Glyph], at: tuple[int, int]
) -> NumberSample:
    boxes, masks = [], []
    for g in glyphs:
        (x, y, w, h), mask = _ink_box(g.mask)
        boxes.append((int(at[0] + g.x + x), int(at[1] + g.y + y), w, h))
        masks.append(mask)
    return NumberSample(body, label, kind, boxes, masks)


def _natural_gaps(
    rng: np.random.Generator, count: int, height: float, low: float, high: float
) -> list[tuple[str, int]]:
    """One writer's spacing: a mean gap in [low, high] x height, each pair within ±25 % of it."""
    mean = rng.uniform(low, high)
    return [
        ("space", round(float(np.clip(mean * rng.uniform(0.75, 1.25), low, high)) * height))
        for _ in range(count - 1)
    ]


def _canvas_export(
    kind: str, rng: np.random.Generator, glyphs: list[_Glyph], height: float, label: str
) -> NumberSample:
    """A web-canvas-like PNG: half RGBA (transparent, coloured pen), half dark on white."""
    width, rows = _extent(glyphs)
    left, right, top, bottom = (
        rng.uniform([0.2, 0.2, 0.2, 0.2], [1.2, 1.2, 0.8, 0.8]) * height
    ).astype(int)
    alpha = np.rint(
        _compose(glyphs, (width + left + right, rows + top + bottom), (left, top)) * 255
    ).astype(np.uint8)
    colour = np.array(_PEN_COLOURS[int(rng.integers(len(_PEN_COLOURS)))], dtype=np.float32)
    if rng.random() < 0.5:  # canvas exports keep transparent pixels black
        rgb = np.where(alpha[..., None] > 0, colour, 0).astype(np.uint8)
        image = Image.fromarray(np.dstack([rgb, alpha]), mode="RGBA")
    else:
        share = alpha[..., None].astype(np.float32) / 255
        pen = colour if rng.random() < 0.5 else np.full(3, rng.uniform(0, 60), np.float32)
        image = Image.fromarray(
            np.rint(255 * (1 - share) + pen * share).astype(np.uint8), mode="RGB"
        )
        image = image.convert("L") if (pen == pen[0]).all() else image
    return _sample(kind, _encode(image, "PNG"), label, glyphs, (left, top))


def spaced(rng: np.random.Generator, skeletons: list[_Skeleton], label: str) -> NumberSample:
    height = rng.uniform(40, 90)
    coverages, drops = _glyphs(rng, skeletons, height, _pen(rng, height))
    glyphs, _ = _row(coverages, drops, _natural_gaps(rng, len(skeletons), height, 0.15, 0.5))
    return _canvas_export("spaced", rng, glyphs, height, label)


def tight(rng: np.random.Generator, skeletons: list[_Skeleton], label: str) -> NumberSample:
    height = rng.uniform(40, 90)
    coverages, drops = _glyphs(rng, skeletons, height, _pen(rng, height))
    gaps = [("tight", int(rng.integers(1, 4))) for _ in skeletons[1:]]
    return _canvas_export("tight", rng, _row(coverages, drops, gaps)[0], height, label)


def touching(rng: np.random.Generator, skeletons: list[_Skeleton], label: str) -> NumberSample:
    height = rng.uniform(40, 90)
    coverages, drops = _glyphs(rng, skeletons, height, _pen(rng, height))
    spaced_gaps = _natural_gaps(rng, len(skeletons), height, 0.15, 0.5)
    gaps = [s if rng.random() < 0.5 else ("tight", int(rng.integers(1, 4))) for s in spaced_gaps]
    push = int(rng.integers(1, 5))
    for pair in rng.permutation(len(gaps)):  # the first pair, in a random order, that can touch
        try:
            glyphs, _ = _row(coverages, drops, [*gaps[:pair], ("touch", push), *gaps[pair + 1 :]])
        except _NoLayout:
            continue
        return _canvas_export("touching", rng, glyphs, height, label)
    raise _NoLayout


def _paper(rng: np.random.Generator, ink: Coverage, printed: Coverage) -> bytes:
    """Dark ink and dark-grey print on white paper, some with a scanner's noise and blur; PNG,
    3 in 5 grey."""
    paper = rng.uniform(240, 255) * rng.uniform(0.98, 1.0, 3)
    pen = rng.uniform(0, 60, 3) * (1 if rng.random() < 0.5 else np.array([0.5, 0.6, 1.6]))
    line = np.full(3, rng.uniform(0, 90))
    a, p = ink[..., None], printed[..., None]
    pixels = np.minimum(paper * (1 - a) + pen * a, paper * (1 - p) + line * p)
    if rng.random() < 0.5:
        pixels = cv2.GaussianBlur(pixels, (0, 0), rng.uniform(0.3, 0.7)) + rng.normal(
            0, rng.uniform(0.5, 2.5), pixels.shape
        )
    image = Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), mode="RGB")
    return _encode(image.convert("L") if rng.random() < 0.6 else image, "PNG")


def _form(
    rng: np.random.Generator, skeletons: list[_Skeleton]
) -> tuple[float, list[_Glyph], int, int]:
    """A number written on a form: its height, glyphs, baseline row and line width."""
    height = rng.uniform(40, 90)
    coverages, drops = _glyphs(rng, skeletons, height, _pen(rng, height))
    glyphs, baseline = _row(coverages, drops, _natural_gaps(rng, len(skeletons), height, 0.1, 0.45))
    return height, glyphs, baseline, int(rng.integers(1, 4))


def form_baseline(rng: np.random.Generator, skeletons: list[_Skeleton], label: str) -> NumberSample:
    height, glyphs, baseline, line = _form(rng, skeletons)
    width, rows = _extent(glyphs)
    margin, before, after = (rng.uniform([0.2, 0.2, 0.2], [0.8, 1.5, 3.0]) * height).astype(int)
    below = baseline + round(rng.uniform(-0.01, 0.06) * height)  # on it or just above it
    size = (margin * 2 + before + width + after, margin * 2 + max(rows, below + line))
    printed = np.zeros((size[1], size[0]), np.float32)
    printed[margin + below : margin + below + line, margin : size[0] - margin] = 1
    at = (margin + before, margin)
    return _sample(
        "form_baseline", _paper(rng, _compose(glyphs, size, at), printed), label, glyphs, at
    )


def form_box(rng: np.random.Generator, skeletons: list[_Skeleton], label: str) -> NumberSample:
    height, glyphs, _, line = _form(rng, skeletons)
    width, rows = _extent(glyphs)
    left, right, top, bottom = (
        rng.uniform([0.15, 0.15, 0.15, 0.15], [0.8, 2.5, 0.4, 0.4]) * height
    ).astype(int)
    outside = int(rng.integers(2, max(3, int(0.6 * height))))
    box_w, box_h = left + width + right + 2 * line, top + rows + bottom + 2 * line
    size = (box_w + 2 * outside, box_h + 2 * outside)
    printed = np.zeros((size[1], size[0]), np.float32)
    printed[outside : outside + box_h, outside : outside + box_w] = 1
    printed[outside + line : outside + box_h - line, outside + line : outside + box_w - line] = 0
    at = (outside + line + left, outside + line + top)
    return _sample("form_box", _paper(rng, _compose(glyphs, size, at), printed), label, glyphs, at)


def form_comb(rng: np.random.Generator, skeletons: list[_Skeleton], label: str) -> NumberSample:
    """A comb field: a box divided into one cell per digit, each digit inside its cell."""
    height, line = rng.uniform(40, 90), int(rng.integers(1, 4))
    cell_w, cell_h = height * rng.uniform(1.0, 1.2), round(height * rng.uniform(1.2, 1.5))
    margin = int(rng.integers(2, 5))
    inner = (int(cell_w) - line - 2 * margin, cell_h - line - 2 * margin)
    coverages, drops = _glyphs(rng, skeletons, height, _pen(rng, height), fit=inner)
    outside = int(rng.integers(2, max(3, int(0.6 * height))))
    edges = [outside + round(k * cell_w) for k in range(len(skeletons) + 1)]
    size = (edges[-1] + line + outside, cell_h + line + 2 * outside)
    printed = np.zeros((size[1], size[0]), np.float32)
    printed[outside : outside + cell_h + line, outside : edges[-1] + line] = 1
    printed[outside + line : outside + cell_h, outside + line : edges[-1]] = 0
    for edge in edges[1:-1]:
        printed[outside : outside + cell_h, edge : edge + line] = 1
    sit = rng.uniform(0.0, 0.6)  # how high in its cell this writer writes
    glyphs = []
    for coverage, drop, edge in zip(coverages, drops, edges, strict=False):
        h, w = coverage.shape
        x = edge + line + margin + int(rng.integers(0, max(1, inner[0] - w + 1)))
        slack = inner[1] - h
        y = (
            outside
            + line
            + margin
            + int(np.clip(round(slack * (1 - sit) + drop), 0, max(0, slack)))
        )
        glyphs.append(_Glyph(coverage, x, y))
    return _sample(
        "form_comb", _paper(rng, _compose(glyphs, size, (0, 0)), printed), label, glyphs, (0, 0)
    )


def photo(rng: np.random.Generator, skeletons: list[_Skeleton], label: str) -> NumberSample:
    """A phone photo of the number on paper, slightly rotated, 40-80 % of the frame's width."""
    frame_w, frame_h = ((640, 480), (800, 600))[int(rng.integers(2))]
    pen_share, mean_gap = rng.uniform(0.07, 0.12), rng.uniform(0.12, 0.45)
    gap_shares = np.clip(mean_gap * rng.uniform(0.75, 1.25, len(skeletons) - 1), 0.12, 0.45)
    units = sum(s.aspect * (1 - pen_share) + pen_share for s in skeletons) + gap_shares.sum()
    height = min(rng.uniform(0.4, 0.8) * frame_w / units, 0.6 * frame_h)
    coverages, drops = _glyphs(rng, skeletons, height, max(2.0, pen_share * height))
    glyphs, _ = _row(coverages, drops, [("space", round(g * height)) for g in gap_shares])
    width, rows = _extent(glyphs)
    angle = rng.uniform(-3.0, 3.0)
    turned_w = width * np.cos(np.radians(angle)) + rows * abs(np.sin(np.radians(angle)))
    turned_h = width * abs(np.sin(np.radians(angle))) + rows * np.cos(np.radians(angle))
    cx = rng.uniform(turned_w / 2 + 8, max(turned_w / 2 + 8, frame_w - turned_w / 2 - 8))
    cy = rng.uniform(turned_h / 2 + 8, max(turned_h / 2 + 8, frame_h - turned_h / 2 - 8))
    at = (round(cx - width / 2), round(cy - rows / 2))
    turn = cv2.getRotationMatrix2D((float(cx), float(cy)), float(angle), 1.0)

    def turned(coverage: Coverage) -> Coverage:
        return np.asarray(
            cv2.warpAffine(coverage, turn, (frame_w, frame_h), flags=cv2.INTER_LINEAR), np.float32
        )

    image = _photographed(turned(_compose(glyphs, (frame_w, frame_h), at)), rng, _PHOTO_LIGHT)
    boxes, masks = zip(
        *(_ink_box(turned(_compose([g], (frame_w, frame_h), at)) > INK_LEVEL) for g in glyphs),
        strict=True,
    )
    body = _encode(image, "JPEG", quality=int(rng.integers(75, 93)))
    return NumberSample(body, label, "photo", list(boxes), list(masks))


KINDS: Final[dict[str, Maker]] = {
    "spaced": spaced,
    "tight": tight,
    "touching": touching,
    "form_baseline": form_baseline,
    "form_box": form_box,
    "form_comb": form_comb,
    "photo": photo,
}


def sample_sheet(kind: str, count: int = 12, source: Source = "test") -> Image.Image:
    """The first ``count`` numbers of ``kind`` on one sheet, each with its label and boxes."""
    tile_w, tile_h = 620, 220
    sheet = Image.new("RGB", (2 * tile_w, (count + 1) // 2 * tile_h), (255, 255, 255))
    for seed in range(count):
        sample = make(kind, seed, source)
        with Image.open(io.BytesIO(sample.body)) as opened:
            picture = Image.alpha_composite(
                Image.new("RGBA", opened.size, (190, 200, 190, 255)), opened.convert("RGBA")
            ).convert("RGB")
        draw = ImageDraw.Draw(picture)
        for x, y, w, h in sample.boxes:
            draw.rectangle((x - 1, y - 1, x + w, y + h), outline=(255, 0, 0))
        picture.thumbnail((tile_w - 10, tile_h - 30))
        at = (seed % 2 * tile_w + 5, seed // 2 * tile_h + 25)
        sheet.paste(picture, at)
        ImageDraw.Draw(sheet).text(
            (at[0], at[1] - 18),
            f"{kind} seed {seed}: {sample.label}  {opened.size[0]}x{opened.size[1]}",
            fill=(0, 0, 0),
        )
    return sheet


def legibility(
    kind: str, count: int = 60, source: Source = "test", model_path: Path | None = None
) -> float:
    """Per-digit accuracy (%) of the default model on the first ``count`` numbers of ``kind``,
    each digit cut out by its ground-truth box (3 px margin), set on a field of its background
    (20 px more each side) and made MNIST-like by ``service.imaging.to_mnist``: the ceiling a
    reader that found every digit could reach."""
    import torch

    from service.errors import ServiceError
    from service.imaging import to_mnist
    from service.imaging.decode import decode

    path = model_path or Path(__file__).resolve().parents[1] / "models/default/1/model.pt"
    with warnings.catch_warnings():  # TorchScript is the packages' format; torch calls it old
        warnings.simplefilter("ignore", FutureWarning)
        model = torch.jit.load(str(path), map_location="cpu").eval()  # type: ignore[no-untyped-call]
    images, labels = [], []
    for seed in range(count):
        sample = make(kind, seed, source)
        grey = np.asarray(decode(sample.body, max_pixels=10**8, work_pixels=10**8).grey)
        for (x, y, w, h), label in zip(sample.boxes, sample.label, strict=True):
            x0, y0 = max(0, x - 3), max(0, y - 3)
            cut = grey[y0 : y + h + 3, x0 : x + w + 3]
            ring = np.concatenate([cut[0], cut[-1], cut[:, 0], cut[:, -1]])
            field = np.full((cut.shape[0] + 40, cut.shape[1] + 40), np.median(ring), grey.dtype)
            field[20:-20, 20:-20] = cut
            try:
                images.append(to_mnist(field))
            except ServiceError:  # no digit found in it: a misread
                images.append(np.zeros((28, 28), np.float32))
                label = "-1"
            labels.append(int(label))
    with torch.inference_mode():
        batch = torch.from_numpy(np.stack(images)).unsqueeze(1)
        read = model(batch).argmax(dim=1).numpy()
    return float(100.0 * np.mean(read == np.array(labels)))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m benchmarks.numbers DIR``: a sample sheet ``DIR/<kind>.png`` per kind."""
    out = Path((argv if argv is not None else sys.argv[1:])[0])
    out.mkdir(parents=True, exist_ok=True)
    for kind in KINDS:
        sample_sheet(kind).save(out / f"{kind}.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
