"""A grey picture -> ink: bright strokes on an exactly black background, the pen at 1.

Photos of paper are unevenly lit, shadowed, noisy, ruled; canvases and scans are clean.
Each step here works on the picture at working resolution, on OpenCV primitives:

    polarity (ink_on_black) -> lighting surface -> shadows (grey-level opening)
    -> signal over the paper's brightness -> noise floor -> ink level -> strokes' cores

Statistics come from small strided samples or a coarse grid of cells, never from a sort of
the whole picture.

Longer than the house's ~300 lines because the steps are one chain whose constants were
tuned together (each has its comment); split up, the thresholds would sit apart from the
steps that depend on them.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, TypeVar

import cv2
import numpy as np
from numpy.typing import NDArray

from service.errors import BadImage
from service.imaging.decode import Grey

FloatArray = NDArray[np.float32]
T = TypeVar("T")

#: Pictures at least this large on both sides have their background found by openings
#: (smaller ones are canvases, scans and MNIST-sized images: no shadows to follow).
_OPENING_MIN_SIDE: Final = 64
#: The deepest shadow (as a fraction of the paper's brightness) the background may follow.
_SHADOW_DEPTH: Final = 0.6
#: The background is sampled on a grid of about this many square cells along the longer side.
_BACKGROUND_CELLS: Final = 8
#: Statistics are taken on a strided sample of about this many pixels.
_SAMPLE_PIXELS: Final = 4096
#: Ink must stand this many robust noise deviations above the background ...
_NOISE_SIGMAS: Final = 4.0
#: ... and at least this much (in [0, 1] grey) to count as ink at all.
_MIN_CONTRAST: Final = 0.06
#: ... and its typical strength must be this many deviations above it (digits in photos:
#: 20 and more; blank paper's noise peaks: about 5).
_MIN_SIGNAL_TO_NOISE: Final = 10.0
#: Strokes' cores reach this strength (1 = the ink level); fainter marks are not ink ...
_CORE_LEVEL: Final = 0.45
#: ... unless they are this close (px, working resolution) to a core: anti-aliased edges.
_STROKE_MARGIN: Final = 2
#: Strength, as a fraction of full ink, below which a pixel is set to exactly 0 (background).
_FLOOR_FRACTION: Final = 0.12
#: The floor under the paper's brightness when dividing by it (a near-black shadow).
_DARKEST_PAPER: Final = 0.05
#: Median absolute deviation -> standard deviation, for normally distributed noise.
_MAD_TO_SIGMA: Final = 1.4826
#: A small picture whose ink covers about half of it or more (a tight crop: a form's field, a
#: data set's 8x8 digit scaled up) has no paper at its median, nor in half its grid's cells;
#: its paper is looked for, flat, at this quantile of its pixels instead. (scikit-learn's
#: digits scaled to 28x28: every one refused at the median; read 96.6 % of them at 0.2, 89 %
#: at 0.1, which sits under the paper's own blur.)
_DENSE_PAPER_QUANTILE: Final = 0.2

#: 8-bit grey -> float in [0, 1], straight and inverted, as lookup tables.
UNIT: Final = np.arange(256, dtype=np.float32) / np.float32(255.0)
INVERTED_UNIT: Final = np.float32(1.0) - UNIT
_OTSU: Final = cv2.THRESH_BINARY + cv2.THRESH_OTSU
_STROKE_KERNEL: Final = cv2.getStructuringElement(
    cv2.MORPH_RECT, (2 * _STROKE_MARGIN + 1, 2 * _STROKE_MARGIN + 1)
)


@dataclass(frozen=True)
class CellGrid:
    """Medians of a grid of square cells: each is its cell's background unless ink covers
    most of it."""

    medians: FloatArray  # (rows, cols)
    cell: int  # a cell's side in pixels


def no_digit() -> BadImage:
    return BadImage(
        "no digit found: nothing in the image stands out from its background", code="no_digit"
    )


def cell_grid(image: Grey) -> CellGrid | None:
    """The :class:`CellGrid` of ``image`` (medians in [0, 1] whatever its depth); ``None``
    when it is too small for one."""
    height, width = image.shape
    cell = max(height, width) // _BACKGROUND_CELLS
    if cell < 4 or min(height, width) < 2 * cell:
        return None
    rows, cols = height // cell, width // cell
    cells = image[: rows * cell, : cols * cell].reshape(rows, cell, cols, cell)
    step = max(1, cell // 8)  # the median of an 8x8 sub-grid of each cell is plenty
    per_cell = cells[:, ::step, :, ::step].transpose(0, 2, 1, 3).reshape(rows, cols, -1)
    middle = per_cell.shape[2] // 2
    medians = np.partition(per_cell, middle, axis=2)[:, :, middle].astype(np.float32)
    if image.dtype == np.uint8:
        medians *= np.float32(1.0 / 255.0)
    return CellGrid(medians, cell)


def strokes_of(grey: Grey, find: Callable[[FloatArray], T]) -> T:
    """``find`` (which raises ``no_digit`` when it finds nothing) applied to the strokes of
    ``grey``: ink on black, the background flattened and zeroed, the pen at 1.

    When it finds nothing, the background was mistaken (a small note on a large table is
    mostly table): the strokes are looked for the other way round before giving up. A small
    picture (under :data:`_OPENING_MIN_SIDE`) is then looked at once more on flat paper at
    :data:`_DENSE_PAPER_QUANTILE`, both ways round: ink may cover most of a tight crop.
    """
    grid = cell_grid(grey)
    ink, flipped = ink_on_black(grey, grid)
    ink_grid = inverted(grid) if flipped else grid
    attempts: list[tuple[FloatArray, CellGrid | None, float]] = [
        (ink, ink_grid, 0.5),
        (np.float32(1.0) - ink, inverted(ink_grid), 0.5),
    ]
    if min(grey.shape) < _OPENING_MIN_SIDE:  # small: a canvas, a scan, a crop; flat paper
        attempts += [(view, None, _DENSE_PAPER_QUANTILE) for view, _, _ in attempts]
    for view, view_grid, paper_quantile in attempts[:-1]:
        try:
            return find(normalise_contrast(view, view_grid, paper_quantile))
        except BadImage as exc:
            if exc.code != "no_digit":
                raise
    view, view_grid, paper_quantile = attempts[-1]
    return find(normalise_contrast(view, view_grid, paper_quantile))


def inverted(grid: CellGrid | None) -> CellGrid | None:
    """The grid of ``1 - image`` (a median commutes with the inversion)."""
    return None if grid is None else CellGrid(np.float32(1.0) - grid.medians, grid.cell)


def _sample_step(array: NDArray[np.generic]) -> int:
    """The stride that leaves about :data:`_SAMPLE_PIXELS` pixels of ``array``."""
    return max(1, int(math.sqrt(array.size / _SAMPLE_PIXELS)))


def sample(array: FloatArray) -> FloatArray:
    """A strided subsample of about :data:`_SAMPLE_PIXELS` pixels, for cheap statistics."""
    step = _sample_step(array)
    return array[::step, ::step]


def quantile(values: NDArray[np.floating], fraction: float) -> float:
    """The value with ``fraction`` of ``values`` at or below it (no interpolation): a
    partition, no sort."""
    flat = values.ravel()
    index = min(flat.size - 1, int(fraction * flat.size))
    return float(np.partition(flat, index)[index])


def median(values: NDArray[np.floating]) -> float:
    """The median (the upper one of an even count): a partition, no sort.

    numpy's own ``median`` costs ten times as much on the few thousand values taken here.
    """
    return quantile(values, 0.5)


def ink_on_black(grey: Grey, grid: CellGrid | None) -> tuple[FloatArray, bool]:
    """``grey`` as float32 in [0, 1] with ink bright on a dark background, and whether it
    had to be inverted.

    The ink is the heavier tail of the pixels' departures from the background, beyond the
    background's own spread: below it for dark ink on paper, above it for white-on-black
    images such as MNIST. Two views vote: departures from the whole picture's median (which a
    table around the paper cannot fool: it is as dark as the ink) and from each cell's median
    (which a strong lighting gradient across the photo cannot fool).
    """
    step = _sample_step(grey)
    strided = _as_unit(grey[::step, ::step])  # (h, w), a few thousand pixels
    vote = _dark_tail_share(strided - np.float32(median(strided)))
    if grid is not None:
        # A 3x3 median over the cells: thick strokes fill some cells, rarely most of a block.
        local = cv2.medianBlur(grid.medians, 3)
        rows = np.minimum(np.arange(0, grey.shape[0], step) // grid.cell, local.shape[0] - 1)
        cols = np.minimum(np.arange(0, grey.shape[1], step) // grid.cell, local.shape[1] - 1)
        vote += _dark_tail_share(strided - local[rows[:, None], cols[None, :]])
    flip = vote > 0.0
    if grey.dtype == np.uint8:  # to float, inverted or not, in one pass
        return cv2.LUT(grey, INVERTED_UNIT if flip else UNIT), flip
    return (np.float32(1.0) - grey if flip else np.asarray(grey, dtype=np.float32)), flip


def _as_unit(grey: Grey) -> FloatArray:
    """Grey as float32 in [0, 1]."""
    if grey.dtype == np.uint8:
        return np.multiply(grey, np.float32(1.0 / 255.0), dtype=np.float32)
    return np.asarray(grey, dtype=np.float32)


def _dark_tail_share(residual: FloatArray) -> float:
    """In [-1, 1]: how much more of the departures beyond 3 robust deviations lies below
    the background (dark ink) than above it (light ink); 0 when there are none."""
    spread = np.float32(3.0 * _MAD_TO_SIGMA * median(np.abs(residual)))
    # sum(max(-residual - spread, 0)) and sum(max(residual - spread, 0)), on OpenCV's
    # thresholds (numpy's maximum costs three times as much here)
    dark = -float(cv2.threshold(residual + spread, 0.0, 0.0, cv2.THRESH_TOZERO_INV)[1].sum())
    light = float(cv2.threshold(residual - spread, 0.0, 0.0, cv2.THRESH_TOZERO)[1].sum())
    return (dark - light) / (dark + light) if dark + light > 0 else 0.0


def normalise_contrast(
    ink: FloatArray, grid: CellGrid | None, paper_quantile: float = 0.5
) -> FloatArray:
    """Flatten the (unevenly lit) background, zero what is noise, stretch the pen to 1.

    ``ink`` is bright on dark, ``grid`` its :func:`cell_grid` (with none, the background is
    flat, at the ``paper_quantile`` of the pixels). Returns float32 ``(H, W)`` in
    [0, 1] with the background exactly 0. Raises ``no_digit`` when the ink is weaker than
    ``_MIN_CONTRAST`` or than ``_MIN_SIGNAL_TO_NOISE`` times the noise (blank paper has only
    noise peaks).
    """
    lighting = Lighting.fit(ink, grid, paper_quantile)
    background = _background(ink, lighting)
    # Light multiplies reflectance, so on paper divide by the paper's brightness (1 - background
    # once inverted) rather than only subtract: ink in a shadow keeps its full strength.
    signal = _over_paper(ink - background, background)
    # The background is 0 now. Its noise is measured on the dark side alone (the bright side
    # also holds the ink, and whatever else stands out: a table around the paper, say), before
    # and after the shadows are taken away: either can be inflated (by an unfitted shadow, by
    # a shadow's or a huge stroke's blurred edge), the noise is the smaller. Both on the same
    # strided sample of full-resolution pixels (reduced pictures would average the noise away).
    step = _sample_step(ink)
    lit = lighting.on_grid(ink.shape, step)
    unlit_signal = _over_paper(ink[::step, ::step] - lit, lit)
    noise = min(_dark_side_noise(unlit_signal), _dark_side_noise(signal[::step, ::step]))
    floor = max(_NOISE_SIGMAS * noise, _MIN_CONTRAST / 2)
    strong = signal[signal > floor]
    if strong.size == 0:
        raise no_digit()
    full = ink_level(strong)
    if full < max(_MIN_CONTRAST, _MIN_SIGNAL_TO_NOISE * noise):
        raise no_digit()
    low = max(floor, _FLOOR_FRACTION * full)
    signal -= np.float32(low)
    signal *= np.float32(1.0 / max(full - low, 1e-6))
    cv2.threshold(signal, 0.0, 0.0, cv2.THRESH_TOZERO, dst=signal)  # clipped to [0, 1]
    cv2.threshold(signal, 1.0, 1.0, cv2.THRESH_TRUNC, dst=signal)
    return keep_near_strokes(signal)


def _over_paper(departure: FloatArray, background: FloatArray) -> FloatArray:
    """``departure / max(1 - background, _DARKEST_PAPER)``, in place: ink relative to the
    paper's light."""
    _, darkest = cv2.threshold(background, 1.0 - _DARKEST_PAPER, 0.0, cv2.THRESH_TRUNC)
    departure /= np.float32(1.0) - darkest
    return departure


