"""The kinds of image people send, made from MNIST test digits, deterministically from a seed.

Each maker takes one MNIST digit (``(28, 28)`` uint8, white ink on black) and a seed and
returns encoded image bytes of one kind:

- ``mnist_png``  the digit itself, 28x28 8-bit grey PNG;
- ``canvas_png`` a web-canvas export: 280x280 RGBA, transparent background, a thick
  anti-aliased stroke in a pen colour, the digit at a random size and place;
- ``photo_jpeg`` a phone photo of paper: dark ink on off-white, the digit small and off centre
  in 640x480, uneven light, noise, slight blur, JPEG q~80, some stored sideways with an EXIF
  orientation tag;
- ``notebook_jpeg`` a phone photo of a ballpoint digit on ruled notebook paper (lines that
  cross the digit, a thinner pen than MNIST's);
- ``scan_png`` / ``scan_tiff`` a scan: black on white, ~200 px, slight blur, 8-bit or 16-bit
  grey, palette or colour.

Used by the preprocessing tests and by ``benchmarks.preprocess_accuracy``.
"""

from __future__ import annotations

import gzip
import io
from collections.abc import Callable
from pathlib import Path
from typing import Final

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFilter

Digit = NDArray[np.uint8]
ImageMaker = Callable[[Digit, int], bytes]

#: EXIF orientation -> the transpose that stores upright pixels so that viewers, applying the
#: tag, show them upright again.
_STORE_FOR_ORIENTATION: Final[dict[int, Image.Transpose]] = {
    3: Image.Transpose.ROTATE_180,
    6: Image.Transpose.ROTATE_90,
    8: Image.Transpose.ROTATE_270,
}
_PEN_COLOURS: Final = (
    (0, 0, 0),
    (20, 40, 200),
    (200, 30, 30),
    (30, 140, 60),
    (120, 40, 160),
    (230, 120, 0),
)


def load_mnist_test(data_dir: Path) -> tuple[Digit, NDArray[np.uint8]]:
    """MNIST test images ``(10000, 28, 28)`` uint8 and labels ``(10000,)`` from the IDX files."""
    images = _read_idx(data_dir / "t10k-images-idx3-ubyte.gz")
    labels = _read_idx(data_dir / "t10k-labels-idx1-ubyte.gz")
    return images, labels


