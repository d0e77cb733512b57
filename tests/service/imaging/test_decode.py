"""Decoding: client bytes -> one grey picture, upright, opaque, at working size; bad bytes a 4xx."""

from __future__ import annotations

import contextlib
import io
import struct
import tracemalloc

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray
from PIL import Image, ImageDraw

from benchmarks import image_kinds
from service.errors import BadImage, PayloadTooLarge, UnsupportedMediaType
from service.imaging import decode as decoding
from service.imaging import to_mnist
from service.imaging.decode import JPEG_MIN_SIDE, WORK_PIXELS, Picture, decode, to_grey
from tests.service.imaging.conftest import (
    MAX_PIXELS,
    NOT_IMAGES,
    Digit,
    Mnist,
    assert_mnist_like,
    encode,
    on_paper,
    png_header_only,
    run,
    unit,
)


def decoded(data: bytes) -> Picture:
    return decode(data, max_pixels=MAX_PIXELS)


def luma(red: int, green: int, blue: int) -> int:
    """ITU-R 601 luma of an 8-bit colour, as OpenCV rounds it."""
    return int(
        cv2.cvtColor(np.array([[[blue, green, red]]], dtype=np.uint8), cv2.COLOR_BGR2GRAY)[0, 0]
    )


# --------------------------------------------------------------------------------------------
# Accepted formats
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "options", "lossless"),
    [
        ("PNG", {}, True),
        ("JPEG", {"quality": 90}, False),
        ("WEBP", {"lossless": True}, True),
        ("BMP", {}, True),
        ("TIFF", {"compression": "tiff_lzw"}, True),
        ("GIF", {}, True),
    ],
)
def test_each_accepted_format_decodes_to_the_same_digit(
    digit: Digit, fmt: str, options: dict[str, object], lossless: bool
) -> None:
    paper = on_paper(digit)
    picture = decoded(encode(paper, fmt, **options))
    assert picture.grey.shape == (paper.height, paper.width)
    assert picture.grey.dtype == np.uint8
    assert picture.scale == 1.0
    if lossless:
        assert np.array_equal(picture.grey, np.asarray(paper))
    else:
        assert np.abs(picture.grey.astype(np.int16) - np.asarray(paper)).mean() < 2.0
    expected = to_mnist(np.asarray(paper))
    assert np.abs(to_mnist(picture.grey) - expected).mean() < 0.02


def test_mpo_counts_as_jpeg(digit: Digit) -> None:
    first = on_paper(digit).convert("RGB")
    data = encode(first, "MPO", save_all=True, append_images=[first.rotate(90)])
    assert Image.open(io.BytesIO(data)).format == "MPO"
    result = to_mnist(decoded(data).grey)
    assert np.abs(result - to_mnist(np.asarray(first.convert("L")))).mean() < 0.02
    assert np.abs(result - to_mnist(np.asarray(first.rotate(90).convert("L")))).mean() > 0.05


def test_large_jpeg_is_decoded_at_reduced_scale(digit: Digit) -> None:
    photo = on_paper(digit, side=2400)
    picture = decoded(encode(photo.convert("RGB"), "JPEG"))
    height, width = picture.grey.shape
    assert height * width <= WORK_PIXELS
    assert min(height, width) >= JPEG_MIN_SIDE
    assert picture.scale > 1.0
    assert picture.scale == pytest.approx(2400 / max(height, width))
    # Nothing is lost next to decoding it whole and area-averaging it to the same size.
    reduced = cv2.resize(np.asarray(photo), (width, height), interpolation=cv2.INTER_AREA)
    assert np.abs(to_mnist(picture.grey) - to_mnist(reduced)).mean() < 0.03


def test_large_png_is_reduced_to_the_working_size(digit: Digit) -> None:
    picture = decoded(encode(on_paper(digit, side=1200)))
    height, width = picture.grey.shape
    assert height * width <= WORK_PIXELS
    assert height * width >= 0.95 * WORK_PIXELS  # reduced to about it, not further
    assert picture.scale == pytest.approx(1200 / max(height, width))


