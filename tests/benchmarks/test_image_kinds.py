"""The image kinds the benchmarks send: each maker is deterministic, makes what it says it
makes (format, mode, size, as Pillow opens it), and is sent with the right Content-Type; the
committed off-centre 28x28 PNG is what its function makes."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Final

import numpy as np
import pytest
from numpy.typing import NDArray
from PIL import Image

from benchmarks import image_kinds
from benchmarks.digit_image import OFF_CENTRE_INDEX, OFF_CENTRE_PNG, off_centre_digit
from benchmarks.image_kinds import KINDS, ODD_ENCODINGS, Digit, content_type

SEEDS: Final = range(4)
Size = tuple[int, int]


def square(low: int, high: int) -> Callable[[Size], bool]:
    return lambda size: size[0] == size[1] and low <= size[0] <= high


def one_of(*sizes: Size) -> Callable[[Size], bool]:
    return lambda size: size in sizes


def small_paper(size: Size) -> bool:
    return all(64 <= side <= 600 for side in size)


#: What each kind claims, as Pillow opens it: formats, modes, and a test of its (stored) size.
CLAIMS: Final[dict[str, tuple[set[str], set[str], Callable[[Size], bool]]]] = {
    "mnist_png": ({"PNG"}, {"L"}, one_of((28, 28))),
    "canvas_png": ({"PNG"}, {"RGBA"}, one_of((280, 280))),
    "photo_jpeg": ({"JPEG"}, {"RGB"}, one_of((640, 480), (480, 640))),
    "notebook_jpeg": ({"JPEG"}, {"RGB"}, one_of((640, 480))),
    "scan_png": ({"PNG"}, {"L", "P", "I;16"}, square(180, 240)),
    "scan_tiff": ({"TIFF"}, {"L", "I;16", "RGB"}, square(180, 240)),
    "canvas_wide_png": ({"PNG"}, {"RGBA"}, one_of((400, 200))),
    "paper_jpeg": ({"JPEG", "PNG"}, {"RGB", "L"}, small_paper),
    "phone_photo_jpeg": (
        {"JPEG"},
        {"RGB"},
        one_of((1600, 1200), (1200, 1600), (1920, 1080), (1080, 1920)),
    ),
    "odd_encoding": (
        {e.format for e in ODD_ENCODINGS},
        {m for e in ODD_ENCODINGS for m in e.modes},
        square(180, 240),
    ),
}


def opened(body: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(body))
    image.load()
    return image


def test_every_kind_has_a_claim() -> None:
    assert set(CLAIMS) == set(KINDS)


@pytest.mark.parametrize("kind", list(KINDS))
def test_each_kind_is_deterministic_and_what_it_claims(
    digits: tuple[Digit, NDArray[np.uint8]], kind: str
) -> None:
    make = KINDS[kind]
    formats, modes, size_ok = CLAIMS[kind]
    bodies = [make(digits[0][100 + seed], seed) for seed in SEEDS]
    assert bodies == [make(digits[0][100 + seed], seed) for seed in SEEDS]
    for body in bodies:
        image = opened(body)
        assert image.format in formats
        assert image.mode in modes
        assert size_ok(image.size), image.size
        assert content_type(body) == Image.MIME[image.format]


def test_a_seed_makes_its_own_image(digits: tuple[Digit, NDArray[np.uint8]]) -> None:
    digit = digits[0][7]
    for kind, make in KINDS.items():
        if kind != "mnist_png":  # the digit as it is: no seed to vary
            assert make(digit, 1) != make(digit, 2), kind


def test_phone_photos_are_1_to_2_megapixels_and_some_are_sideways(
    digits: tuple[Digit, NDArray[np.uint8]],
) -> None:
    images = [opened(image_kinds.phone_photo_jpeg(digits[0][s], s)) for s in range(8)]
    assert all(1_000_000 <= im.width * im.height <= 2_100_000 for im in images)
    assert {im.getexif().get(0x0112, 1) for im in images} - {1}  # some need turning upright


def test_odd_encodings_follow_the_seed_and_are_what_they_claim(
    digits: tuple[Digit, NDArray[np.uint8]],
) -> None:
    for seed, claim in enumerate(ODD_ENCODINGS):
        assert image_kinds.odd_encoding_of(seed + len(ODD_ENCODINGS)) == claim
        body = image_kinds.odd_encoding(digits[0][seed], seed)
        image = opened(body)
        assert (image.format, getattr(image, "n_frames", 1)) == (claim.format, claim.frames)
        assert image.mode in claim.modes, claim.name
        assert content_type(body) == Image.MIME[claim.format]
    by_name = {e.name: i for i, e in enumerate(ODD_ENCODINGS)}
    progressive = opened(image_kinds.odd_encoding(digits[0][0], by_name["progressive JPEG"]))
    assert progressive.info.get("progressive")
    rotated = opened(image_kinds.odd_encoding(digits[0][0], by_name["EXIF-rotated JPEG"]))
    assert rotated.getexif().get(0x0112) in (3, 6, 8)
    palette = opened(
        image_kinds.odd_encoding(digits[0][0], by_name["palette PNG, transparent background"])
    )
    assert palette.info.get("transparency") == 0


def test_content_type_is_sniffed_from_the_bytes() -> None:
    assert content_type(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == "image/webp"
    assert content_type(b"GIF87a...") == "image/gif"
    assert content_type(b"MM\x00*...") == "image/tiff"
    assert content_type(b"<svg/>") == "application/octet-stream"
    assert content_type(b"") == "application/octet-stream"


def test_the_off_centre_png_is_regenerated_by_its_function(
    digits: tuple[Digit, NDArray[np.uint8]],
) -> None:
    images, labels = digits
    assert labels[OFF_CENTRE_INDEX] == 7
    assert off_centre_digit(images[OFF_CENTRE_INDEX]) == OFF_CENTRE_PNG.read_bytes()
    image = opened(OFF_CENTRE_PNG.read_bytes())
    assert (image.format, image.mode, image.size) == ("PNG", "L", (28, 28))
    pixels = np.asarray(image)
    rows, cols = np.flatnonzero(pixels.any(axis=1)), np.flatnonzero(pixels.any(axis=0))
    box = max(rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1)
    assert box in (16, 17)  # not MNIST's 20 px: the service cannot take it as it is
    assert pixels.max() >= 240 and pixels[0, 0] == 0  # still white on black
