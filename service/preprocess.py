"""Any image bytes -> one 28x28 float digit, made the way MNIST itself was made.

MNIST digits are white ink on black, the ink's bounding box scaled (anti-aliased, aspect kept)
so that its longer side is 20 px, then placed in a 28x28 field with the centre of mass at the
centre (pixel (14, 14)). People send phone photos, canvas exports, scans and, now and then,
MNIST images themselves. :func:`to_mnist` turns each into the former in small named steps::

    _orient -> (_mnist_fast_path) -> _flatten_alpha -> _to_grey -> _working_array
    -> _ink_on_black -> _normalise_contrast -> _crop_to_ink -> _thicken_thin_strokes
    -> _fit_20px -> _centre_by_mass

:func:`decode_image` is the only place that parses client bytes: it sniffs the format from
the bytes, refuses decompression bombs from the header before any pixel is decoded, and turns
every decoder failure into a :class:`~service.errors.ServiceError`.
"""

from __future__ import annotations

import io
import logging
import math
import re
import struct
import zlib
from typing import Final, cast

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageFilter, ImageOps, ImageStat

from service.errors import BadImage, PayloadTooLarge, ServiceError, UnsupportedMediaType

logger = logging.getLogger(__name__)

FloatArray = NDArray[np.float32]

#: PIL format names accepted (MPO, the multi-picture JPEG some phones write, counts as JPEG).
ALLOWED_FORMATS: Final[frozenset[str]] = frozenset({"PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF"})
_FORMAT_ALIASES: Final[dict[str, str]] = {"MPO": "JPEG"}

#: Signatures of the accepted formats, checked in order; value: PIL plugins allowed to open it.
_ACCEPTED_SIGNATURES: Final[tuple[tuple[re.Pattern[bytes], str, tuple[str, ...]], ...]] = (
    (re.compile(rb"\x89PNG\r\n\x1a\n"), "PNG", ("PNG",)),
    (re.compile(rb"\xff\xd8\xff"), "JPEG", ("JPEG", "MPO")),
    (re.compile(rb"GIF8[79]a"), "GIF", ("GIF",)),
    (re.compile(rb"RIFF.{4}WEBP", re.DOTALL), "WEBP", ("WEBP",)),
    (re.compile(rb"BM"), "BMP", ("BMP",)),
    (re.compile(rb"II[*+]\x00|MM\x00[*+]"), "TIFF", ("TIFF",)),
)

#: Raster formats we recognise but do not accept (answered 415 rather than 400).
_REFUSED_SIGNATURES: Final[tuple[tuple[re.Pattern[bytes], str], ...]] = (
    (re.compile(rb"\x00\x00[\x01\x02]\x00[\x01-\xff]\x00"), "ICO/CUR"),
    (re.compile(rb"P[1-7][ \t\r\n]"), "PNM (PBM/PGM/PPM/PAM)"),
    (re.compile(rb"8BPS"), "PSD"),
    (re.compile(rb"%!PS-Adobe|\xc5\xd0\xd3\xc6"), "EPS"),
    (re.compile(rb"\x00\x00\x00\x0cjP  \r\n\x87\n|\xff\x4f\xff\x51"), "JPEG 2000"),
    (re.compile(rb"\x00\x00\x00\x0cJXL \r\n\x87\n|\xff\x0a"), "JPEG XL"),
    (re.compile(rb".{4}ftyp(heic|heix|hevc|heim|heis|mif1|msf1|avif|avis)", re.DOTALL), "HEIF"),
    (re.compile(rb"qoif"), "QOI"),
    (re.compile(rb"DDS "), "DDS"),
    (re.compile(rb"icns"), "ICNS"),
    (re.compile(rb"\x01\xda[\x00\x01][\x01\x02]"), "SGI"),
    (re.compile(rb"\x59\xa6\x6a\x95"), "Sun raster"),
    (re.compile(rb"SIMPLE  ="), "FITS"),
    (re.compile(rb"\x0a[\x00\x02-\x05]\x01[\x01\x02\x04\x08]"), "PCX"),
)

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

#: What reading a lazily loaded image's pixels can raise (anything else is a bug: a 500).
_PIXEL_READ_ERRORS: Final = (OSError, SyntaxError, EOFError, struct.error, zlib.error)

#: Large images are reduced to about this many pixels before the photo-cleaning steps: enough
#: for a digit that fills a tenth of a photo, and it bounds the per-request work and memory.
#: (300x300 leaves 280x280 canvas exports and half-scale 640x480 photos as they are.)
WORK_PIXELS: Final = 300 * 300
#: JPEGs are decoded at a reduced DCT scale (1/2, 1/4, 1/8) while both sides stay at least
#: this long: the shorter side of the working resolution, so no detail that would be kept is
#: lost, and a 640x480 photo decodes straight to 320x240.
_JPEG_DRAFT_SIDE: Final = 240