def _read_idx(path: Path) -> NDArray[np.uint8]:
    """An unsigned-byte IDX file (gzip'd or not) as an array of its declared shape."""
    raw = path.read_bytes()
    if path.suffix == ".gz":
        raw = gzip.decompress(raw)
    if raw[:2] != b"\x00\x00" or raw[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file")
    ndim = raw[3]
    shape = tuple(int(n) for n in np.frombuffer(raw[4 : 4 + 4 * ndim], dtype=">u4"))
    return np.frombuffer(raw[4 + 4 * ndim :], dtype=np.uint8).reshape(shape)


def mnist_png(digit: Digit, seed: int) -> bytes:
    """The MNIST digit as it is: 28x28 8-bit grey PNG, white on black (``seed`` unused)."""
    del seed
    return _encode(Image.fromarray(digit, mode="L"), "PNG")


def canvas_png(digit: Digit, seed: int) -> bytes:
    """A web-canvas export: 280x280 RGBA, transparent, thick coloured anti-aliased stroke."""
    rng = np.random.default_rng(seed)
    canvas = 280
    size = int(rng.integers(140, 261))  # the MNIST field's side on the canvas
    stroke = _upscaled_mask(digit, size, dilate=int(rng.integers(0, 4)) * 2 + 1)
    alpha = Image.new("L", (canvas, canvas), 0)
    slack = canvas - size
    alpha.paste(stroke, (int(rng.integers(0, slack + 1)), int(rng.integers(0, slack + 1))))
    colour = _PEN_COLOURS[int(rng.integers(len(_PEN_COLOURS)))]
    # Canvas exports keep transparent pixels black: only the alpha says where the ink is.
    rgba = Image.merge("RGBA", (*Image.new("RGB", alpha.size, colour).split(), alpha))
    rgba = Image.composite(rgba, Image.new("RGBA", alpha.size, (0, 0, 0, 0)), alpha)
    return _encode(rgba, "PNG")


def photo_jpeg(digit: Digit, seed: int) -> bytes:
    """A phone photo of a digit on paper, 640x480 JPEG, some stored sideways with EXIF."""
    rng = np.random.default_rng(seed)
    width, height = 640, 480
    size = int(rng.integers(110, 260))  # the MNIST field's side in the photo
    ink = np.asarray(_upscaled_mask(digit, size, dilate=1), dtype=np.float32) / 255.0
    coverage = np.zeros((height, width), dtype=np.float32)
    top, left = int(rng.integers(0, height - size)), int(rng.integers(0, width - size))
    coverage[top : top + size, left : left + size] = ink

    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * cols / width + np.sin(angle) * rows / height) - 0.5
    vignette = ((cols / width - 0.5) ** 2 + (rows / height - 0.5) ** 2) * 0.6
    paper = rng.uniform(170, 235) * (1.0 + rng.uniform(0.1, 0.35) * ramp - vignette)
    ink_level = rng.uniform(15, 70)
    pixels = paper * (1.0 - coverage) + ink_level * coverage
    pixels += rng.normal(0.0, rng.uniform(2.0, 6.0), size=pixels.shape)
    tint = rng.uniform(0.92, 1.0, size=3)  # warm/cool paper and light
    rgb = np.clip(pixels[..., None] * tint, 0, 255).astype(np.uint8)
    image = Image.fromarray(rgb, mode="RGB").filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 1.2)))

    orientation = int(rng.choice([1, 1, 3, 6, 8]))
    exif = Image.Exif()
    if orientation != 1:
        image = image.transpose(_STORE_FOR_ORIENTATION[orientation])
        exif[0x0112] = orientation
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=int(rng.integers(75, 88)), exif=exif.tobytes())
    return buffer.getvalue()


def notebook_jpeg(digit: Digit, seed: int) -> bytes:
    """A phone photo of a ballpoint digit on ruled notebook paper, 640x480 JPEG.

    Light-blue ruled lines (slightly tilted, as the phone is never square to the page), a red
    margin line on some, blue-black ink from a thinner pen than MNIST's, crossing the lines.
    """
    rng = np.random.default_rng(seed)
    width, height = 640, 480
    page = Image.new("RGB", (width, height), tuple(int(v) for v in rng.integers(215, 245, 3)))
    draw = ImageDraw.Draw(page)
    slope = float(np.tan(np.radians(rng.uniform(-2.5, 2.5))))
    gap = int(rng.integers(24, 44))
    for y in range(int(rng.integers(0, gap)) - 40, height + 40, gap):
        draw.line((0, y, width, y + width * slope), fill=(150, 180, 230), width=2)
    if rng.random() < 0.4:
        x = int(rng.integers(40, 120))
        draw.line((x, 0, x - height * slope, height), fill=(225, 120, 120), width=2)
    size = int(rng.integers(110, 240))
    pen = _upscaled_mask(digit, size, dilate=1, threshold=int(rng.integers(110, 220)))
    blue_black = rng.integers(10, 60, 3) + np.array([0, 0, 40])
    ink = Image.new("RGB", pen.size, tuple(int(v) for v in blue_black))
    page.paste(ink, (int(rng.integers(0, width - size)), int(rng.integers(0, height - size))), pen)
    blurred = np.asarray(page.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 1.0))), np.float64)
    ramp = np.linspace(rng.uniform(0.75, 1.0), rng.uniform(0.9, 1.05), width)  # uneven light
    pixels = blurred * ramp[None, :, None] + rng.normal(0.0, 3.0, blurred.shape)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="RGB")
    return _encode(image, "JPEG", quality=int(rng.integers(75, 90)))


