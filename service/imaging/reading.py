"""Any picture of a number -> candidate digits for the model, and the model's answers -> the
number. One forward pass per reading::

    decode (a larger working size than one digit's)          (decode.py)
    strokes: ink on black, lighting flattened                 (clean.py, as for one digit)
    printed form lines erased                                 (form_lines.py)
    atoms: pieces of ink left to right, touching digits cut   (segments.py, seams.py)
    candidates: every run of 1-5 adjacent atoms that could be a digit, each laid out as
        MNIST's digits were (layout.py, as for one digit)    -> find_candidates
    [the model classifies every candidate, in one batch]
    the best reading: the path through the candidates that the model and the shapes like
        best, by dynamic programming                          -> choose_reading

A path is scored by the sum, over its digits, of the log of the model's confidence, a
penalty for shapes no digit has (too wide, too short), a penalty for every seam through ink
it uses as a boundary, and a small bonus per digit; atoms too short to be digits may be
skipped, at a cost. So a seam through a wide 0 loses to the whole 0 (two half-digits are
each doubtful, and the seam crosses two strokes), and a touching pair read as one digit
loses to its two halves when both are sure. The penalties were tuned by grid search on
numbers made of MNIST *training* digits (``benchmarks.numbers``, ``source="train"``); the
accuracy in BENCHMARKS.md is measured on numbers of test digits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import cv2
import numpy as np
from numpy.typing import NDArray

from service.errors import BadImage
from service.imaging import decode as decoding
from service.imaging.clean import strokes_of
from service.imaging.form_lines import remove_form_lines
from service.imaging.layout import mnist_layout
from service.imaging.segments import Atoms, TooManyPieces, find_atoms

FloatArray = NDArray[np.float32]

#: Numbers are read from pictures reduced to about this many pixels (600x600): four times a
#: lone digit's, since a number's digits share the picture.
READ_WORK_PIXELS: Final = 4 * decoding.WORK_PIXELS
#: A digit is a run of at most this many atoms ...
MAX_SPAN: Final = 5
#: ... at most this many digit heights wide (runs of more than one atom) ...
_WIDEST: Final = 1.6
#: ... or this many when it joins separate components (a broken stroke, a detached bar) ...
_JOINED_WIDEST: Final = 1.1
#: ... and at least this fraction of the digit height tall.
_SHORTEST: Final = 0.45
#: Penalties (in log-confidence units) per digit height a digit is wider than ``_WIDE``,
#: and per digit height shorter than ``_SHORT``.
_WIDE: Final = 1.0
_WIDE_PENALTY: Final = 2.0
_SHORT: Final = 0.9
_SHORT_PENALTY: Final = 4.0
#: Penalty for a boundary at a seam, per pen width of ink the seam crosses.
_SEAM_PENALTY: Final = 1.0
#: Cost of leaving out an atom too short to be a digit (a speck, a stray mark).
_SKIP_COST: Final = 0.5
#: Added to every digit's score: readings that leave a digit's ink to its neighbours' (which
#: the model often still reads confidently) are worth less than those that read it.
_DIGIT_BONUS: Final = 0.2
#: Atoms of note a number of ``max_digits`` may have: more is no number.
_ATOMS_PER_DIGIT: Final = 3
#: The segmentation's confidence is sigmoid(scale x the best path's margin over the best
#: one reading another number): fitted on numbers of MNIST *training* digits (560, ECE
#: 0.025 with the weakest digit's confidence; the test digits measure it, BENCHMARKS.md).
_MARGIN_SCALE: Final = 2.0
#: Confidence below which a digit's log is floored (keeps scores finite).
_FLOOR: Final = 1e-6


@dataclass(frozen=True)
class Candidates:
    """Every candidate digit of a picture, for the model to classify in one batch."""

    images: FloatArray  # (k, 28, 28) float32 in [0, 1], MNIST-style
    spans: tuple[tuple[int, int], ...]  # (k,): atoms [start, stop) of each candidate
    boxes: NDArray[np.int32]  # (k, 4): x, y, width, height in pixels of the image as sent
    widths: FloatArray  # (k,): each candidate's width, in digit heights
    heights: FloatArray  # (k,): each candidate's height, in digit heights
    seam_cost: FloatArray  # (n,): ink (in pen widths) of the seam left of atom i; 0: a gap
    skippable: NDArray[np.bool_]  # (n,): whether atom i may be left out
    atoms: int  # n
    max_digits: int


@dataclass(frozen=True)
class ReadDigit:
    """One digit of a reading."""

    digit: int
    confidence: float
    probabilities: FloatArray  # (C,)
    box: tuple[int, int, int, int]  # x, y, width, height in pixels of the image as sent
    candidate: int  # its row in Candidates.images


@dataclass(frozen=True)
class Reading:
    """The number read: its digits left to right, and how far to trust it."""

    number: str
    confidence: float  # min(weakest digit, the segmentation's margin over the runner-up)
    digits: tuple[ReadDigit, ...]


def too_many_digits(max_digits: int) -> BadImage:
    return BadImage(
        f"the picture holds more than {max_digits} digits (or too many separate marks to "
        "be a number)",
        code="too_many_digits",
    )


def find_candidates(data: bytes, *, max_pixels: int, max_digits: int = 32) -> Candidates:
    """Client bytes -> the candidate digits of the number in them.

    Raises the :mod:`service.imaging.decode` errors, ``BadImage`` ``no_digit`` when nothing
    stands out from the background and ``too_many_digits`` for more marks than a number of
    ``max_digits`` digits could have.
    """
    picture = decoding.decode(data, max_pixels=max_pixels, work_pixels=READ_WORK_PIXELS)
    try:
        atoms = strokes_of(
            picture.grey,
            lambda ink: find_atoms(remove_form_lines(ink), max_atoms=_ATOMS_PER_DIGIT * max_digits),
        )
    except TooManyPieces:
        raise too_many_digits(max_digits) from None
    return _candidates(atoms, picture.scale, max_digits)


def _candidates(atoms: Atoms, scale: float, max_digits: int) -> Candidates:
    height = atoms.digit_height
    boxes = atoms.boxes
    images: list[FloatArray] = []
    spans: list[tuple[int, int]] = []
    sent_boxes: list[tuple[int, int, int, int]] = []
    shapes: list[tuple[float, float]] = []
    edges = [(int(x), int(y), int(x + w), int(y + h), int(w) > 0) for x, y, w, h in boxes]
    for start in range(atoms.count):
        left = top = 1 << 30
        right = bottom = -1
        joins = False  # whether the span joins separate components (not only seams' pieces)
        for stop in range(start + 1, min(atoms.count, start + MAX_SPAN) + 1):
            x0, y0, x1, y1, real = edges[stop - 1]
            joins = joins or (stop - 1 > start and atoms.seam_cost[stop - 1] == 0)
            if real:  # the union of the span's boxes, grown one atom at a time
                left, top = min(left, x0), min(top, y0)
                right, bottom = max(right, x1), max(bottom, y1)
            if right < 0:
                continue
            x, y, width, box_height = left, top, right - left, bottom - top
            if stop - start > 1 and width > (_JOINED_WIDEST if joins else _WIDEST) * height:
                break
            if box_height < _SHORTEST * height:
                continue
            region = atoms.labels[y : y + box_height, x : x + width]
            chosen = (region > start) & (region <= stop)
            cx, cy, width, box_height = cv2.boundingRect(chosen.view(np.uint8))  # tight
            if width == 0:
                continue
            x, y = x + cx, y + cy
            tight = (slice(y, y + box_height), slice(x, x + width))
            crop = np.where(chosen[cy : cy + box_height, cx : cx + width], atoms.ink[tight], 0)
            images.append(mnist_layout(crop.astype(np.float32), strokes_checked=True))
            spans.append((start, stop))
            sent_boxes.append(_as_sent(atoms.in_strokes((x, y, width, box_height)), scale))
            shapes.append((width / height, box_height / height))
    if not images:
        raise BadImage("no digit found: no mark in the image has a digit's size", code="no_digit")
    skippable = (boxes[:, 3] < _SHORTEST * height) | (boxes[:, 2] == 0)
    return Candidates(
        images=np.stack(images),
        spans=tuple(spans),
        boxes=np.asarray(sent_boxes, dtype=np.int32),
        widths=np.asarray([w for w, _ in shapes], dtype=np.float32),
        heights=np.asarray([h for _, h in shapes], dtype=np.float32),
        seam_cost=atoms.seam_cost,
        skippable=skippable,
        atoms=atoms.count,
        max_digits=max_digits,
    )


def _as_sent(box: tuple[float, float, float, float], scale: float) -> tuple[int, int, int, int]:
    x, y, width, height = box
    left, top = math.floor(x * scale), math.floor(y * scale)
    return (
        left,
        top,
        max(1, math.ceil((x + width) * scale) - left),
        max(1, math.ceil((y + height) * scale) - top),
    )


def _shape_scores(candidates: Candidates) -> FloatArray:
    """``(k,)`` <= 0: how unlike a digit each candidate's box is."""
    too_wide = np.maximum(candidates.widths - np.float32(_WIDE), 0)
    too_short = np.maximum(np.float32(_SHORT) - candidates.heights, 0)
    scores: FloatArray = -_WIDE_PENALTY * too_wide - _SHORT_PENALTY * too_short
    return scores