MNIST_SIDE: Final = 28
#: MNIST scales the ink's bounding box so that its longer side is this many pixels.
DIGIT_BOX: Final = 20
#: MNIST's centre of mass sits at pixel (14, 14) (row, column; pixel centres at integers).
MNIST_CENTRE: Final = 14.0
_MNIST_AXIS: Final = np.arange(MNIST_SIDE, dtype=np.float32)  # pixel coordinates on one axis

#: Images at least this large on both sides have their background found by openings.
_OPENING_MIN_SIDE: Final = 64
#: The deepest shadow (as a fraction of the paper's brightness) the background may follow.
_SHADOW_DEPTH: Final = 0.6
#: The background surface is fitted to the medians of about this many cells along each side.
_BACKGROUND_CELLS: Final = 8
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
#: Resampled values under this are Lanczos ringing, not ink (half an 8-bit step).
_RINGING: Final = 0.5 / 255
#: Strokes thinner than this (px in the 20 px box, measured at 40 px; MNIST's 2nd percentile)
#: are thickened to about the target (MNIST's median).
_THIN_STROKE: Final = 1.45
_TARGET_STROKE: Final = 2.1
#: Components are found on a mask of at most this many cells along the longer side.
_ANALYSIS_SIDE: Final = 128
#: A pixel belongs to the ink mask used for components at this normalised strength.
_MASK_LEVEL: Final = 0.25
#: Components under this fraction of the largest one's ink are specks.
_SPECK_FRACTION: Final = 0.03
#: Components within this fraction of the digit's size from it are part of the digit.
_JOIN_MARGIN: Final = 0.25
#: A component lying along this fraction of an image side is the paper's or frame's edge.
_EDGE_CONTACT: Final = 0.5
#: The digit is looked for off the edges if the largest component there has at least this
#: fraction of the ink of the largest overall (a table around the paper can hold 50x the ink).
_INNER_FRACTION: Final = 0.005


# --------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------


def decode_image(data: bytes, *, max_pixels: int) -> Image.Image:
    """Decode client bytes into a fully loaded PIL image (first frame of an animation).

    The format is sniffed from the bytes; the client's content type is not consulted.
    The rule for refusals:

    - ``BadImage`` (400): empty body (``empty_image``); bytes that are not a raster image we
      recognise, including PDF, SVG, HTML and text (``not_an_image``); an accepted format
      that is truncated, corrupt or zero-sized (``corrupt_image``).
    - ``UnsupportedMediaType`` (415): a raster format recognised by its signature that is
      not in :data:`ALLOWED_FORMATS` (ICO, PNM, PSD, EPS, JPEG 2000, JPEG XL, HEIF/AVIF, ...).
    - ``PayloadTooLarge`` (413): the header declares more than ``max_pixels`` pixels; decided
      before any pixel is decoded, so decompression bombs never allocate.

    Large JPEGs are decoded at a reduced DCT scale (both sides staying at least
    ``_JPEG_DRAFT_SIDE`` px), straight to grey where possible: the digit ends up 20 px tall.
    """
    if not data:
        raise BadImage("the request body is empty: send the image's bytes", code="empty_image")
    plugins = _sniff_format(data)
    try:
        image = Image.open(io.BytesIO(data), formats=plugins)
        _check_size(image, max_pixels)
        if image.format == "JPEG" and image.mode in ("RGB", "L", "CMYK"):
            image.draft("L" if image.mode == "RGB" else image.mode, (_JPEG_DRAFT_SIDE,) * 2)
        image.load()  # decode now, so that truncation surfaces here and not in a later step
    except ServiceError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise PayloadTooLarge(f"image has too many pixels: {exc}", code="image_too_large") from exc
    except _DECODE_ERRORS as exc:
        logger.debug("undecodable %s image: %r", plugins[0], exc)
        raise BadImage(
            f"could not decode the {plugins[0]} image: it is truncated or corrupt",
            code="corrupt_image",
        ) from exc
    if image.width <= 0 or image.height <= 0:
        raise BadImage("the image has no pixels", code="corrupt_image")
    return image


def _sniff_format(data: bytes) -> tuple[str, ...]:
    """PIL plugins to open ``data`` with; raises for anything that is not an accepted format."""
    for signature, _name, plugins in _ACCEPTED_SIGNATURES:
        if signature.match(data):
            return plugins
    for signature, name in _REFUSED_SIGNATURES:
        if signature.match(data):
            accepted = ", ".join(sorted(ALLOWED_FORMATS))
            raise UnsupportedMediaType(f"{name} images are not accepted; send one of {accepted}")
    raise BadImage(
        "the body is not an image in a format we recognise (PNG, JPEG, WEBP, BMP, TIFF, GIF)",
        code="not_an_image",
    )


def _check_size(image: Image.Image, max_pixels: int) -> None:
    """Refuse, from the header alone, images without pixels or with more than ``max_pixels``."""
    fmt = _FORMAT_ALIASES.get(image.format or "", image.format)
    if fmt not in ALLOWED_FORMATS:  # the plugins were restricted; this guards against surprises
        raise UnsupportedMediaType(f"{image.format} images are not accepted")
    width, height = image.size
    if width <= 0 or height <= 0:
        raise BadImage("the image has no pixels (zero width or height)", code="corrupt_image")
    if width * height > max_pixels:
        raise PayloadTooLarge(
            f"image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}",
            code="image_too_large",
        )