def scan_png(digit: Digit, seed: int) -> bytes:
    """A scan: black on white, ~200 px, slightly blurred; 8-bit grey, palette or 16-bit grey."""
    rng = np.random.default_rng(seed)
    grey = _scan_pixels(digit, rng)  # (H, W) float in [0, 1], white paper
    match int(rng.integers(3)):
        case 0:
            image = Image.fromarray(np.rint(grey * 255).astype(np.uint8), mode="L")
        case 1:
            image = Image.fromarray(np.rint(grey * 255).astype(np.uint8), mode="L")
            image = image.convert("RGB").quantize(colors=16)
        case _:
            image = Image.fromarray(np.rint(grey * 65535).astype(np.uint16))
    return _encode(image, "PNG")


def scan_tiff(digit: Digit, seed: int) -> bytes:
    """A scan saved as TIFF: 8-bit grey, 16-bit grey or RGB."""
    rng = np.random.default_rng(seed)
    grey = _scan_pixels(digit, rng)
    match int(rng.integers(3)):
        case 0:
            image = Image.fromarray(np.rint(grey * 255).astype(np.uint8), mode="L")
        case 1:
            image = Image.fromarray(np.rint(grey * 65535).astype(np.uint16))
        case _:
            image = Image.fromarray(np.rint(grey * 255).astype(np.uint8), mode="L").convert("RGB")
    return _encode(image, "TIFF")


KINDS: Final[dict[str, ImageMaker]] = {
    "mnist_png": mnist_png,
    "canvas_png": canvas_png,
    "photo_jpeg": photo_jpeg,
    "notebook_jpeg": notebook_jpeg,
    "scan_png": scan_png,
    "scan_tiff": scan_tiff,
}


def _scan_pixels(digit: Digit, rng: np.random.Generator) -> NDArray[np.float64]:
    """Black-on-white page ~200 px with the digit upscaled and slightly blurred, in [0, 1]."""
    side = int(rng.integers(180, 241))
    size = int(rng.integers(int(side * 0.6), side))
    ink = Image.fromarray(digit, mode="L").resize((size, size), Image.Resampling.BICUBIC)
    page = Image.new("L", (side, side), 0)
    slack = side - size
    page.paste(ink, (int(rng.integers(0, slack + 1)), int(rng.integers(0, slack + 1))))
    page = page.filter(ImageFilter.GaussianBlur(rng.uniform(0.4, 1.0)))
    coverage = np.asarray(page, dtype=np.float64) / 255.0
    paper, black = rng.uniform(0.9, 1.0), rng.uniform(0.0, 0.15)
    grey = paper * (1.0 - coverage) + black * coverage + rng.normal(0.0, 0.01, coverage.shape)
    return np.clip(grey, 0.0, 1.0)


def _upscaled_mask(digit: Digit, size: int, *, dilate: int, threshold: int = 110) -> Image.Image:
    """The digit upscaled to ``size`` px as an anti-aliased 8-bit stroke mask, thickened by a
    ``dilate`` px max filter (odd; 1 = none); a higher ``threshold`` draws a thinner pen."""
    # Threshold at 4x the target size, then box down: a crisp pen stroke with smooth edges.
    big = Image.fromarray(digit, mode="L").resize((size * 4, size * 4), Image.Resampling.BICUBIC)
    crisp = big.point(lambda v: 255 if v >= threshold else 0)
    if dilate > 1:
        crisp = crisp.resize((size, size), Image.Resampling.BOX).filter(
            ImageFilter.MaxFilter(dilate)
        )
        return crisp.filter(ImageFilter.GaussianBlur(0.6))
    return crisp.resize((size, size), Image.Resampling.BOX)


def _encode(image: Image.Image, fmt: str, **options: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()
