"""The single images the load benchmark posts, committed beside this module so that posting
them needs no data set:

- ``mnist_test_0009.png``: MNIST test digit #9 (a 9), the 317-byte 28x28 8-bit grey PNG that
  Pillow writes with its default settings. Laid out exactly as MNIST, it takes the service's
  shortcut for MNIST digits (no cleaning, cropping or centring): the best case.
- ``digit7_28px.png``: MNIST test digit #0 (a 7), still 28x28 white on black, but scaled to a
  16 px box and moved off centre (:func:`off_centre_digit`), as a client that draws or crops
  its own 28x28 image sends it: the service runs its whole pipeline on it. The LeNet-5 rows
  post this one. Regenerate it with ``python -m benchmarks.digit_image`` (needs MNIST).
"""

from __future__ import annotations

import argparse
import io
import logging
from pathlib import Path
from typing import Final

import numpy as np
from PIL import Image

from benchmarks.image_kinds import Digit, default_data_dir, load_mnist_test

logger = logging.getLogger(__name__)

BENCHMARK_PNG = Path(__file__).with_name("mnist_test_0009.png")
OFF_CENTRE_PNG = Path(__file__).with_name("digit7_28px.png")
CONTENT_TYPE = "image/png"

#: MNIST test digit #0, a 7 (the service's self-test uses #4089, another 7).
OFF_CENTRE_INDEX: Final = 0
#: Its ink box's longer side (MNIST's is 20) and where the box's top-left corner goes
#: (row, column): up and to the right of where MNIST would centre it.
OFF_CENTRE_BOX: Final = 16
OFF_CENTRE_AT: Final = (3, 10)


def benchmark_png() -> bytes:
    return BENCHMARK_PNG.read_bytes()


def off_centre_digit(
    digit: Digit, *, box: int = OFF_CENTRE_BOX, at: tuple[int, int] = OFF_CENTRE_AT
) -> bytes:
    """A 28x28 8-bit grey PNG of an MNIST ``digit`` (white on black) whose ink is scaled so
    that its longer side is ``box`` px and placed with its top-left corner at ``at``."""
    rows = np.flatnonzero(digit.any(axis=1))
    cols = np.flatnonzero(digit.any(axis=0))
    ink = Image.fromarray(digit[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1])
    scale = box / max(ink.size)
    size = (max(1, round(ink.width * scale)), max(1, round(ink.height * scale)))
    field = Image.new("L", digit.shape[::-1], 0)
    field.paste(ink.resize(size, Image.Resampling.BILINEAR), (at[1], at[0]))
    buffer = io.BytesIO()
    field.save(buffer, format="PNG")
    return buffer.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.digit_image", description=f"Writes {OFF_CENTRE_PNG.name}."
    )
    parser.add_argument("--data-dir", type=Path, default=default_data_dir())
    parser.add_argument("--out", type=Path, default=OFF_CENTRE_PNG)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    images, labels = load_mnist_test(args.data_dir)
    args.out.write_bytes(off_centre_digit(images[OFF_CENTRE_INDEX]))
    logger.info(
        "wrote %s: MNIST test #%d, a %d", args.out, OFF_CENTRE_INDEX, labels[OFF_CENTRE_INDEX]
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