def _dark_side_noise(values: FloatArray) -> float:
    """Robust standard deviation of the values below 0 (a background at 0, ink above it)."""
    below = values[values < 0.0]
    return -_MAD_TO_SIGMA * median(below) if below.size else 0.0


@dataclass(frozen=True)
class Lighting:
    """Smooth lighting under a picture of bright ink on dark: a quadratic surface in the
    picture's coordinates (each in [-1, 1] from edge to edge).

    Fitted, robustly, to the cell medians: it follows a lighting gradient or vignette across
    a photo but cannot follow the ink itself, so thick strokes are never hollowed out. Cells
    mostly covered by ink are rejected as outliers.
    """

    coef: tuple[float, float, float, float, float, float]  # of 1, u, v, u², uv, v²

    @classmethod
    def fit(cls, ink: FloatArray, grid: CellGrid | None, paper_quantile: float = 0.5) -> Lighting:
        if grid is None:  # too small for a grid: flat, at the paper's quantile of the pixels
            return cls((quantile(sample(ink), paper_quantile), 0.0, 0.0, 0.0, 0.0, 0.0))
        rows, cols = grid.medians.shape
        medians = grid.medians.reshape(-1, 1)  # (cells, 1)
        design = _design(rows, cols, grid.cell / ink.shape[0], grid.cell / ink.shape[1])
        # Start from the darker half of the cells (ink is bright) and a plane, which
        # extrapolates a lighting gradient sensibly; then refit the quadratic to every cell
        # that fits.
        keep = medians[:, 0] <= median(medians)
        # Terms the grid can tell apart: a quadratic along an axis needs three cells along it
        # (a strip two cells tall has v² = 1/4 in both rows, and its fit would be anything).
        plane = [0] + ([1] if cols >= 2 else []) + ([2] if rows >= 2 else [])
        quadratic = plane + [
            term
            for term, fits in ((3, cols >= 3), (4, rows >= 3 and cols >= 3), (5, rows >= 3))
            if fits
        ]
        terms: list[int] = plane
        previous_terms: list[int] = []
        coef = np.zeros((6, 1), dtype=np.float32)
        for _ in range(4):
            if np.count_nonzero(keep) < 2 * len(terms):
                break
            coef = np.zeros((6, 1), dtype=np.float32)
            coef[terms] = _least_squares(design[keep][:, terms], medians[keep])
            terms = quadratic
            residual = (medians - design @ coef)[:, 0]
            scale = _MAD_TO_SIGMA * median(np.abs(residual[keep])) + 1e-3
            refit = residual < 2.5 * scale  # ink-covered cells are bright outliers
            if terms == previous_terms and np.array_equal(refit, keep):
                break  # the same cells again: the same fit
            keep, previous_terms = refit, terms
        c0, cu, cv, cuu, cuv, cvv = (float(c) for c in coef[:, 0])
        return cls((c0, cu, cv, cuu, cuv, cvv))

    def on_grid(self, shape: tuple[int, int], step: int) -> FloatArray:
        """The surface at the pixels ``[::step, ::step]`` of a picture of ``shape``."""
        height, width = shape
        y = (np.arange(0, height, step, dtype=np.float32) + 0.5) * np.float32(2.0 / height) - 1
        x = (np.arange(0, width, step, dtype=np.float32) + 0.5) * np.float32(2.0 / width) - 1
        c0, cu, cv, cuu, cuv, cvv = (np.float32(c) for c in self.coef)
        surface: FloatArray = np.add.outer(c0 + (cv + cvv * y) * y, (cu + cuu * x) * x)
        if cuv != 0.0:
            surface += np.multiply.outer(cuv * y, x)
        return surface