def preprocess(data: bytes, *, max_pixels: int) -> FloatArray:
    """Client bytes -> float32 ``(28, 28)`` in [0, 1], white ink on black (MNIST-style)."""
    return to_mnist(decode_image(data, max_pixels=max_pixels))


def encode_png(array: NDArray[np.floating]) -> bytes:
    """A ``(28, 28)`` float image in [0, 1] as 8-bit grey PNG bytes (to show what the model saw)."""
    if array.ndim != 2:
        raise ValueError(f"expected a 2-D image, got shape {array.shape}")
    pixels = np.clip(np.rint(np.nan_to_num(array) * 255.0), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


# --------------------------------------------------------------------------------------------
# Image -> MNIST
# --------------------------------------------------------------------------------------------


def to_mnist(image: Image.Image) -> FloatArray:
    """A decoded image -> float32 ``(28, 28)`` in [0, 1], white ink on black, MNIST-style.

    Raises ``BadImage`` (code ``no_digit``) when nothing stands out from the background, and
    ``BadImage`` for images whose pixels cannot be read.
    """
    try:
        return _to_mnist(image)
    except _PIXEL_READ_ERRORS as exc:  # an image not loaded by decode_image reads lazily
        logger.debug("unreadable %s image: %r", image.mode, exc)
        raise BadImage(f"could not read the image's pixels: {exc}", code="corrupt_image") from exc


def _to_mnist(image: Image.Image) -> FloatArray:
    image = _orient(image)
    fast = _mnist_fast_path(image)
    if fast is not None:
        return fast
    grey = _working_array(_to_grey(_flatten_alpha(image)))  # (H, W) in [0, 1]
    ink = _ink_on_black(grey)
    try:
        crop = _crop_to_ink(_normalise_contrast(ink))  # (h, w), background exactly 0
    except BadImage as exc:
        if exc.code != "no_digit":
            raise
        # The background was mistaken (a small note on a large table is mostly table): look
        # for the digit the other way round before giving up.
        crop = _crop_to_ink(_normalise_contrast(np.float32(1.0) - ink))
    digit = _fit_20px(_thicken_thin_strokes(crop))  # (h, w), max(h, w) == 20
    return _centre_by_mass(digit)


def _orient(image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation tag (phones store pixels sideways and tag them)."""
    try:
        orientation = image.getexif().get(0x0112, 1)
    except _DECODE_ERRORS:  # a malformed EXIF block is ignored, not fatal
        return image
    if orientation not in range(2, 9):
        return image
    rotated = ImageOps.exif_transpose(image)
    return image if rotated is None else rotated


def _mnist_fast_path(image: Image.Image) -> FloatArray | None:
    """The image itself when it already is an MNIST digit, else ``None``.

    An MNIST digit is 28x28 8-bit grey, white on an exactly black background, its ink reaching
    full intensity, its bounding box 20 px on the longer side and its centre of mass at the
    centre; the full pipeline would return it unchanged, so it skips the photo cleaning.
    """
    if image.mode != "L" or image.size != (MNIST_SIDE, MNIST_SIDE):
        return None
    pixels = np.asarray(image)  # (28, 28) uint8
    if not _is_mnist_digit(pixels):
        return None
    return pixels.astype(np.float32) / np.float32(255.0)


def _is_mnist_digit(pixels: NDArray[np.uint8]) -> bool:
    """Whether a 28x28 uint8 image is laid out as MNIST: 20 px box, mass-centred, full ink."""
    # Row and column masses answer every question at once (ink extent and centre of mass):
    # this runs for every MNIST-style request, so it is kept to a handful of numpy calls.
    row_mass = pixels.sum(axis=1, dtype=np.float32)  # (28,)
    col_mass = pixels.sum(axis=0, dtype=np.float32)  # (28,)
    rows = np.flatnonzero(row_mass)
    cols = np.flatnonzero(col_mass)
    if rows.size == 0 or int(pixels.max()) < 240:
        return False
    height = int(rows[-1] - rows[0] + 1)
    width = int(cols[-1] - cols[0] + 1)
    if max(height, width) != DIGIT_BOX:
        return False
    total = float(row_mass.sum())
    centre_row = float(row_mass @ _MNIST_AXIS) / total
    centre_col = float(col_mass @ _MNIST_AXIS) / total
    return abs(centre_row - MNIST_CENTRE) <= 1.0 and abs(centre_col - MNIST_CENTRE) <= 1.0


def _flatten_alpha(image: Image.Image) -> Image.Image:
    """Composite transparency onto an opaque backdrop; the result has no alpha channel.

    The backdrop is white, as on paper, unless the visible ink itself is light (a white pen on
    a transparent canvas), where white would hide it: then it is black.
    """
    if image.mode == "P" or (image.mode in ("L", "RGB", "1") and "transparency" in image.info):
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode not in ("RGBA", "LA", "PA", "RGBa", "La"):
        return image
    rgba = image.convert("RGBA")
    alpha = rgba.getchannel("A")
    low, high = cast(tuple[int, int], alpha.getextrema())  # one 8-bit band: two ints
    if low == 255:
        return rgba.convert("RGB")
    backdrop = (255, 255, 255, 255)
    if high > 0:
        visible = alpha.point(lambda a: 255 if a >= 128 else 0)
        if visible.getbbox() is not None:
            luma = ImageStat.Stat(rgba.convert("L"), mask=visible).mean[0]
            if luma > 160:
                backdrop = (0, 0, 0, 255)
    flat = Image.alpha_composite(Image.new("RGBA", rgba.size, backdrop), rgba)
    return flat.convert("RGB")


def _to_grey(image: Image.Image) -> Image.Image:
    """Any mode -> grey: ``L`` for 8-bit sources, ``F`` in [0, 1] for 16/32-bit and float ones.

    16-bit images (``I;16*``) are scaled by 1/65535; ``I`` and ``F`` by 1/255 or 1/65535 when
    they fit those ranges ([0, 1] floats are kept), else by their own range. Colour images
    become ITU-R 601 luma.
    """
    mode = image.mode
    if mode == "L":
        return image
    if mode.startswith("I;16") or mode in ("I", "F"):
        return Image.fromarray(_scale_deep_grey(np.asarray(image), mode), mode="F")
    try:
        return image.convert("L")
    except ValueError:  # modes without a direct conversion to L (e.g. HSV, LAB)
        return image.convert("RGB").convert("L")


def _scale_deep_grey(values: NDArray[np.generic], mode: str) -> FloatArray:
    """16/32-bit integer or float grey -> float32 in [0, 1]."""
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


def _working_array(grey: Image.Image) -> FloatArray:
    """Grey image -> float32 ``(H, W)`` in [0, 1], box-reduced to about ``WORK_PIXELS``."""
    width, height = grey.size
    if width * height > WORK_PIXELS:
        scale = math.sqrt(WORK_PIXELS / (width * height))
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        grey = grey.resize(size, Image.Resampling.BOX)
    array = np.asarray(grey, dtype=np.float32)
    if grey.mode == "L":
        array = array * np.float32(1.0 / 255.0)
    return array


def _ink_on_black(grey: FloatArray) -> FloatArray:
    """Invert a light-background image so that ink is bright on a dark background.

    The ink is the heavier tail of the pixels' departures from the background, beyond the
    background's own spread: below it for dark ink on paper, above it for white-on-black
    images such as MNIST. Two views vote: departures from the whole image's median (which a
    table around the paper cannot fool: it is as dark as the ink) and from each cell's median
    (which a strong lighting gradient across the photo cannot fool).
    """
    step = max(1, int(math.sqrt(grey.size / 4096)))
    sample = grey[::step, ::step]  # (h, w), a few thousand pixels
    vote = _dark_tail_share(sample - np.float32(np.median(sample)))
    grid = _cell_medians(grey)
    if grid is not None:
        medians, cell = grid
        # A 3x3 median over the cells: thick strokes fill some cells, rarely most of a block.
        padded = np.pad(medians, 1, mode="edge")
        shifts = [
            padded[r : r + medians.shape[0], c : c + medians.shape[1]]
            for r in range(3)
            for c in range(3)
        ]
        medians = np.median(np.stack(shifts), axis=0)
        rows = np.minimum(np.arange(0, grey.shape[0], step) // cell, medians.shape[0] - 1)
        cols = np.minimum(np.arange(0, grey.shape[1], step) // cell, medians.shape[1] - 1)
        vote += _dark_tail_share(sample - medians[rows[:, None], cols[None, :]])
    if vote > 0.0:
        return np.float32(1.0) - grey
    return grey


def _dark_tail_share(residual: FloatArray) -> float:
    """In [-1, 1]: how much more of the departures beyond 3 robust deviations lies below
    the background (dark ink) than above it (light ink); 0 when there are none."""
    spread = 3.0 * 1.4826 * float(np.median(np.abs(residual)))
    dark = float(np.sum(np.clip(-residual - spread, 0.0, None)))
    light = float(np.sum(np.clip(residual - spread, 0.0, None)))
    return (dark - light) / (dark + light) if dark + light > 0 else 0.0


def _cell_medians(image: FloatArray) -> tuple[FloatArray, int] | None:
    """Medians of a grid of square cells (about ``_BACKGROUND_CELLS`` along the longer side)
    and the cell's side in pixels; ``None`` when the image is too small for a grid.

    The median of a cell is its background unless ink covers most of it.
    """
    height, width = image.shape
    cell = max(height, width) // _BACKGROUND_CELLS
    if cell < 4 or min(height, width) < 2 * cell:
        return None
    rows, cols = height // cell, width // cell
    cells = image[: rows * cell, : cols * cell].reshape(rows, cell, cols, cell)
    step = max(1, cell // 8)  # the median of a sub-grid of each cell is plenty
    return np.median(cells[:, ::step, :, ::step], axis=(1, 3)).astype(np.float32), cell


def _sample(array: FloatArray, target: int = 4096) -> FloatArray:
    """A strided subsample of about ``target`` pixels, for cheap statistics."""
    step = max(1, int(math.sqrt(array.size / target)))
    return array[::step, ::step]


def _normalise_contrast(ink: FloatArray) -> FloatArray:
    """Flatten the (unevenly lit) background, zero what is noise, stretch ink to full.

    Returns float32 ``(H, W)`` in [0, 1] with the background exactly 0 and the pen's ink at
    1. Raises ``no_digit`` when the ink is weaker than ``_MIN_CONTRAST`` or than
    ``_MIN_SIGNAL_TO_NOISE`` times the noise (blank paper has only noise peaks).
    """
    lighting = _lighting_surface(ink)
    unlit = ink - lighting
    background = lighting + _shadows(unlit)
    # Light multiplies reflectance, so on paper divide by the paper's brightness (1 - background
    # once inverted) rather than only subtract: ink in a shadow keeps its full strength.
    signal = (ink - background) / np.maximum(np.float32(1.0) - background, np.float32(0.05))
    # The background is 0 now. Its noise is measured on the dark side alone (the bright side
    # also holds the ink, and whatever else stands out: a table around the paper, say), before
    # and after the shadows are taken away: either can be inflated (by an unfitted shadow, by
    # a shadow's or a huge stroke's blurred edge), the noise is the smaller.
    unlit_signal = unlit / np.maximum(np.float32(1.0) - lighting, np.float32(0.05))
    noise = min(_dark_side_noise(unlit_signal), _dark_side_noise(signal))
    floor = max(_NOISE_SIGMAS * noise, _MIN_CONTRAST / 2)
    strong = signal[signal > floor]
    if strong.size == 0:
        raise _no_digit()
    full = _ink_level(strong)
    if full < max(_MIN_CONTRAST, _MIN_SIGNAL_TO_NOISE * noise):
        raise _no_digit()
    low = max(floor, _FLOOR_FRACTION * full)
    stretched: FloatArray = (signal - np.float32(low)) * np.float32(1.0 / max(full - low, 1e-6))
    np.clip(stretched, 0.0, 1.0, out=stretched)
    return _keep_near_strokes(stretched)


def _dark_side_noise(values: FloatArray) -> float:
    """Robust standard deviation of the values below 0 (a background at 0, ink above it)."""
    sample = _sample(values)
    below = -sample[sample < 0.0]
    return 1.4826 * float(np.median(below)) if below.size else 0.0


def _ink_level(strong: FloatArray) -> float:
    """The strength of the pen's ink among the pixels that stand out from the background.

    Those pixels are the ink and, on a photo, fainter marks: ruled lines, show-through,
    smudges, and the ink's own anti-aliased edges. Otsu's split of their strengths separates
    the faint from the strong; the ink level is the median of the strong side.
    """
    counts, edges = np.histogram(strong, bins=64)
    weights = counts.astype(np.float64)
    centres = (edges[:-1] + edges[1:]) / 2
    below = np.cumsum(weights)[:-1]  # pixels at or below each candidate split
    above = weights.sum() - below
    sum_below = np.cumsum(weights * centres)[:-1]
    mean_below = sum_below / np.maximum(below, 1.0)
    mean_above = (float(weights @ centres) - sum_below) / np.maximum(above, 1.0)
    between = below * above * (mean_above - mean_below) ** 2  # Otsu's between-class variance
    split = edges[int(np.argmax(between)) + 1]
    return float(np.median(strong[strong >= split]))


def _keep_near_strokes(ink: FloatArray) -> FloatArray:
    """Zero what is not within ``_STROKE_MARGIN`` px of the ink's strong core.

    A stroke's anti-aliased edge lies next to its core and stays; marks that never reach
    ``_CORE_LEVEL`` (ruled or squared paper's lines, show-through) vanish, also where they
    run into the digit.
    """
    near = _dilate(ink >= _CORE_LEVEL, _STROKE_MARGIN)
    ink[~near] = 0.0
    return ink


def _dilate(mask: NDArray[np.bool_], radius: int) -> NDArray[np.bool_]:
    """``mask`` grown by ``radius`` px in every direction (a square), by shifted ORs."""
    grown = mask.copy()
    for shift in range(1, radius + 1):  # rows, then columns: separable
        grown[shift:] |= mask[:-shift]
        grown[:-shift] |= mask[shift:]
    rows = grown.copy()
    for shift in range(1, radius + 1):
        grown[:, shift:] |= rows[:, :-shift]
        grown[:, :-shift] |= rows[:, shift:]
    return grown


def _shadows(unlit: FloatArray) -> FloatArray:
    """Shadows left on ``unlit`` (bright ink on dark, smooth lighting removed), ``(H, W)``.

    What is left of the image, at a quarter of the resolution, after a grey-level opening
    with a window a quarter of the image wide: strokes narrower than that go, while regions
    wider than it (a shadow across the page, with its edge) stay, to be subtracted with the
    background. Zero for small images.
    """
    height, width = unlit.shape
    if min(height, width) < _OPENING_MIN_SIDE:
        return np.zeros_like(unlit)
    residual = np.asarray(
        Image.fromarray(unlit, mode="F").reduce(4), dtype=np.float32
    )  # quarter resolution: less noise for the minimum to dig into, and 1/16 of the work
    window = _opening_window(residual)
    opened = _max_filter(_min_filter(residual, window), window)
    # An opening sits on the noise's troughs; lift it back onto the noise's median.
    opened += np.float32(np.median(_sample(residual - opened)))
    # Shadows dim paper by a half or so; anything deeper is ink too wide for the window (a
    # huge felt-tip digit on a canvas): keep it as ink, not as background.
    np.minimum(opened, np.float32(_SHADOW_DEPTH), out=opened)
    shadows = Image.fromarray(opened, mode="F").resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(shadows, dtype=np.float32)


def _opening_window(image: FloatArray) -> int:
    """Odd window of the openings: a quarter of the image's longer side."""
    longer = int(max(image.shape))
    return max(3, (longer // 4) | 1)


def _min_filter(image: FloatArray, window: int) -> FloatArray:
    """Minimum over a ``window`` x ``window`` square (edges repeated), in O(1) per pixel."""
    return _running_min(_running_min(image, window, axis=0), window, axis=1)


def _running_min(values: FloatArray, window: int, axis: int) -> FloatArray:
    """Centred running minimum along ``axis`` (van Herk / Gil-Werman: block-wise prefix and
    suffix minima, so the cost does not grow with the window)."""
    moved = np.moveaxis(values, axis, 0)
    length, half = moved.shape[0], window // 2
    blocks = -(-(length + window - 1) // window)
    padded = np.pad(
        moved,
        ((half, blocks * window - length - half),) + ((0, 0),) * (moved.ndim - 1),
        mode="edge",
    )
    shaped = padded.reshape(blocks, window, *moved.shape[1:])
    prefix = np.minimum.accumulate(shaped, axis=1).reshape(padded.shape)
    suffix = np.minimum.accumulate(shaped[:, ::-1], axis=1)[:, ::-1].reshape(padded.shape)
    # The window [i, i + window) spans the suffix of i's block and the prefix of the next.
    result = np.minimum(suffix[:length], prefix[window - 1 : window - 1 + length])
    return np.ascontiguousarray(np.moveaxis(result, 0, axis))


def _max_filter(image: FloatArray, window: int) -> FloatArray:
    """Maximum over a ``window`` x ``window`` square (separable, edges repeated)."""
    return -_min_filter(-image, window)


def _lighting_surface(ink: FloatArray) -> FloatArray:
    """Smooth lighting under ``ink`` (bright ink on dark), shape ``(H, W)``.

    A quadratic surface fitted, robustly, to the medians of a grid of cells: it follows a
    lighting gradient or vignette across a photo but cannot follow the ink itself, so thick
    strokes are never hollowed out. Cells mostly covered by ink are rejected as outliers.
    """
    height, width = ink.shape
    grid = _cell_medians(ink)
    if grid is None:
        return np.full_like(ink, float(np.median(_sample(ink))))
    cell_medians, cell = grid
    rows, cols = cell_medians.shape
    medians = cell_medians.ravel()  # (rows * cols,)
    v, u = np.mgrid[0:rows, 0:cols].astype(np.float32)
    v = ((v + 0.5) * cell / height * 2.0 - 1.0).ravel()
    u = ((u + 0.5) * cell / width * 2.0 - 1.0).ravel()
    design = np.stack([np.ones_like(u), u, v, u * u, u * v, v * v], axis=1)  # (cells, 6)
    # Start from the darker half of the cells (ink is bright) and a plane, which extrapolates
    # a lighting gradient sensibly; then refit the quadratic to every cell that fits.
    keep = medians <= np.median(medians)
    terms = 3
    coef = np.zeros(6, dtype=np.float32)
    for _ in range(4):
        if keep.sum() < 2 * terms:
            break
        coef = np.zeros(6, dtype=np.float32)
        coef[:terms] = np.linalg.lstsq(design[keep, :terms], medians[keep], rcond=None)[0]
        terms = 6
        residual = medians - design @ coef
        scale = 1.4826 * float(np.median(np.abs(residual[keep]))) + 1e-3
        keep = residual < 2.5 * scale  # ink-covered cells are bright outliers
    y = (np.arange(height, dtype=np.float32) + 0.5) / height * 2.0 - 1.0
    x = (np.arange(width, dtype=np.float32) + 0.5) / width * 2.0 - 1.0
    c0, cu, cv, cuu, cuv, cvv = (np.float32(c) for c in coef)
    surface: FloatArray = (c0 + cv * y + cvv * y * y)[:, None] + (cu * x + cuu * x * x)[None, :]
    surface += (cuv * y)[:, None] * x[None, :]
    return surface


def _no_digit() -> BadImage:
    return BadImage(
        "no digit found: nothing in the image stands out from its background", code="no_digit"
    )


def _crop_to_ink(ink: FloatArray) -> FloatArray:
    """The digit's bounding box out of ``ink``, with specks and edge clutter removed.

    Components of the ink mask are found on a coarse grid (at most ``_ANALYSIS_SIDE`` cells
    per side). Specks (tiny next to the largest component) and components lying along an
    image side (the edge of the paper, a table, a scanner shadow) are dropped; the digit is the
    largest remaining component plus whatever else lies close to it (broken strokes).
    """
    height, width = ink.shape
    factor = max(1, math.ceil(max(height, width) / _ANALYSIS_SIDE))
    # Box-reduce in Pillow (numpy reductions over 4-D block views are several times slower).
    mass = np.asarray(Image.fromarray(ink, mode="F").reduce(factor))  # (rows, cols) mean ink
    strong = Image.fromarray((ink > _MASK_LEVEL).astype(np.float32), mode="F")
    mask = np.asarray(strong.reduce(factor)) > 0  # (rows, cols): any strong pixel in the cell
    labels, count = _label_components(mask)
    if count == 0:
        raise _no_digit()
    keep = _digit_components(labels, count, mass)
    kept_cells = keep[labels]
    drop = mask & ~kept_cells
    if drop.any():  # zero the dropped components' cells, so they cannot leak into the digit
        full_drop = np.repeat(np.repeat(drop, factor, axis=0), factor, axis=1)
        ink = np.where(full_drop[:height, :width], np.float32(0.0), ink)
    cell_rows = np.flatnonzero(kept_cells.any(axis=1))
    cell_cols = np.flatnonzero(kept_cells.any(axis=0))
    top, bottom = cell_rows[0] * factor, min(height, (cell_rows[-1] + 1) * factor)
    left, right = cell_cols[0] * factor, min(width, (cell_cols[-1] + 1) * factor)
    region = ink[top:bottom, left:right]
    # The cells' box is up to factor-1 px loose; tighten it to the ink itself.
    ink_rows = np.flatnonzero(region.max(axis=1) > 0.0)
    ink_cols = np.flatnonzero(region.max(axis=0) > 0.0)
    return region[ink_rows[0] : ink_rows[-1] + 1, ink_cols[0] : ink_cols[-1] + 1]


def _label_components(mask: NDArray[np.bool_]) -> tuple[NDArray[np.int64], int]:
    """8-connected components of ``mask``: labels ``(rows, cols)`` (0 = none, 1..n) and n.

    Union-find over the mask's edges, vectorised: hook every edge's larger root to its smaller
    one, then compress paths by pointer jumping, until no edge joins two roots.
    """
    rows, cols = mask.shape
    flat = np.pad(mask, 1).ravel()  # a frame of False, so neighbours never wrap around
    stride = cols + 2
    nodes = np.flatnonzero(flat)
    parent = np.arange(flat.size)
    heads, tails = [], []
    for offset in (1, stride - 1, stride, stride + 1):  # right, down-left, down, down-right
        linked = nodes[flat[nodes + offset]]
        heads.append(linked)
        tails.append(linked + offset)
    head, tail = np.concatenate(heads), np.concatenate(tails)
    while head.size:
        root_head, root_tail = parent[head], parent[tail]
        apart = root_head != root_tail
        if not apart.any():
            break
        high = np.maximum(root_head[apart], root_tail[apart])
        low = np.minimum(root_head[apart], root_tail[apart])
        np.minimum.at(parent, high, low)
        while True:  # pointer jumping: every node points at its root
            jumped = parent[parent[nodes]]
            if np.array_equal(jumped, parent[nodes]):
                break
            parent[nodes] = jumped
    roots = parent[nodes]
    unique_roots, label_of_node = np.unique(roots, return_inverse=True)
    labels = np.zeros(flat.size, dtype=np.int64)
    labels[nodes] = label_of_node + 1
    labels = labels.reshape(rows + 2, cols + 2)[1:-1, 1:-1]
    return labels, int(unique_roots.size)


def _digit_components(labels: NDArray[np.int64], count: int, mass: FloatArray) -> NDArray[np.bool_]:
    """Which labels (index 0..count, 0 never) form the digit; see :func:`_crop_to_ink`."""
    rows, cols = labels.shape
    flat_labels = labels.ravel()
    weights = np.bincount(flat_labels, weights=mass.ravel(), minlength=count + 1)
    weights[0] = 0.0
    row_of, col_of = np.divmod(np.arange(flat_labels.size), cols)
    inked = flat_labels > 0
    top = np.full(count + 1, rows)
    left = np.full(count + 1, cols)
    bottom = np.full(count + 1, -1)
    right = np.full(count + 1, -1)
    np.minimum.at(top, flat_labels[inked], row_of[inked])
    np.minimum.at(left, flat_labels[inked], col_of[inked])
    np.maximum.at(bottom, flat_labels[inked], row_of[inked])
    np.maximum.at(right, flat_labels[inked], col_of[inked])

    edge = np.zeros(count + 1, dtype=bool)
    for side, length in ((labels[0], cols), (labels[-1], cols), (labels[:, 0], rows)):
        edge |= np.bincount(side, minlength=count + 1) >= _EDGE_CONTACT * length
    edge |= np.bincount(labels[:, -1], minlength=count + 1) >= _EDGE_CONTACT * rows
    edge[0] = False
    # Specks are judged against the largest component off the edges, unless there is none
    # of note (then the digit itself lies along an edge: a tight crop).
    largest = float(weights.max())
    inner = float(weights[~edge].max())
    if inner >= _INNER_FRACTION * largest:
        candidate = ~edge & (weights >= _SPECK_FRACTION * inner)
    else:
        candidate = weights >= _SPECK_FRACTION * largest
    candidate[0] = False
    keep = np.zeros(count + 1, dtype=bool)
    keep[int(np.argmax(np.where(candidate, weights, -1.0)))] = True
    while True:  # grow the digit by the candidates close to it (broken strokes, dots)
        box_top, box_bottom = top[keep].min(), bottom[keep].max()
        box_left, box_right = left[keep].min(), right[keep].max()
        margin = _JOIN_MARGIN * max(box_bottom - box_top + 1, box_right - box_left + 1)
        near = (
            candidate
            & ~keep
            & (top <= box_bottom + margin)
            & (bottom >= box_top - margin)
            & (left <= box_right + margin)
            & (right >= box_left - margin)
        )
        if not near.any():
            return keep
        keep |= near


def _thicken_thin_strokes(digit: FloatArray) -> FloatArray:
    """Dilate a digit drawn with a pen much thinner than MNIST's (ballpoint, 1 px canvas pen).

    Widths are measured by :func:`_stroke_width` at twice the final scale (a 40 px box, where
    a hairline still differs from a thin MNIST stroke) and given in pixels of the 20 px box:
    MNIST's run from 1.4 (1st percentile) over 2.1 (median) to 2.9 (90th), and a network
    trained on them misreads hairlines. A digit under ``_THIN_STROKE`` is dilated, at the
    40 px scale, by the radius that brings it closest to ``_TARGET_STROKE``, and returned at
    that scale; others are returned unchanged.
    """
    working = _resize(digit, 2 * DIGIT_BOX)  # (h, w), max(h, w) == 40
    if _stroke_width(working) / 2 >= _THIN_STROKE:
        return digit
    working *= np.float32(1.0 / max(float(working.max()), 1e-6))  # a faint hairline dilates too
    best, best_error = working, math.inf
    for radius in (1, 2, 3):  # each radius px at 40 px adds about 1 px at 20 px
        padded = Image.fromarray(np.pad(working, radius), mode="F")
        thick = np.asarray(padded.filter(ImageFilter.MaxFilter(2 * radius + 1)), dtype=np.float32)
        error = abs(_stroke_width(thick) / 2 - _TARGET_STROKE)
        if error < best_error:
            best, best_error = thick, error
    return best


def _stroke_width(digit: FloatArray) -> float:
    """Mean stroke width in pixels: ink area over half its outline's length (sum of |grad|)."""
    grad_rows, grad_cols = np.gradient(np.pad(digit, 1))  # padded: ink at the edge has an edge
    outline = float(np.hypot(grad_rows, grad_cols).sum())
    return 2.0 * float(digit.sum()) / outline if outline > 0 else float("inf")


def _resize(digit: FloatArray, box: int) -> FloatArray:
    """Scale so that the longer side is ``box`` px, aspect kept; Lanczos (anti-aliased)."""
    height, width = digit.shape
    scale = box / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = np.asarray(
        Image.fromarray(digit, mode="F").resize(size, Image.Resampling.LANCZOS), dtype=np.float32
    )
    # Lanczos rings: clip the overshoot, and zero the faint lobes that would not survive 8 bits.
    return np.where(resized < _RINGING, np.float32(0.0), np.minimum(resized, np.float32(1.0)))


def _fit_20px(digit: FloatArray) -> FloatArray:
    """Scale the cropped ink so its longer side is 20 px, aspect kept, anti-aliased.

    Returns float32 ``(h, w)`` with ``max(h, w) == 20``, its strongest pixel at 1.0.
    """
    small = _resize(digit, DIGIT_BOX)
    peak = float(small.max())
    if peak <= 0.0:
        raise _no_digit()
    return small * np.float32(1.0 / peak)


def _centre_by_mass(digit: FloatArray) -> FloatArray:
    """Place a (h, w) digit in a 28x28 field with its centre of mass at pixel (14, 14).

    The shift is rounded to whole pixels, as MNIST's was (so the centre of mass lands within
    half a pixel of the centre), and clamped so that no ink falls off the field.
    """
    height, width = digit.shape
    total = float(digit.sum())
    centre_row = float(digit.sum(axis=1) @ np.arange(height)) / total
    centre_col = float(digit.sum(axis=0) @ np.arange(width)) / total
    top = min(max(round(MNIST_CENTRE - centre_row), 0), MNIST_SIDE - height)
    left = min(max(round(MNIST_CENTRE - centre_col), 0), MNIST_SIDE - width)
    field = np.zeros((MNIST_SIDE, MNIST_SIDE), dtype=np.float32)
    field[top : top + height, left : left + width] = digit
    return field
