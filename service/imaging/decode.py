"""Client bytes -> one grey picture, upright, opaque, at the working resolution.

The only place that parses what clients send. Its protections, in order:

1. the format is sniffed from the bytes (:mod:`service.imaging.formats`);
2. Pillow reads the header alone (no pixels), and images declaring more than ``max_pixels``
   pixels are refused with 413 before anything is allocated (decompression bombs);
3. OpenCV decodes the pixels. It refuses truncated files in every format, applies no
   orientation of its own here, and decodes JPEGs at a reduced DCT scale straight to grey,
   which is most of the speed: a 1-2 MP phone photo decodes at 1/4 or 1/8 of its size;
4. whatever OpenCV does not decode (TIFF, grey PNGs with a transparent colour, anything it
   returns nothing for) is decoded by Pillow, whose failures become 400 ``corrupt_image``.

Then, on a picture already reduced to about :data:`WORK_PIXELS`: the EXIF orientation,
transparency flattened onto a backdrop, any depth and colour to float grey in [0, 1].

Slightly over the house's ~300 lines: it is the one parser of untrusted bytes, kept whole so
that every protection above can be read, and reviewed, in one place.
"""

from __future__ import annotations

import io
import logging
import math
import struct
import zlib
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import cv2
import numpy as np
from numpy.typing import NDArray
from PIL import Image

from service.errors import BadImage, PayloadTooLarge, ServiceError, UnsupportedMediaType
from service.imaging.formats import ALLOWED_FORMATS, ImageFormat, sniff

logger = logging.getLogger(__name__)

FloatArray = NDArray[np.float32]
#: (H, W) or (H, W, C) as a decoder returns them, BGR(A) order: 8 or 16 bits, or float32.
Pixels = NDArray[np.uint8] | NDArray[np.uint16] | NDArray[np.float32]
#: A decoded grey picture: 8-bit (0-255), or float32 in [0, 1] for deeper sources.
Grey = NDArray[np.uint8] | NDArray[np.float32]
Reducible = TypeVar("Reducible", bound=NDArray[Any])

#: Pictures are reduced to about this many pixels right after decoding: enough for a digit
#: that fills a tenth of a photo, and it bounds the per-request work and memory whatever the
#: upload (300x300 leaves 280x280 canvas exports and half-scale 640x480 photos as they are).
WORK_PIXELS: Final = 300 * 300
#: JPEGs are decoded at the smallest DCT scale (1/2, 1/4, 1/8) that keeps both sides at least
#: this long: the shorter side of the working resolution, so no detail that would be kept is
#: lost, and a 640x480 photo decodes straight to 320x240.
JPEG_MIN_SIDE: Final = 240
_JPEG_REDUCED: Final = {
    2: cv2.IMREAD_REDUCED_GRAYSCALE_2,
    4: cv2.IMREAD_REDUCED_GRAYSCALE_4,
    8: cv2.IMREAD_REDUCED_GRAYSCALE_8,
}
#: Pillow modes OpenCV may decode straight to 8-bit grey: nothing is lost by doing so.
_GREY_SAFE_MODES: Final = frozenset({"1", "L", "RGB", "CMYK", "YCbCr"})
#: A visible pen brighter than this (8-bit luma) is light ink: its backdrop is black.
_LIGHT_INK: Final = 160
#: EXIF orientation -> what makes the stored pixels upright (as Pillow's exif_transpose).
_UPRIGHT: Final = {
    2: lambda a: cv2.flip(a, 1),
    3: lambda a: cv2.rotate(a, cv2.ROTATE_180),
    4: lambda a: cv2.flip(a, 0),
    5: lambda a: cv2.transpose(a),
    6: lambda a: cv2.rotate(a, cv2.ROTATE_90_CLOCKWISE),
    7: lambda a: cv2.flip(cv2.transpose(a), -1),
    8: lambda a: cv2.rotate(a, cv2.ROTATE_90_COUNTERCLOCKWISE),
}

