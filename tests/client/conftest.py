"""Pictures of whole numbers for the client's tests of ``POST /read``."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image

from tests.service.conftest import SELFTEST_DIR

#: Each shipped 28x28 MNIST digit is enlarged this much, and set this far from the edges.
SCALE = 3
MARGIN = 12


@dataclass(frozen=True)
class NumberPicture:
    """A PNG of MNIST digits side by side, and where each digit's 28x28 tile lies in it."""

    png: bytes
    width: int
    height: int
    #: (left, right) of each digit's tile, in pixels of the picture, left to right.
    tiles: list[tuple[int, int]]


def number_picture(digits: Sequence[int], *, ink_on_paper: bool = True) -> NumberPicture:
    """Shipped MNIST test digits pasted side by side (their own margins keep them apart), as
    a scan of a number would show them: dark ink on white, unless ``ink_on_paper`` is false
    (MNIST's white on black)."""
    tile = 28 * SCALE
    width, height = 2 * MARGIN + tile * len(digits), 2 * MARGIN + tile
    picture = Image.new("L", (width, height), 0)
    tiles = []
    for index, digit in enumerate(digits):
        source = sorted(SELFTEST_DIR.glob(f"digit{digit}_mnist*.png"))[0]
        with Image.open(source) as shipped:
            enlarged = shipped.convert("L").resize((tile, tile), Image.Resampling.BILINEAR)
        left = MARGIN + index * tile
        picture.paste(enlarged, (left, MARGIN))
        tiles.append((left, left + tile))
    if ink_on_paper:
        picture = picture.point(lambda value: 255 - value)
    out = io.BytesIO()
    picture.save(out, format="PNG")
    return NumberPicture(out.getvalue(), width, height, tiles)


def blank_png(width: int = 300, height: int = 100) -> bytes:
    """White paper with nothing on it."""
    out = io.BytesIO()
    Image.new("L", (width, height), 255).save(out, format="PNG")
    return out.getvalue()