@functools.lru_cache(maxsize=256)
def _design(rows: int, cols: int, cell_height: float, cell_width: float) -> FloatArray:
    """Design matrix ``(rows * cols, 6)`` of the quadratic at the cell centres: 1 u v u² uv v²
    (``cell_*``: a cell's side as a fraction of the picture's)."""
    v = np.repeat((np.arange(rows, dtype=np.float32) + 0.5) * np.float32(2 * cell_height) - 1, cols)
    u = np.tile((np.arange(cols, dtype=np.float32) + 0.5) * np.float32(2 * cell_width) - 1, rows)
    design = np.stack([np.ones_like(u), u, v, u * u, u * v, v * v], axis=1)
    design.flags.writeable = False  # shared between calls
    return design


def _least_squares(design: FloatArray, target: FloatArray) -> FloatArray:
    """``argmin |design @ coef - target|`` by OpenCV's QR (SVD if the design is degenerate)."""
    solved, coef = cv2.solve(design, target, flags=cv2.DECOMP_QR)
    if not solved:
        coef = cv2.solve(design, target, flags=cv2.DECOMP_SVD)[1]
    return np.asarray(coef, dtype=np.float32)


def _background(ink: FloatArray, lighting: Lighting) -> FloatArray:
    """The background under ``ink``: the lighting plus the shadows left on it, ``(H, W)``.

    Shadows are what is left of the unlit picture, at a quarter of the resolution, after a
    grey-level opening with a window a quarter of the picture wide: strokes narrower than
    that go, while regions wider than it (a shadow across the page, with its edge) stay.
    Both are smooth, so they are computed at that quarter resolution and scaled up once.
    Small pictures (canvases, scans, MNIST-sized images) have no shadows to follow.
    """
    height, width = ink.shape
    if min(height, width) < _OPENING_MIN_SIDE:
        return lighting.on_grid(ink.shape, 1)
    # A quarter of the resolution: less noise for the minimum to dig into, 1/16 of the work.
    small = cv2.resize(ink, (-(-width // 4), -(-height // 4)), interpolation=cv2.INTER_AREA)
    lit = lighting.on_grid(ink.shape, 4)[: small.shape[0], : small.shape[1]]
    unlit = small - lit
    window = max(3, (max(unlit.shape) // 4) | 1)  # odd
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (window, window))
    # OpenCV's opening ignores what lies beyond the border: edges repeated, in effect.
    opened = cv2.morphologyEx(unlit, cv2.MORPH_OPEN, kernel)
    # An opening sits on the noise's troughs; lift it back onto the noise's median.
    opened += np.float32(median(sample(unlit - opened)))
    # Shadows dim paper by a half or so; anything deeper is ink too wide for the window (a
    # huge felt-tip digit on a canvas): keep it as ink, not as background.
    cv2.threshold(opened, _SHADOW_DEPTH, 0.0, cv2.THRESH_TRUNC, dst=opened)
    opened += lit
    return np.asarray(cv2.resize(opened, (width, height), interpolation=cv2.INTER_LINEAR))


def ink_level(strong: FloatArray) -> float:
    """The strength of the pen's ink among the pixels that stand out from the background.

    Those pixels are the ink and, on a photo, fainter marks: ruled lines, show-through,
    smudges, and the ink's own anti-aliased edges. Otsu's split of their strengths (OpenCV's,
    on their range in 256 steps) separates the faint from the strong; the ink level is the
    median of the strong side.
    """
    low, high = float(strong.min()), float(strong.max())
    if high - low < 1e-6:
        return high
    steps = np.multiply(strong - np.float32(low), np.float32(255.0 / (high - low)))
    split, _ = cv2.threshold(steps.astype(np.uint8).reshape(1, -1), 0, 255, _OTSU)
    return median(strong[steps > split])


def keep_near_strokes(ink: FloatArray) -> FloatArray:
    """``ink`` with what is not within ``_STROKE_MARGIN`` px of its strong core zeroed.

    A stroke's anti-aliased edge lies next to its core and stays; marks that never reach
    ``_CORE_LEVEL`` (ruled or squared paper's lines, show-through) vanish, also where they
    run into the digit.
    """
    cores = (ink >= _CORE_LEVEL).view(np.uint8)  # 1 at a core, else 0
    near = cv2.dilate(cores, _STROKE_KERNEL)  # 1 within the margin of a core
    kept: FloatArray = cv2.bitwise_and(ink, ink, mask=near)  # the float's bits where near
    return kept