@dataclass(frozen=True)
class _Path:
    score: float
    digits: tuple[int, ...]  # candidate indices
    number: str


def choose_reading(
    candidates: Candidates, probabilities: FloatArray, *, length: int | None = None
) -> Reading:
    """The best reading given the model's ``(k, C)`` probabilities for the candidates:
    exactly ``length`` digits when given (if no path has that many, the best of any length,
    with confidence 0). Raises ``too_many_digits`` for a reading over ``max_digits``."""
    best_digit = probabilities.argmax(axis=1)
    confidence = probabilities[np.arange(len(best_digit)), best_digit]
    scores = np.log(np.maximum(confidence, _FLOOR)) + _shape_scores(candidates) + _DIGIT_BONUS
    by_start: list[list[int]] = [[] for _ in range(candidates.atoms)]
    for index, (start, _) in enumerate(candidates.spans):
        by_start[start].append(index)
    paths = _best_paths(candidates, by_start, scores, best_digit, length)
    if not paths and length is not None:
        paths = _best_paths(candidates, by_start, scores, best_digit, None)
        doubt = 0.0
    elif not paths:
        raise BadImage("no digit found: no reading fits the marks", code="no_digit")
    else:
        doubt = 1.0
    best = paths[0]
    if len(best.digits) > candidates.max_digits:
        raise too_many_digits(candidates.max_digits)
    if len(paths) > 1:
        margin = best.score - paths[1].score
        doubt = min(doubt, 1.0 / (1.0 + math.exp(-_MARGIN_SCALE * margin)))
    digits = tuple(
        ReadDigit(
            digit=int(best_digit[c]),
            confidence=float(confidence[c]),
            probabilities=probabilities[c],
            box=(
                int(candidates.boxes[c, 0]),
                int(candidates.boxes[c, 1]),
                int(candidates.boxes[c, 2]),
                int(candidates.boxes[c, 3]),
            ),
            candidate=c,
        )
        for c in best.digits
    )
    weakest = min(d.confidence for d in digits)
    return Reading(number=best.number, confidence=min(weakest, doubt), digits=digits)


