"""Handwritten numbers (1-10 digits) made from MNIST digits, deterministically from a seed.

One writer per number: every digit is MNIST's own grey stroke, upscaled smoothly to one
height ``H`` (40-90 px) with small jitter (height ±6 %, baseline ±4 % of ``H``, rotation ±4°),
its stroke width moved toward the number's one pen (:mod:`benchmarks.number_glyphs`). Kinds:

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
sample sheet per kind; ``python -m benchmarks.numbers --legibility [COUNT]`` prints the
default model's per-digit accuracy on the digits cut out by their true boxes (:func:`legibility`).
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
from benchmarks.number_glyphs import Coverage, Shape, pen_width, shape_of
from benchmarks.number_glyphs import glyphs as draw_digits

Source = Literal["test", "train"]
Mask = NDArray[np.bool_]
Box = tuple[int, int, int, int]  # x, y, w, h
#: Coverage above this is ink: for the boxes, the masks and the distances between digits.
INK_LEVEL: Final = 0.25


@dataclass(frozen=True)
class NumberSample:
    """One number as a client sends it, and where each digit's ink is in the image."""

    body: bytes  # PNG or JPEG
    label: str
    kind: str
    boxes: list[Box]  # each digit's ink box (x, y, w, h), in the image's pixels, left to right
    masks: list[Mask] = field(default_factory=list, compare=False, repr=False)  # ink in box


@dataclass(frozen=True)
class _Glyph:
    coverage: Coverage
    x: int
    y: int

    @property
    def mask(self) -> Mask:
        return np.asarray(self.coverage > INK_LEVEL)


Maker = Callable[[np.random.Generator, list[Shape], str], NumberSample]


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
            return KINDS[kind](rng, [shape_of(images[i]) for i in chosen], label)
        except _NoLayout:
            continue


class _NoLayout(Exception):
    """No pair of these digits could be pushed into touching without touching a third."""


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


def spaced(rng: np.random.Generator, shapes: list[Shape], label: str) -> NumberSample:
    height = rng.uniform(40, 90)
    coverages, drops = draw_digits(rng, shapes, height, pen_width(rng, height))
    glyphs, _ = _row(coverages, drops, _natural_gaps(rng, len(shapes), height, 0.15, 0.5))
    return _canvas_export("spaced", rng, glyphs, height, label)


def tight(rng: np.random.Generator, shapes: list[Shape], label: str) -> NumberSample:
    height = rng.uniform(40, 90)
    coverages, drops = draw_digits(rng, shapes, height, pen_width(rng, height))
    gaps = [("tight", int(rng.integers(1, 4))) for _ in shapes[1:]]
    return _canvas_export("tight", rng, _row(coverages, drops, gaps)[0], height, label)


def touching(rng: np.random.Generator, shapes: list[Shape], label: str) -> NumberSample:
    height = rng.uniform(40, 90)
    coverages, drops = draw_digits(rng, shapes, height, pen_width(rng, height))
    spaced_gaps = _natural_gaps(rng, len(shapes), height, 0.15, 0.5)
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


def _form(rng: np.random.Generator, shapes: list[Shape]) -> tuple[float, list[_Glyph], int, int]:
    """A number written on a form: its height, glyphs, baseline row and line width."""
    height = rng.uniform(40, 90)
    coverages, drops = draw_digits(rng, shapes, height, pen_width(rng, height))
    glyphs, baseline = _row(coverages, drops, _natural_gaps(rng, len(shapes), height, 0.1, 0.45))
    return height, glyphs, baseline, int(rng.integers(1, 4))


def form_baseline(rng: np.random.Generator, shapes: list[Shape], label: str) -> NumberSample:
    height, glyphs, baseline, line = _form(rng, shapes)
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


def form_box(rng: np.random.Generator, shapes: list[Shape], label: str) -> NumberSample:
    height, glyphs, _, line = _form(rng, shapes)
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


def form_comb(rng: np.random.Generator, shapes: list[Shape], label: str) -> NumberSample:
    """A comb field: a box divided into one cell per digit, each digit inside its cell."""
    height, line = rng.uniform(40, 90), int(rng.integers(1, 4))
    cell_w, cell_h = height * rng.uniform(1.0, 1.2), round(height * rng.uniform(1.2, 1.5))
    margin = int(rng.integers(2, 5))
    inner = (int(cell_w) - line - 2 * margin, cell_h - line - 2 * margin)
    coverages, drops = draw_digits(rng, shapes, height, pen_width(rng, height), fit=inner)
    outside = int(rng.integers(2, max(3, int(0.6 * height))))
    edges = [outside + round(k * cell_w) for k in range(len(shapes) + 1)]
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


def photo(rng: np.random.Generator, shapes: list[Shape], label: str) -> NumberSample:
    """A phone photo of the number on paper, slightly rotated, 40-80 % of the frame's width."""
    frame_w, frame_h = ((640, 480), (800, 600))[int(rng.integers(2))]
    pen_share, mean_gap = rng.uniform(0.07, 0.12), rng.uniform(0.12, 0.45)
    gap_shares = np.clip(mean_gap * rng.uniform(0.75, 1.25, len(shapes) - 1), 0.12, 0.45)
    units = sum(s.aspect * (1 - pen_share) + pen_share for s in shapes) + gap_shares.sum()
    height = min(rng.uniform(0.4, 0.8) * frame_w / units, 0.6 * frame_h)
    coverages, drops = draw_digits(rng, shapes, height, max(2.0, pen_share * height))
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
    """``python -m benchmarks.numbers DIR``: a sample sheet ``DIR/<kind>.png`` per kind;
    ``--legibility [COUNT]``: :func:`legibility` of spaced, form_box and photo, both sources."""
    args = list(argv if argv is not None else sys.argv[1:])
    if args[:1] == ["--legibility"]:
        count = int(args[1]) if len(args) > 1 else 60
        for kind in ("spaced", "form_box", "photo"):
            for source in ("train", "test"):
                accuracy = legibility(kind, count, source)
                sys.stdout.write(f"{kind:9} {source:5} {count} numbers: {accuracy:.2f} %\n")
        return 0
    out = Path(args[0])
    out.mkdir(parents=True, exist_ok=True)
    for kind in KINDS:
        sample_sheet(kind).save(out / f"{kind}.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