def test_animated_gif_uses_the_first_frame(mnist: Mnist) -> None:
    images, labels = mnist
    seven, one = images[0], images[2]
    assert (labels[0], labels[2]) == (7, 1)
    frames = [Image.fromarray(seven, mode="L"), Image.fromarray(one, mode="L")]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)
    assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 2
    result = run(data)
    assert np.abs(result - run(encode(frames[0], "PNG"))).mean() < 0.01
    assert np.abs(result - run(encode(frames[1], "PNG"))).mean() > 0.05


@pytest.mark.parametrize("fmt", ["WEBP", "PNG"])  # animated WebP and APNG
def test_other_animations_use_the_first_frame(digit: Digit, fmt: str) -> None:
    first = on_paper(digit).convert("RGB")
    second = Image.new("RGB", first.size, "white")
    data = encode(first, fmt, save_all=True, append_images=[second], lossless=True)
    assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 2
    assert np.abs(run(data) - to_mnist(np.asarray(first.convert("L")))).mean() < 0.02


@pytest.mark.parametrize(
    ("fmt", "dtype"), [("PNG", np.uint16), ("TIFF", np.dtype(">u2"))], ids=["png", "tiff-mm"]
)
def test_sixteen_bit_matches_eight_bit(digit: Digit, fmt: str, dtype: np.dtype) -> None:
    paper = np.asarray(on_paper(digit))
    deep = Image.fromarray((paper.astype(np.uint16) * 257).astype(dtype))  # the same picture
    assert deep.mode.startswith("I;16")
    data = encode(deep, fmt)
    grey = decoded(data).grey
    assert grey.dtype == np.float32  # the depth is kept, in [0, 1]
    assert np.allclose(grey, unit(paper), atol=1e-6)
    assert np.abs(run(data) - run(encode(on_paper(digit), "PNG"))).mean() < 0.01


def test_eight_bit_picture_is_decoded_as_it_is(digit: Digit) -> None:
    picture = decoded(encode(on_paper(digit), "PNG"))
    assert picture.grey.dtype == np.uint8
    assert picture.grey[0, 0] == 235
    assert picture.scale == 1.0


# --------------------------------------------------------------------------------------------
# Refusals
# --------------------------------------------------------------------------------------------


def test_empty_body_is_a_bad_image() -> None:
    with pytest.raises(BadImage) as caught:
        decoded(b"")
    assert caught.value.code == "empty_image"
    assert caught.value.status == 400


@pytest.mark.parametrize("data", NOT_IMAGES.values(), ids=NOT_IMAGES.keys())
def test_non_images_are_bad_images(data: bytes) -> None:
    with pytest.raises(BadImage) as caught:
        decoded(data)
    assert caught.value.code == "not_an_image"
    assert caught.value.status == 400


@pytest.mark.parametrize("fmt", ["ICO", "PPM", "EPS", "PCX", "SGI", "QOI", "DDS"])
def test_image_formats_we_do_not_accept_are_415(digit: Digit, fmt: str) -> None:
    data = encode(Image.fromarray(digit, mode="L").convert("RGB"), fmt)
    with pytest.raises(UnsupportedMediaType) as caught:
        decoded(data)
    assert caught.value.status == 415
    assert fmt[:2] in caught.value.message


def test_psd_signature_is_415() -> None:
    header = b"8BPS" + struct.pack(">H6xHIIHH", 1, 1, 28, 28, 8, 1)
    with pytest.raises(UnsupportedMediaType):
        decoded(header + bytes(64))