def _best_paths(
    candidates: Candidates,
    by_start: list[list[int]],
    scores: FloatArray,
    best_digit: NDArray[np.intp],
    length: int | None,
) -> list[_Path]:
    """The two best paths over all atoms that read different numbers (best first), with
    ``length`` digits when given: dynamic programming over (atom, digits so far)."""
    atoms = candidates.atoms
    # state -> its best two paths; the state is the atom reached (and digits so far).
    table: list[dict[int, list[_Path]]] = [{} for _ in range(atoms + 1)]
    table[0][0] = [_Path(0.0, (), "")]
    for position in range(atoms):
        for count, paths in table[position].items():
            steps: list[tuple[int, int, float, int | None]] = [
                (candidates.spans[c][1], count + 1, float(scores[c]), c) for c in by_start[position]
            ]
            if candidates.skippable[position]:
                steps.append((position + 1, count, -_SKIP_COST, None))
            for stop, reached, gain, candidate in steps:
                if length is not None and reached > length:
                    continue
                key = reached if length is not None else 0
                if candidate is not None and position > 0:
                    gain -= _SEAM_PENALTY * float(candidates.seam_cost[position])
                extended = [
                    _Path(
                        path.score + gain,
                        path.digits + ((candidate,) if candidate is not None else ()),
                        path.number
                        + (str(int(best_digit[candidate])) if candidate is not None else ""),
                    )
                    for path in paths
                ]
                table[stop][key] = _two_best(table[stop].get(key, []) + extended)
    final = table[atoms].get(length if length is not None else 0, [])
    return [path for path in final if path.digits]


def _two_best(paths: list[_Path]) -> list[_Path]:
    """The two best paths reading different numbers."""
    ordered = sorted(paths, key=lambda p: -p.score)
    kept: list[_Path] = []
    for path in ordered:
        if all(path.number != other.number for other in kept):
            kept.append(path)
            if len(kept) == 2:
                break
    return kept