#: Exceptions Pillow's decoders raise on malformed input (UnidentifiedImageError is an OSError).
_DECODE_ERRORS: Final = (
    OSError,
    ValueError,
    SyntaxError,
    EOFError,
    struct.error,
    zlib.error,
    IndexError,
    KeyError,
    TypeError,
    ZeroDivisionError,
    OverflowError,
)

# OpenCV logs a warning to stderr for every malformed file it is handed; those are the
# clients' mistakes, answered 400, not the service's to log.
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
# Pictures are small and each is one task of the service's decode pool, which spreads them
# over the cores: OpenCV's own worker threads would only compete with it.
cv2.setNumThreads(1)


@dataclass(frozen=True)
class Picture:
    """A decoded picture: grey, upright, opaque, reduced to about :data:`WORK_PIXELS`."""

    #: (H, W): uint8 (0-255) for 8-bit sources, the common case, and float32 in [0, 1] for
    #: deeper ones; 0 is black. Converting 8-bit to float is left to the cleaning step,
    #: which does it in the same pass as its first step.
    grey: Grey
    #: Pixels of the image as sent (after its EXIF orientation) per pixel of ``grey``.
    scale: float


def decode(data: bytes, *, max_pixels: int, work_pixels: int = WORK_PIXELS) -> Picture:
    """Decode client bytes (first frame of an animation) into a :class:`Picture` of about
    ``work_pixels`` at most (reading a whole number wants more than one digit does).

    - ``BadImage`` (400): empty body (``empty_image``); bytes that are not a raster image we
      recognise (``not_an_image``); an accepted format that is truncated, corrupt or
      zero-sized (``corrupt_image``).
    - ``UnsupportedMediaType`` (415): a recognised raster format that is not accepted.
    - ``PayloadTooLarge`` (413, ``image_too_large``): the header declares more than
      ``max_pixels`` pixels; decided before any pixel is decoded.
    """
    if not data:
        raise BadImage("the request body is empty: send the image's bytes", code="empty_image")
    image_format = sniff(data)
    header = read_header(data, image_format, max_pixels=max_pixels)
    pixels = _decode_with_opencv(data, image_format, header, work_pixels)
    if pixels is None:
        pixels = pixels_from_pillow(header)
    if pixels.ndim == 3 and pixels.shape[2] == 4:
        grey = _reduce(to_grey(pixels), work_pixels)  # transparency flattened before averaging
    else:
        grey = to_grey(_reduce(pixels, work_pixels))  # colour averaged first: less to convert
    grey = _upright(grey, _orientation(data, header))
    return Picture(grey=grey, scale=max(header.size) / max(grey.shape))


def read_header(data: bytes, image_format: ImageFormat, *, max_pixels: int) -> Image.Image:
    """The image opened lazily by Pillow (header parsed, no pixels), with its size checked."""
    try:
        header = Image.open(io.BytesIO(data), formats=image_format.plugins)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise PayloadTooLarge(f"image has too many pixels: {exc}", code="image_too_large") from exc
    except _DECODE_ERRORS as exc:
        raise _corrupt(image_format.name, exc) from exc
    if header.format not in ALLOWED_FORMATS and header.format != "MPO":  # a guard, no more
        raise UnsupportedMediaType(f"{header.format} images are not accepted")
    width, height = header.size
    if width <= 0 or height <= 0:
        raise BadImage("the image has no pixels (zero width or height)", code="corrupt_image")
    if width * height > max_pixels:
        raise PayloadTooLarge(
            f"image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}",
            code="image_too_large",
        )
    return header


def _corrupt(name: str, exc: BaseException) -> BadImage:
    logger.debug("undecodable %s image: %r", name, exc)
    return BadImage(
        f"could not decode the {name} image: it is truncated or corrupt", code="corrupt_image"
    )


