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
  grey, palette or colour;
- ``canvas_wide_png`` a wide web-canvas export (a signature-pad-like field): 400x200 RGBA,
  transparent, one digit in a thick anti-aliased coloured pen somewhere in it;
- ``paper_jpeg`` paper scanned or photographed small (a cropped form field, a thumbnail):
  64-600 px a side, JPEG or PNG, dark ink on off-white, mild noise and light gradient, the
  digit filling much of it;
- ``phone_photo_jpeg`` a phone photo of a note as phones store it: 1-2 MP JPEG (1600x1200,
  1200x1600 or 1920x1080, some sideways with an EXIF orientation), the digit 10-35 % of the
  shorter side, uneven light, noise, quality 80-92;
- ``odd_encoding`` the digit on paper (or white on black) in one of the encodings clients also
  send, by seed: 16-bit grey PNG, palette PNG with a transparent background, LA PNG, BMP
  (24- and 8-bit), compressed TIFF, WEBP (lossy, lossless), GIF (one frame, two frames),
  CMYK, progressive and EXIF-rotated JPEG.

The first six are unchanged since the accuracy figures of the README were measured, so that
those stay comparable. Used by the preprocessing tests, ``benchmarks.preprocess_accuracy`` and
the load benchmark's realistic mix (``benchmarks.mix``).
"""

from __future__ import annotations

import gzip
import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFilter

Digit = NDArray[np.uint8]
_REPOSITORY: Final = Path(__file__).resolve().parents[1]
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


def default_data_dir() -> Path:
    """Where the MNIST IDX files are: ``$DIGITS_DATA_DIR``, else ``../shared/data/mnist`` beside
    the repository (as ``make test`` and ``make train`` read them)."""
    return Path(os.environ.get("DIGITS_DATA_DIR", _REPOSITORY.parent / "shared/data/mnist"))


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
    return _canvas_export(digit, np.random.default_rng(seed), (280, 280), sizes=(140, 261))


def canvas_wide_png(digit: Digit, seed: int) -> bytes:
    """A wide web-canvas export (a signature-pad-like field): 400x200 RGBA, transparent, one
    digit in a thick coloured anti-aliased stroke anywhere in it."""
    return _canvas_export(digit, np.random.default_rng(seed), (400, 200), sizes=(100, 201))


def _canvas_export(
    digit: Digit, rng: np.random.Generator, canvas: tuple[int, int], *, sizes: tuple[int, int]
) -> bytes:
    """An RGBA PNG of ``canvas`` (width, height), transparent but for the digit, drawn with a
    pen of a random colour and thickness, its MNIST field ``sizes`` px (low, high) a side."""
    width, height = canvas
    size = int(rng.integers(*sizes))  # the MNIST field's side on the canvas
    stroke = _upscaled_mask(digit, size, dilate=int(rng.integers(0, 4)) * 2 + 1)
    alpha = Image.new("L", canvas, 0)
    alpha.paste(
        stroke, (int(rng.integers(0, width - size + 1)), int(rng.integers(0, height - size + 1)))
    )
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
    image = _photographed(coverage, rng, _PHOTO_LIGHT)
    return _oriented_jpeg(image, rng, orientations=(1, 1, 3, 6, 8), qualities=(75, 88))


def phone_photo_jpeg(digit: Digit, seed: int) -> bytes:
    """A phone photo of a note as phones store it: 1-2 MP JPEG, quality 80-92, 3 in 5 sideways
    with an EXIF orientation; the digit, from a pen thinner than MNIST's, 10-35 % of the
    shorter side somewhere on the paper, uneven light, noise."""
    rng = np.random.default_rng(seed)
    width, height = _PHONE_FRAMES[int(rng.integers(len(_PHONE_FRAMES)))]
    digit_side = rng.uniform(0.10, 0.35) * min(width, height)
    size = int(digit_side * _FIELD_PER_BOX)  # the MNIST field's side in the photo
    threshold = int(rng.integers(110, 200))
    coverage = _placed(
        _upscaled_mask(digit, size, dilate=1, threshold=threshold), rng, width, height
    )
    image = _photographed(coverage, rng, _PHOTO_LIGHT)
    return _oriented_jpeg(image, rng, orientations=(1, 1, 3, 6, 8), qualities=(80, 93))


def paper_jpeg(digit: Digit, seed: int) -> bytes:
    """Paper scanned or photographed small (a form field cropped by the client, a thumbnail):
    64-600 px a side, JPEG (2 in 3) or PNG, colour or grey, dark ink on off-white with mild
    noise and a light gradient, the digit filling much of it."""
    rng = np.random.default_rng(seed)
    short = int(rng.integers(64, 601))
    long = min(600, int(short * rng.uniform(1.0, 1.5)))
    width, height = (long, short) if rng.random() < 0.5 else (short, long)
    size = int(rng.uniform(0.55, 0.95) * short)  # the MNIST field's side
    threshold = int(rng.integers(90, 170))
    coverage = _placed(
        _upscaled_mask(digit, size, dilate=1, threshold=threshold), rng, width, height
    )
    image = _photographed(coverage, rng, _SMALL_PAPER_LIGHT)
    if rng.random() < 0.4:
        image = image.convert("L")
    if rng.random() < 2 / 3:
        return _encode(image, "JPEG", quality=int(rng.integers(60, 96)))
    return _encode(image, "PNG")


def odd_encoding(digit: Digit, seed: int) -> bytes:
    """The digit on paper, 1 in 4 white on black, in one of :data:`ODD_ENCODINGS`: the one at
    ``seed`` modulo their number, so that consecutive seeds go through every one of them."""
    rng = np.random.default_rng(seed)
    encoding = odd_encoding_of(seed)
    coverage = _scan_coverage(digit, rng)
    grey = _paper_grey(coverage, rng)
    if rng.random() < 0.25:
        grey = 1.0 - grey
    return encoding.encode(_OddPicture(coverage, grey), rng)


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


@dataclass(frozen=True)
class _OddPicture:
    """One digit on a ~200 px page, before it is encoded."""

    coverage: NDArray[np.float64]  # (H, W) where the ink is, in [0, 1]
    grey: NDArray[np.float64]  # (H, W) the opaque picture (paper and ink), in [0, 1]

    def grey8(self) -> Image.Image:
        return Image.fromarray(np.rint(self.grey * 255).astype(np.uint8), mode="L")

    def rgb(self, rng: np.random.Generator) -> Image.Image:
        """The picture in colour: paper and light slightly warm or cool."""
        tint = rng.uniform(0.9, 1.0, size=3)
        pixels = np.clip(np.rint(self.grey[..., None] * 255 * tint), 0, 255).astype(np.uint8)
        return Image.fromarray(pixels, mode="RGB")


@dataclass(frozen=True)
class OddEncoding:
    """An encoding of :func:`odd_encoding`, and what Pillow should open it as."""

    name: str
    format: str  # Image.format
    modes: tuple[str, ...]  # Image.mode, one of these
    encode: Callable[[_OddPicture, np.random.Generator], bytes]
    frames: int = 1


def _png_16bit_grey(picture: _OddPicture, rng: np.random.Generator) -> bytes:
    return _encode(Image.fromarray(np.rint(picture.grey * 65535).astype(np.uint16)), "PNG")


def _png_palette_transparent(picture: _OddPicture, rng: np.random.Generator) -> bytes:
    """16 shades from white to a pen colour; index 0, black, is the transparent background
    (as icon editors and canvas exports keep it): only the tRNS chunk says it is not ink."""
    shades = 15
    share = np.arange(shades + 1, dtype=np.float64)[:, None] / shades  # (16, 1)
    pen = np.array(_PEN_COLOURS[int(rng.integers(len(_PEN_COLOURS)))], dtype=np.float64)
    palette = np.rint(255.0 * (1.0 - share) + pen * share).astype(np.uint8)  # (16, 3)
    palette[0] = 0
    image = Image.fromarray(np.rint(picture.coverage * shades).astype(np.uint8), mode="P")
    image.putpalette(palette.tobytes())
    return _encode(image, "PNG", transparency=0)


def _png_grey_alpha(picture: _OddPicture, rng: np.random.Generator) -> bytes:
    """Grey ink whose alpha is its coverage, on a transparent black background."""
    alpha = np.rint(picture.coverage * 255).astype(np.uint8)
    grey = np.where(alpha > 0, np.uint8(rng.integers(0, 80)), np.uint8(0)).astype(np.uint8)
    return _encode(Image.merge("LA", (Image.fromarray(grey), Image.fromarray(alpha))), "PNG")


def _bmp_24bit(picture: _OddPicture, rng: np.random.Generator) -> bytes:
    return _encode(picture.rgb(rng), "BMP")


def _bmp_8bit(picture: _OddPicture, rng: np.random.Generator) -> bytes:
    return _encode(picture.grey8(), "BMP")


def _tiff_compressed(picture: _OddPicture, rng: np.random.Generator) -> bytes:
    """LZW colour, deflate grey, or a 1-bit CCITT group 4 scan (what fax-like scanners write)."""
    match int(rng.integers(3)):
        case 0:
            return _encode(picture.rgb(rng), "TIFF", compression="tiff_lzw")
        case 1:
            return _encode(picture.grey8(), "TIFF", compression="tiff_adobe_deflate")
        case _:
            bilevel = picture.grey8().point(lambda v: 255 if v >= 128 else 0).convert("1")
            return _encode(bilevel, "TIFF", compression="group4")


def _webp_lossy(picture: _OddPicture, rng: np.random.Generator) -> bytes:
    return _encode(picture.rgb(rng), "WEBP", quality=int(rng.integers(50, 91)))


def _webp_lossless(picture: _OddPicture, rng: np.random.Generator) -> bytes:
    return _encode(picture.rgb(rng), "WEBP", lossless=True)


def _gif_frame(picture: _OddPicture, rng: np.random.Generator) -> Image.Image:
    return picture.rgb(rng).quantize(colors=int(rng.choice([4, 16, 64])))


def _gif(picture: _OddPicture, rng: np.random.Generator) -> bytes:
    return _encode(_gif_frame(picture, rng), "GIF")


def _gif_two_frames(picture: _OddPicture, rng: np.random.Generator) -> bytes:
    """An animation whose first frame is the digit and whose second is the page without it."""
    first = _gif_frame(picture, rng)
    blank = Image.new("P", first.size, int(np.asarray(first)[0, 0]))
    blank.putpalette(first.getpalette() or [])
    buffer = io.BytesIO()
    first.save(buffer, format="GIF", save_all=True, append_images=[blank], duration=500, loop=0)
    return buffer.getvalue()


def _jpeg_cmyk(picture: _OddPicture, rng: np.random.Generator) -> bytes:
    """What print workflows export: a CMYK JPEG (Adobe APP14 marker, inverted channels)."""
    return _encode(picture.rgb(rng).convert("CMYK"), "JPEG", quality=int(rng.integers(80, 96)))


def _jpeg_progressive(picture: _OddPicture, rng: np.random.Generator) -> bytes:
    image = picture.rgb(rng) if rng.random() < 0.5 else picture.grey8()
    quality = int(rng.integers(75, 93))
    return _encode(image, "JPEG", quality=quality, progressive=True, optimize=True)


def _jpeg_exif_rotated(picture: _OddPicture, rng: np.random.Generator) -> bytes:
    return _oriented_jpeg(picture.rgb(rng), rng, orientations=(3, 6, 8), qualities=(80, 93))


ODD_ENCODINGS: Final[tuple[OddEncoding, ...]] = (
    OddEncoding("16-bit grey PNG", "PNG", ("I;16",), _png_16bit_grey),
    OddEncoding("palette PNG, transparent background", "PNG", ("P",), _png_palette_transparent),
    OddEncoding("grey + alpha (LA) PNG", "PNG", ("LA",), _png_grey_alpha),
    OddEncoding("24-bit BMP", "BMP", ("RGB",), _bmp_24bit),
    OddEncoding("8-bit BMP", "BMP", ("L", "P"), _bmp_8bit),
    OddEncoding(
        "compressed TIFF (LZW, deflate, group 4)", "TIFF", ("RGB", "L", "1"), _tiff_compressed
    ),
    OddEncoding("lossy WEBP", "WEBP", ("RGB",), _webp_lossy),
    OddEncoding("lossless WEBP", "WEBP", ("RGB",), _webp_lossless),
    OddEncoding("palette GIF", "GIF", ("P", "L"), _gif),
    OddEncoding("two-frame GIF", "GIF", ("P", "L"), _gif_two_frames, frames=2),
    OddEncoding("CMYK JPEG", "JPEG", ("CMYK",), _jpeg_cmyk),
    OddEncoding("progressive JPEG", "JPEG", ("RGB", "L"), _jpeg_progressive),
    OddEncoding("EXIF-rotated JPEG", "JPEG", ("RGB",), _jpeg_exif_rotated),
)


def odd_encoding_of(seed: int) -> OddEncoding:
    """The encoding :func:`odd_encoding` uses for ``seed``."""
    return ODD_ENCODINGS[seed % len(ODD_ENCODINGS)]


KINDS: Final[dict[str, ImageMaker]] = {
    "mnist_png": mnist_png,
    "canvas_png": canvas_png,
    "photo_jpeg": photo_jpeg,
    "notebook_jpeg": notebook_jpeg,
    "scan_png": scan_png,
    "scan_tiff": scan_tiff,
    "canvas_wide_png": canvas_wide_png,
    "paper_jpeg": paper_jpeg,
    "phone_photo_jpeg": phone_photo_jpeg,
    "odd_encoding": odd_encoding,
}

#: Signatures -> the Content-Type a client sends (browsers and HTTP libraries guess it from
#: the file's bytes or name; for these formats both agree).
_CONTENT_TYPES: Final[tuple[tuple[bytes, str], ...]] = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"BM", "image/bmp"),
    (b"II*\x00", "image/tiff"),
    (b"MM\x00*", "image/tiff"),
)


def content_type(body: bytes) -> str:
    """The HTTP Content-Type a client would send with ``body``, sniffed from its first bytes;
    ``application/octet-stream`` for anything else."""
    if body[:4] == b"RIFF" and body[8:12] == b"WEBP":
        return "image/webp"
    for signature, media_type in _CONTENT_TYPES:
        if body.startswith(signature):
            return media_type
    return "application/octet-stream"


def _scan_pixels(digit: Digit, rng: np.random.Generator) -> NDArray[np.float64]:
    """Black-on-white page ~200 px with the digit upscaled and slightly blurred, in [0, 1]."""
    return _paper_grey(_scan_coverage(digit, rng), rng)


def _scan_coverage(digit: Digit, rng: np.random.Generator) -> NDArray[np.float64]:
    """Where the ink is on a ~200 px square page, in [0, 1]: the digit upscaled, blurred."""
    side = int(rng.integers(180, 241))
    size = int(rng.integers(int(side * 0.6), side))
    ink = Image.fromarray(digit, mode="L").resize((size, size), Image.Resampling.BICUBIC)
    page = Image.new("L", (side, side), 0)
    slack = side - size
    page.paste(ink, (int(rng.integers(0, slack + 1)), int(rng.integers(0, slack + 1))))
    page = page.filter(ImageFilter.GaussianBlur(rng.uniform(0.4, 1.0)))
    return np.asarray(page, dtype=np.float64) / 255.0


def _paper_grey(coverage: NDArray[np.float64], rng: np.random.Generator) -> NDArray[np.float64]:
    """Ink ``coverage`` as black on white paper, a little noise, in [0, 1]."""
    paper, black = rng.uniform(0.9, 1.0), rng.uniform(0.0, 0.15)
    grey = paper * (1.0 - coverage) + black * coverage + rng.normal(0.0, 0.01, coverage.shape)
    return np.clip(grey, 0.0, 1.0)


def _placed(
    stroke: Image.Image, rng: np.random.Generator, width: int, height: int
) -> NDArray[np.float32]:
    """A ``(height, width)`` ink coverage in [0, 1] with ``stroke`` at a random place."""
    coverage = np.zeros((height, width), dtype=np.float32)
    top = int(rng.integers(0, height - stroke.height + 1))
    left = int(rng.integers(0, width - stroke.width + 1))
    ink = np.asarray(stroke, dtype=np.float32) / 255.0
    coverage[top : top + stroke.height, left : left + stroke.width] = ink
    return coverage


@dataclass(frozen=True)
class _Lighting:
    """How paper is lit and recorded: ranges (low, high) drawn for each image."""

    paper: tuple[float, float]  # the paper's 8-bit level
    gradient: tuple[float, float]  # the light's linear fall-off across the frame
    vignette: float  # darkening at the corners, times the squared distance from the centre
    ink: tuple[float, float]  # the ink's 8-bit level
    noise: tuple[float, float]  # sensor noise, standard deviation in 8-bit levels
    blur: tuple[float, float]  # Gaussian radius, px


#: A phone held over a page: light falling off to one side, darker corners, sensor noise.
_PHOTO_LIGHT: Final = _Lighting(
    paper=(170, 235),
    gradient=(0.1, 0.35),
    vignette=0.6,
    ink=(15, 70),
    noise=(2, 6),
    blur=(0.5, 1.2),
)
#: A scanner or a well-lit close-up: nearly even light, a little noise.
_SMALL_PAPER_LIGHT: Final = _Lighting(
    paper=(205, 245),
    gradient=(0.03, 0.15),
    vignette=0.1,
    ink=(10, 80),
    noise=(1, 4),
    blur=(0.3, 0.8),
)
#: Frames phones store (width, height) before any EXIF rotation: 4:3 either way, 16:9.
_PHONE_FRAMES: Final = ((1600, 1200), (1200, 1600), (1920, 1080))
#: An MNIST field is 28 px for a 20 px digit: the field's side for a digit of a given size.
_FIELD_PER_BOX: Final = 28 / 20


def _photographed(
    coverage: NDArray[np.float32], rng: np.random.Generator, light: _Lighting
) -> Image.Image:
    """Ink ``coverage`` ``(H, W)`` on tinted paper under ``light``, as an RGB image."""
    height, width = coverage.shape
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * cols / width + np.sin(angle) * rows / height) - 0.5
    vignette = ((cols / width - 0.5) ** 2 + (rows / height - 0.5) ** 2) * light.vignette
    paper = rng.uniform(*light.paper) * (1.0 + rng.uniform(*light.gradient) * ramp - vignette)
    ink_level = rng.uniform(*light.ink)
    pixels = paper * (1.0 - coverage) + ink_level * coverage
    pixels += rng.normal(0.0, rng.uniform(*light.noise), size=pixels.shape)
    tint = rng.uniform(0.92, 1.0, size=3)  # warm/cool paper and light
    rgb = np.clip(pixels[..., None] * tint, 0, 255).astype(np.uint8)
    return Image.fromarray(rgb, mode="RGB").filter(
        ImageFilter.GaussianBlur(rng.uniform(*light.blur))
    )


def _oriented_jpeg(
    image: Image.Image,
    rng: np.random.Generator,
    *,
    orientations: tuple[int, ...],
    qualities: tuple[int, int],
) -> bytes:
    """``image`` as a JPEG stored as a phone stores it: with an orientation drawn from
    ``orientations`` (1: upright, no tag; else the pixels sideways and the EXIF tag to undo it)."""
    orientation = int(rng.choice(orientations))
    exif = Image.Exif()
    if orientation != 1:
        image = image.transpose(_STORE_FOR_ORIENTATION[orientation])
        exif[0x0112] = orientation
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=int(rng.integers(*qualities)), exif=exif.tobytes())
    return buffer.getvalue()


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


def _encode(image: Image.Image, fmt: str, **options: int | str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()
