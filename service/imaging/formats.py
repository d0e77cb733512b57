"""The image formats the service reads, recognised from their first bytes.

This is the one list of accepted formats: intake's content types, the 415 message and the
API documentation read it. The client's ``Content-Type`` is never trusted for the format;
the bytes are sniffed here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from service.errors import BadImage, UnsupportedMediaType


@dataclass(frozen=True)
class ImageFormat:
    """One accepted format: its name, how to recognise it, and what Pillow calls it."""

    name: str
    signature: re.Pattern[bytes]
    #: Pillow plugins allowed to open it (MPO, the multi-picture JPEG phones write, is JPEG).
    plugins: tuple[str, ...]
    #: The media types clients label it with (the first is the canonical one).
    media_types: tuple[str, ...]


FORMATS: Final[tuple[ImageFormat, ...]] = (
    ImageFormat("PNG", re.compile(rb"\x89PNG\r\n\x1a\n"), ("PNG",), ("image/png",)),
    ImageFormat(
        "JPEG",
        re.compile(rb"\xff\xd8\xff"),
        ("JPEG", "MPO"),
        ("image/jpeg", "image/jpg", "image/pjpeg"),
    ),
    ImageFormat("WEBP", re.compile(rb"RIFF.{4}WEBP", re.DOTALL), ("WEBP",), ("image/webp",)),
    ImageFormat("BMP", re.compile(rb"BM"), ("BMP",), ("image/bmp", "image/x-ms-bmp")),
    ImageFormat("TIFF", re.compile(rb"II[*+]\x00|MM\x00[*+]"), ("TIFF",), ("image/tiff",)),
    ImageFormat("GIF", re.compile(rb"GIF8[79]a"), ("GIF",), ("image/gif",)),
)

#: Names of the accepted formats.
ALLOWED_FORMATS: Final[frozenset[str]] = frozenset(f.name for f in FORMATS)
#: Every media type that names an accepted format.
IMAGE_MEDIA_TYPES: Final[tuple[str, ...]] = tuple(t for f in FORMATS for t in f.media_types)
#: The canonical media type of each accepted format, for messages and documentation.
CANONICAL_MEDIA_TYPES: Final[tuple[str, ...]] = tuple(f.media_types[0] for f in FORMATS)

#: Raster formats recognised but not accepted (answered 415 rather than 400).
_REFUSED: Final[tuple[tuple[re.Pattern[bytes], str], ...]] = (
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


def accepted_list() -> str:
    """``"BMP, GIF, JPEG, PNG, TIFF, WEBP"``: the accepted formats, for messages."""
    return ", ".join(sorted(ALLOWED_FORMATS))


def sniff(data: bytes) -> ImageFormat:
    """The accepted format ``data`` is in; raises for anything else.

    ``BadImage`` (400, ``not_an_image``) for bytes that are no raster image we recognise
    (text, HTML, SVG, PDF, random bytes); ``UnsupportedMediaType`` (415) for a raster format
    recognised by its signature that is not accepted.
    """
    for image_format in FORMATS:
        if image_format.signature.match(data):
            return image_format
    for signature, name in _REFUSED:
        if signature.match(data):
            raise UnsupportedMediaType(
                f"{name} images are not accepted; send one of {accepted_list()}"
            )
    raise BadImage(
        f"the body is not an image in a format we recognise ({accepted_list()})",
        code="not_an_image",
    )