def _decode_with_opencv(
    data: bytes, image_format: ImageFormat, header: Image.Image, work_pixels: int
) -> Pixels | None:
    """OpenCV's decoding of ``data``, or ``None`` where Pillow is to decode it instead."""
    if image_format.name == "TIFF":  # TIFF's many sample formats are Pillow's strength
        return None
    if image_format.name == "PNG" and not _ends_with_iend(data):
        return None  # truncated: Pillow says so (libpng would print to stderr first)
    if "transparency" in header.info and header.mode != "P":
        return None  # a transparent colour in a grey/RGB PNG: OpenCV drops it
    flags = cv2.IMREAD_IGNORE_ORIENTATION  # the orientation is applied after reducing
    if image_format.name == "JPEG":
        reduction = _jpeg_reduction(header.size, work_pixels)
        flags |= _JPEG_REDUCED.get(reduction, cv2.IMREAD_GRAYSCALE)
    elif header.mode in _GREY_SAFE_MODES and "transparency" not in header.info:
        flags |= cv2.IMREAD_GRAYSCALE
    else:
        flags |= cv2.IMREAD_UNCHANGED  # alpha, palettes and 16-bit depth kept
    try:
        pixels = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flags)
    except cv2.error as exc:
        logger.debug("OpenCV did not decode a %s image: %s", image_format.name, exc)
        return None
    if pixels is None or pixels.size == 0:
        return None
    return _as_pixels(pixels)


def _as_pixels(array: object) -> Pixels:
    """An OpenCV or Pillow result typed as what decoders return."""
    pixels = np.asarray(array)
    if pixels.dtype not in (np.uint8, np.uint16, np.float32):  # a guard: 32-bit ints
        return np.asarray(pixels, dtype=np.float32)
    return pixels


def _ends_with_iend(data: bytes) -> bool:
    """Whether a PNG's last chunk is IEND (some writers pad a few bytes after it)."""
    return data.rfind(b"IEND", max(0, len(data) - 64)) >= 0


def _jpeg_reduction(size: tuple[int, int], work_pixels: int = WORK_PIXELS) -> int:
    """The largest DCT scale denominator keeping both sides at least :data:`JPEG_MIN_SIDE`
    (scaled with the working size's side)."""
    shorter = min(size)
    min_side = JPEG_MIN_SIDE * math.sqrt(work_pixels / WORK_PIXELS)
    reduction = 1
    while reduction < 8 and shorter // (reduction * 2) >= min_side:
        reduction *= 2
    return reduction


def pixels_from_pillow(image: Image.Image) -> Pixels:
    """Pillow's decoding of the first frame, as OpenCV lays pixels out (BGR(A) order).

    16/32-bit and float grey become float32 in [0, 1] (see :func:`_scale_deep_grey`).
    """
    try:
        image.load()  # decode now, so that truncation surfaces here
        if image.mode.startswith("I;16") or image.mode in ("I", "F"):
            return _scale_deep_grey(np.asarray(image), image.mode)  # float32 in [0, 1]
        if image.mode == "P" or "transparency" in image.info:
            image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
            return _as_pixels(cv2.cvtColor(np.asarray(image.convert("RGBA")), cv2.COLOR_RGBA2BGRA))
        if image.mode == "L":
            return _as_pixels(image)
        if image.mode == "1":
            return _as_pixels(image.convert("L"))
        return _as_pixels(cv2.cvtColor(np.asarray(image.convert("RGB")), cv2.COLOR_RGB2BGR))
    except ServiceError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise PayloadTooLarge(f"image has too many pixels: {exc}", code="image_too_large") from exc
    except _DECODE_ERRORS as exc:
        raise _corrupt(image.format or "image", exc) from exc


