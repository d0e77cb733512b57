"""Formats: the one list of accepted formats, and recognising them from their first bytes."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from PIL import Image

from service.errors import BadImage, UnsupportedMediaType
from service.imaging.formats import (
    ALLOWED_FORMATS,
    CANONICAL_MEDIA_TYPES,
    FORMATS,
    IMAGE_MEDIA_TYPES,
    accepted_list,
    sniff,
)
from tests.service.imaging.conftest import NOT_IMAGES, Digit, encode, on_paper

ACCEPTED = frozenset({"PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF"})


# --------------------------------------------------------------------------------------------
# The list of formats, and what is derived from it
# --------------------------------------------------------------------------------------------


def test_allowed_formats_are_the_documented_ones() -> None:
    assert ALLOWED_FORMATS == ACCEPTED
    assert frozenset(f.name for f in FORMATS) == ALLOWED_FORMATS
    assert len(FORMATS) == len(ALLOWED_FORMATS)  # no format listed twice


def test_accepted_list_names_every_format_in_order() -> None:
    assert accepted_list() == "BMP, GIF, JPEG, PNG, TIFF, WEBP"


def test_canonical_media_types_are_one_per_format_and_pillows() -> None:
    Image.init()
    assert len(CANONICAL_MEDIA_TYPES) == len(FORMATS)
    assert len(set(CANONICAL_MEDIA_TYPES)) == len(CANONICAL_MEDIA_TYPES)
    for image_format, media_type in zip(FORMATS, CANONICAL_MEDIA_TYPES, strict=True):
        assert media_type == image_format.media_types[0]
        assert media_type == Image.MIME[image_format.name]  # what Pillow calls the format


def test_image_media_types_are_every_formats_and_name_one_format_each() -> None:
    assert len(set(IMAGE_MEDIA_TYPES)) == len(IMAGE_MEDIA_TYPES)
    assert set(CANONICAL_MEDIA_TYPES) <= set(IMAGE_MEDIA_TYPES)
    assert set(IMAGE_MEDIA_TYPES) == {t for f in FORMATS for t in f.media_types}
    for media_type in IMAGE_MEDIA_TYPES:
        assert media_type == media_type.lower()
        assert media_type.startswith("image/")
        assert sum(media_type in f.media_types for f in FORMATS) == 1
    # The aliases clients send (browsers, old IE, Windows) are accepted too.
    assert {"image/jpg", "image/pjpeg", "image/x-ms-bmp"} <= set(IMAGE_MEDIA_TYPES)


def test_each_format_opens_with_its_own_pillow_plugin() -> None:
    Image.init()
    for image_format in FORMATS:
        assert image_format.name in image_format.plugins
        assert image_format.name in Image.OPEN  # Pillow can open it by that name
    jpeg = next(f for f in FORMATS if f.name == "JPEG")
    assert "MPO" in jpeg.plugins  # phones' multi-picture JPEGs


# --------------------------------------------------------------------------------------------
# Sniffing accepted formats
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "mode", "options"),
    [
        ("PNG", "L", {}),
        ("PNG", "RGBA", {}),
        ("JPEG", "RGB", {"quality": 90}),
        ("JPEG", "L", {"progressive": True}),
        ("WEBP", "RGB", {"lossless": True}),
        ("WEBP", "RGB", {"quality": 80}),
        ("BMP", "RGB", {}),
        ("BMP", "1", {}),
        ("TIFF", "L", {"compression": "tiff_lzw"}),
        ("TIFF", "RGB", {}),
        ("GIF", "L", {}),
        ("GIF", "P", {"transparency": 0}),
    ],
)
def test_sniff_recognises_each_accepted_format(
    digit: Digit, fmt: str, mode: str, options: dict[str, object]
) -> None:
    data = encode(on_paper(digit, side=64).convert(mode), fmt, **options)
    found = sniff(data)
    assert found.name == fmt
    assert Image.open(io.BytesIO(data)).format in found.plugins


def test_sniff_takes_mpo_as_jpeg(digit: Digit) -> None:
    first = on_paper(digit, side=64).convert("RGB")
    data = encode(first, "MPO", save_all=True, append_images=[first.rotate(90)])
    assert sniff(data).name == "JPEG"


def test_sniff_recognises_big_endian_tiff() -> None:
    deep = Image.fromarray(np.full((8, 8), 1000, dtype=">u2"))  # Pillow writes it as MM
    data = encode(deep, "TIFF")
    assert data[:4] == b"MM\x00*"
    assert sniff(data).name == "TIFF"


@pytest.mark.parametrize(
    ("prefix", "name"),
    [
        (b"GIF87a", "GIF"),
        (b"GIF89a", "GIF"),
        (b"II*\x00", "TIFF"),
        (b"MM\x00*", "TIFF"),
        (b"II+\x00", "TIFF"),  # BigTIFF
        (b"RIFF\x10\x00\x00\x00WEBP", "WEBP"),
        (b"RIFF\n\r\x00\x00WEBP", "WEBP"),  # a size holding newline bytes
        (b"\xff\xd8\xff\xe1", "JPEG"),
        (b"BM", "BMP"),
        (b"\x89PNG\r\n\x1a\n", "PNG"),
    ],
)
def test_sniff_reads_the_signature_alone(prefix: bytes, name: str) -> None:
    assert sniff(prefix + bytes(32)).name == name


@pytest.mark.parametrize(
    "data",
    [
        b"RIFF\x10\x00\x00\x00WAVEfmt ",  # a RIFF that is sound, not WebP
        b"\x89PNG\r\n",  # a PNG signature cut short
        b"GIF90a",
        b"MM*\x00",  # the byte orders mixed up
        b"\xff\xd8\x00",
        b"xBM",  # a signature not at the start
    ],
)
def test_near_signatures_are_not_images(data: bytes) -> None:
    with pytest.raises(BadImage) as caught:
        sniff(data + bytes(16))
    assert caught.value.code == "not_an_image"


# --------------------------------------------------------------------------------------------
# Sniffing refusals
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "mode", "name"),
    [
        ("ICO", "RGB", "ICO"),
        ("PPM", "RGB", "PNM"),
        ("PPM", "L", "PNM"),  # PGM
        ("PPM", "1", "PNM"),  # PBM
        ("EPS", "RGB", "EPS"),
        ("PCX", "RGB", "PCX"),
        ("SGI", "RGB", "SGI"),
        ("QOI", "RGB", "QOI"),
        ("DDS", "RGB", "DDS"),
        ("JPEG2000", "RGB", "JPEG 2000"),
        ("ICNS", "RGB", "ICNS"),
    ],
)
def test_sniff_refuses_other_raster_formats_with_415(
    digit: Digit, fmt: str, mode: str, name: str
) -> None:
    data = encode(Image.fromarray(digit, mode="L").convert(mode), fmt)
    with pytest.raises(UnsupportedMediaType) as caught:
        sniff(data)
    assert caught.value.status == 415
    assert name in caught.value.message
    assert accepted_list() in caught.value.message  # says what to send instead


@pytest.mark.parametrize(
    ("data", "name"),
    [
        (b"8BPS" + struct.pack(">H6xHIIHH", 1, 1, 28, 28, 8, 1), "PSD"),
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic", "HEIF"),
        (b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1", "HEIF"),
        (b"\x00\x00\x00\x0cJXL \r\n\x87\n", "JPEG XL"),
        (b"\xff\x0a\xfa\x7f", "JPEG XL"),  # a bare codestream
        (b"\xff\x4f\xff\x51", "JPEG 2000"),  # a bare codestream
        (b"\x59\xa6\x6a\x95", "Sun raster"),
        (b"SIMPLE  =                    T", "FITS"),
        (b"\xc5\xd0\xd3\xc6", "EPS"),  # DOS EPS binary header
    ],
    ids=["psd", "heic", "avif", "jxl", "jxl-codestream", "j2k", "sun", "fits", "dos-eps"],
)
def test_recognised_signatures_of_refused_formats_are_415(data: bytes, name: str) -> None:
    with pytest.raises(UnsupportedMediaType) as caught:
        sniff(data + bytes(64))
    assert caught.value.status == 415
    assert name in caught.value.message


@pytest.mark.parametrize("data", [b"", *NOT_IMAGES.values()], ids=["empty", *NOT_IMAGES.keys()])
def test_sniff_calls_non_images_not_an_image(data: bytes) -> None:
    with pytest.raises(BadImage) as caught:
        sniff(data)
    assert caught.value.code == "not_an_image"
    assert caught.value.status == 400
    assert accepted_list() in caught.value.message