@pytest.mark.parametrize("mode", ["RGB", "L"])
@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "WEBP", "TIFF", "BMP"])
def test_truncated_images_are_bad_images(digit: Digit, fmt: str, mode: str) -> None:
    data = encode(on_paper(digit).convert(mode), fmt)
    with pytest.raises(BadImage) as caught:
        decoded(data[: len(data) // 2])
    assert caught.value.code == "corrupt_image"
    assert caught.value.status == 400


def test_png_with_corrupted_middle_is_a_bad_image(digit: Digit) -> None:
    data = bytearray(encode(on_paper(digit), "PNG"))
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(64)  # breaks the IDAT chunk's CRC and zlib stream
    with pytest.raises(BadImage) as caught:
        decoded(bytes(data))
    assert caught.value.code == "corrupt_image"


def test_jpeg_with_corrupted_middle_never_crashes(digit: Digit) -> None:
    """libjpeg recovers from a damaged entropy-coded segment; either outcome is a client's."""
    data = bytearray(encode(on_paper(digit).convert("RGB"), "JPEG"))
    rng = np.random.default_rng(7)
    for trial in range(20):
        damaged = bytearray(data)
        start = len(data) // 3 + trial * 17
        damaged[start : start + 48] = rng.integers(0, 256, 48, dtype=np.uint8).tobytes()
        with contextlib.suppress(BadImage):
            assert_mnist_like(run(bytes(damaged)))


def test_jpeg_with_corrupted_header_is_a_bad_image(digit: Digit) -> None:
    data = bytearray(encode(on_paper(digit).convert("RGB"), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 4 : sof + 12] = b"\xff" * 8  # nonsense precision, size and components
    with pytest.raises(BadImage) as caught:
        decoded(bytes(data))
    assert caught.value.code == "corrupt_image"


def test_header_declaring_too_many_pixels_is_413_before_allocating() -> None:
    data = png_header_only(30000, 30000)  # 900 megapixels: 900 MB if it were decoded
    tracemalloc.start()
    try:
        with pytest.raises(PayloadTooLarge) as caught:
            decoded(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert caught.value.status == 413
    assert caught.value.code == "image_too_large"
    assert peak < 5_000_000


def test_pixel_limit_is_the_callers(digit: Digit) -> None:
    data = encode(on_paper(digit, side=100), "PNG")
    assert decode(data, max_pixels=10_000).grey.shape == (100, 100)
    with pytest.raises(PayloadTooLarge) as caught:
        decode(data, max_pixels=9_999)
    assert "100x100" in caught.value.message


def test_header_beyond_pillows_own_bomb_limit_is_413() -> None:
    with pytest.raises(PayloadTooLarge) as caught:
        decode(png_header_only(30000, 30000), max_pixels=10**12)
    assert caught.value.code == "image_too_large"


@pytest.mark.parametrize(("width", "height"), [(0, 10), (10, 0), (0, 0)])
def test_zero_sized_image_is_a_bad_image(width: int, height: int) -> None:
    with pytest.raises(BadImage) as caught:
        decoded(png_header_only(width, height))
    assert caught.value.code == "corrupt_image"


# --------------------------------------------------------------------------------------------
# EXIF orientation
# --------------------------------------------------------------------------------------------

_STORED = {
    3: Image.Transpose.ROTATE_180,
    6: Image.Transpose.ROTATE_90,
    8: Image.Transpose.ROTATE_270,
}


def _exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_is_applied(digit: Digit, orientation: int) -> None:
    upright = on_paper(digit, side=120).crop((0, 0, 120, 80))  # not square: sides must swap
    stored = upright.transpose(_STORED[orientation])
    grey = decoded(encode(stored, "PNG", exif=_exif(orientation))).grey
    assert np.array_equal(grey, np.asarray(upright))


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_of_a_reduced_jpeg_is_applied(digit: Digit, orientation: int) -> None:
    upright = on_paper(digit, side=1600).crop((0, 0, 1600, 1200)).convert("RGB")
    stored = upright.transpose(_STORED[orientation])
    picture = decoded(encode(stored, "JPEG", exif=_exif(orientation)))
    reference = decoded(encode(upright, "JPEG"))
    assert picture.grey.shape == reference.grey.shape
    assert picture.grey.shape[1] > picture.grey.shape[0]  # landscape, as it is meant to be seen
    assert picture.scale == pytest.approx(reference.scale)
    assert np.abs(picture.grey.astype(np.int16) - reference.grey).mean() < 2.0


def test_untagged_images_are_left_alone(digit: Digit) -> None:
    image = on_paper(digit, side=120).crop((0, 0, 120, 80))
    assert np.array_equal(decoded(encode(image, "PNG")).grey, np.asarray(image))
    assert np.array_equal(decoded(encode(image, "PNG", exif=_exif(1))).grey, np.asarray(image))


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data:UserWarning")
def test_malformed_exif_counts_as_upright(digit: Digit) -> None:
    image = on_paper(digit, side=120).crop((0, 0, 120, 80))
    data = encode(image, "JPEG", quality=95, exif=b"Exif\x00\x00MM\x00*\xff\xff\xff\xff")
    grey = decoded(data).grey
    assert grey.shape == (80, 120)
    assert np.abs(grey.astype(np.int16) - np.asarray(image)).mean() < 2.0


def test_sideways_photo_reads_like_the_upright_one(digit: Digit) -> None:
    upright = image_kinds.photo_jpeg(digit, seed=0)
    image = Image.open(io.BytesIO(upright))
    assert image.getexif().get(0x0112, 1) == 1
    sideways = image.transpose(Image.Transpose.ROTATE_90)
    data = encode(sideways, "JPEG", quality=95, exif=_exif(6))
    assert np.abs(run(data) - run(upright)).mean() < 0.03


# --------------------------------------------------------------------------------------------
# Transparency
# --------------------------------------------------------------------------------------------


def _bgra(image: Image.Image) -> NDArray[np.uint8]:
    """A Pillow image's pixels as the BGRA array OpenCV decodes."""
    return np.asarray(cv2.cvtColor(np.asarray(image.convert("RGBA")), cv2.COLOR_RGBA2BGRA))


def _canvas_line(colour: tuple[int, int, int]) -> Image.Image:
    rgba = Image.new("RGBA", (20, 20), (0, 0, 0, 0))  # canvas exports: transparent *black*
    ImageDraw.Draw(rgba).line((2, 10, 17, 10), fill=(*colour, 255), width=3)
    return rgba


def test_transparency_is_flattened_onto_white() -> None:
    rgba = _canvas_line((200, 0, 0))
    for grey in (to_grey(_bgra(rgba)), decoded(encode(rgba)).grey):
        assert grey.ndim == 2
        assert grey.dtype == np.uint8
        assert grey[0, 0] == 255
        assert grey[10, 10] == luma(200, 0, 0)


def test_partial_transparency_is_blended() -> None:
    la = Image.new("LA", (4, 4), (0, 0))
    la.putpixel((1, 1), (0, 128))  # half-transparent black ink
    for grey in (to_grey(_bgra(la)), decoded(encode(la)).grey):
        assert grey[0, 0] == 255
        assert 120 <= grey[1, 1] <= 135


def test_light_ink_on_transparency_is_put_on_black() -> None:
    rgba = _canvas_line((255, 255, 255))
    for grey in (to_grey(_bgra(rgba)), decoded(encode(rgba)).grey):
        assert grey[0, 0] == 0
        assert grey[10, 10] == 255


def test_palette_transparency_is_flattened() -> None:
    palette = Image.new("P", (10, 10), 0)
    palette.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    palette.putpixel((5, 5), 1)
    palette.info["transparency"] = 0
    for fmt in ("PNG", "GIF"):
        grey = decoded(encode(palette, fmt, transparency=0)).grey
        assert grey[0, 0] == 255
        assert grey[5, 5] == luma(10, 20, 30)


def test_transparent_colour_of_a_grey_png_is_flattened() -> None:
    grey_png = Image.new("L", (10, 10), 0)  # black declared transparent: a white backdrop
    grey_png.putpixel((5, 5), 40)
    grey = decoded(encode(grey_png, "PNG", transparency=0)).grey
    assert grey[0, 0] == 255
    assert grey[5, 5] == 40


def test_sixteen_bit_transparency_is_flattened_at_depth() -> None:
    bgra = np.zeros((8, 8, 4), dtype=np.uint16)
    bgra[4, :] = (1000, 1000, 1000, 65535)  # a dark opaque stroke on transparent black
    grey = to_grey(bgra)
    assert grey.dtype == np.float32
    assert grey[0, 0] == pytest.approx(1.0)
    assert grey[4, 0] == pytest.approx(1000 / 65535, abs=1e-4)


def test_opaque_images_keep_their_pixels(digit: Digit) -> None:
    grey = np.asarray(on_paper(digit))
    assert np.array_equal(to_grey(grey), grey)
    assert to_grey(grey).dtype == np.uint8
    opaque = on_paper(digit).convert("RGBA")
    assert np.array_equal(to_grey(_bgra(opaque)), grey)
    assert np.array_equal(decoded(encode(opaque)).grey, grey)


# --------------------------------------------------------------------------------------------
# Modes and depths
# --------------------------------------------------------------------------------------------


def _in_mode(image: Image.Image, mode: str) -> Image.Image:
    """``image`` (8-bit grey) in ``mode``, with the same picture."""
    pixels = np.asarray(image)
    if mode.startswith("I;16"):
        return Image.fromarray(pixels.astype(np.uint16) * 257)
    if mode == "I":
        return Image.fromarray(pixels.astype(np.int32) * 257)
    if mode == "F":
        return Image.fromarray(pixels.astype(np.float32) / 255.0)
    if mode == "1":
        return image.point(lambda v: 255 if v >= 128 else 0).convert("1")
    if mode == "P":
        return image.convert("RGB").quantize(colors=32)
    if mode in ("LA", "RGBA"):
        converted = image.convert(mode)
        converted.putalpha(255)
        return converted
    return image.convert("RGB").convert(mode)


def _tolerance(mode: str) -> float:
    return 0.05 if mode == "1" else 0.015  # bilevel loses the anti-aliasing


@pytest.mark.parametrize(
    "mode", ["1", "L", "I;16", "I", "F", "P", "CMYK", "LA", "RGBA", "RGB", "YCbCr", "LAB", "HSV"]
)
def test_every_mode_converts_to_the_same_digit(digit: Digit, mode: str) -> None:
    paper = on_paper(digit)
    image = _in_mode(paper, mode)
    assert image.mode == mode
    grey = to_grey(decoding.pixels_from_pillow(image))
    assert grey.shape == (paper.height, paper.width)
    assert grey.dtype in (np.uint8, np.float32)
    result = to_mnist(grey)
    assert_mnist_like(result)
    assert np.abs(result - to_mnist(np.asarray(paper))).mean() < _tolerance(mode)


@pytest.mark.parametrize(
    ("fmt", "mode"),
    [
        *(("PNG", m) for m in ["1", "L", "I;16", "P", "LA", "RGBA", "RGB"]),
        *(("JPEG", m) for m in ["L", "RGB", "CMYK"]),
        *(("WEBP", m) for m in ["RGB", "RGBA"]),
        *(("BMP", m) for m in ["1", "L", "P", "RGB"]),
        *(("GIF", m) for m in ["L", "P"]),
        *(
            ("TIFF", m)
            for m in ["1", "L", "I;16", "I", "F", "P", "CMYK", "LA", "RGBA", "RGB", "YCbCr", "LAB"]
        ),
    ],
)
def test_every_stored_mode_decodes_to_the_same_digit(digit: Digit, fmt: str, mode: str) -> None:
    paper = on_paper(digit)
    data = encode(_in_mode(paper, mode), fmt)
    grey = decoded(data).grey
    assert grey.shape == (paper.height, paper.width)
    assert np.abs(to_mnist(grey) - to_mnist(np.asarray(paper))).mean() < _tolerance(mode)


@pytest.mark.parametrize(
    ("values", "mode", "expected"),
    [
        (np.array([[0, 65535]], dtype=np.uint16), "I;16", [0.0, 1.0]),
        (np.array([[0, 32768]], dtype=">u2"), "I;16B", [0.0, 32768 / 65535]),
        (np.array([[0, 255]], dtype=np.int32), "I", [0.0, 1.0]),
        (np.array([[0, 4000]], dtype=np.int32), "I", [0.0, 4000 / 65535]),
        (np.array([[-5, 5]], dtype=np.int32), "I", [0.0, 1.0]),
        (np.array([[0, 100_000]], dtype=np.int32), "I", [0.0, 1.0]),
        (np.array([[0.25, 0.5]], dtype=np.float32), "F", [0.25, 0.5]),
        (np.array([[0.0, 200.0]], dtype=np.float32), "F", [0.0, 200 / 255]),
        (np.array([[np.nan, 1.0]], dtype=np.float32), "F", [0.0, 1.0]),
        (np.array([[np.inf, 0.5]], dtype=np.float32), "F", [0.0, 0.5]),
    ],
)
def test_deep_grey_is_scaled_into_unit_range(
    values: NDArray[np.generic], mode: str, expected: list[float]
) -> None:
    scaled = decoding._scale_deep_grey(values, mode)
    assert scaled.dtype == np.float32
    assert np.allclose(scaled.ravel(), expected, atol=1e-6)