def _scale_deep_grey(values: NDArray[np.generic], mode: str) -> FloatArray:
    """16/32-bit integer or float grey -> float32 in [0, 1].

    ``I;16*`` by 1/65535; ``I`` and ``F`` by 1/255 or 1/65535 when they fit those ranges
    ([0, 1] floats are kept), else by their own range.
    """
    grey = np.nan_to_num(values.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    low, high = float(grey.min()), float(grey.max())
    if mode.startswith("I;16"):
        scale, offset = 1.0 / 65535.0, 0.0
    elif low >= 0.0 and high <= (1.0 if mode == "F" else 0.0):
        scale, offset = 1.0, 0.0
    elif low >= 0.0 and high <= 255.0:
        scale, offset = 1.0 / 255.0, 0.0
    elif low >= 0.0 and high <= 65535.0:
        scale, offset = 1.0 / 65535.0, 0.0
    else:
        scale, offset = 1.0 / max(high - low, 1e-12), -low
    scaled: FloatArray = np.clip((grey + offset) * scale, 0.0, 1.0).astype(np.float32)
    return scaled


def _reduce(pixels: Reducible, work_pixels: int) -> Reducible:
    """Area-average down to about ``work_pixels`` (anti-aliased); small ones as they are."""
    height, width = pixels.shape[:2]
    if height * width <= work_pixels:
        return pixels
    scale = math.sqrt(work_pixels / (height * width))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    reduced: Reducible = cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)
    return reduced


def to_grey(pixels: Pixels) -> Grey:
    """Decoded pixels (grey, BGR or BGRA; 8-bit, 16-bit or float in [0, 1]) -> grey.

    8-bit pixels stay 8-bit; 16-bit ones become float32 in [0, 1]. Colour becomes ITU-R 601
    luma. Transparency is flattened onto white, as on paper, unless the visible ink itself
    is light (a white pen on a transparent canvas), where white would hide it: then onto
    black.
    """
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    if channels == 4:
        grey = _flatten_alpha(pixels)
    elif channels == 3:
        grey = _as_pixels(cv2.cvtColor(pixels, cv2.COLOR_BGR2GRAY))
    else:
        grey = pixels.reshape(pixels.shape[:2])
    if grey.dtype == np.uint16:
        scaled: FloatArray = grey.astype(np.float32)
        scaled *= np.float32(1.0 / 65535.0)
        return scaled
    return grey  # type: ignore[return-value]  # uint8 or float32: a Grey


def _flatten_alpha(pixels: Pixels) -> Pixels:
    """BGRA pixels -> grey of the same depth, composited onto a white or black backdrop."""
    alpha = cv2.extractChannel(pixels, 3)  # contiguous: OpenCV would copy a strided view
    luma = cv2.cvtColor(pixels, cv2.COLOR_BGRA2GRAY)
    full = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(pixels.dtype, 1.0)
    if cv2.minMaxLoc(alpha)[0] >= full:  # opaque after all
        return _as_pixels(luma)
    visible = (alpha >= full / 2).view(np.uint8)  # 1 where mostly opaque
    light_ink = cv2.countNonZero(visible) > 0 and cv2.mean(luma, mask=visible)[0] > (
        _LIGHT_INK / 255 * full
    )
    if light_ink:  # onto black: luma * alpha
        return _as_pixels(cv2.multiply(luma, alpha, scale=1.0 / full))
    # onto white: full - (full - luma) * alpha (for unsigned pixels, full - x is NOT x)
    return _as_pixels(cv2.bitwise_not(cv2.multiply(cv2.bitwise_not(luma), alpha, scale=1.0 / full)))


def _orientation(data: bytes, header: Image.Image) -> int:
    """The EXIF orientation tag (1 = upright); a malformed EXIF block counts as upright."""
    if header.format == "PNG" and b"eXIf" not in data:
        return 1  # Pillow would decode the whole PNG to look for an EXIF chunk after the pixels
    try:
        orientation = header.getexif().get(0x0112, 1)
    except _DECODE_ERRORS:
        return 1
    return orientation if isinstance(orientation, int) and orientation in _UPRIGHT else 1


def _upright(grey: Grey, orientation: int) -> Grey:
    """The picture as it is meant to be seen (phones store pixels sideways and tag them)."""
    make_upright = _UPRIGHT.get(orientation)
    return grey if make_upright is None else np.ascontiguousarray(make_upright(grey))
