"""End to end: every kind of image people send becomes an MNIST-style digit, bad bytes a 4xx.

Images are made here from real MNIST test digits (``benchmarks.image_kinds``) and by hand.
"""

from __future__ import annotations

import functools
import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw
from torch import nn

from benchmarks import image_kinds
from service.errors import BadImage, ServiceError
from service.imaging import ALLOWED_FORMATS, encode_png, preprocess, to_mnist
from service.imaging import decode as decoding
from service.imaging.layout import is_mnist_layout
from tests.service.imaging.conftest import (
    MAX_PIXELS,
    Digit,
    Mnist,
    assert_mnist_like,
    centre_of_mass,
    encode,
    ink_box,
    read,
    run,
    unit,
)

#: Digits made per kind; phone photos (1-2 MP) take about half a second each to make.
_COUNT = 60
_FEWER = {"phone_photo_jpeg": 20}


def test_the_package_exports_the_accepted_formats() -> None:
    assert frozenset({"PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF"}) == ALLOWED_FORMATS


# --------------------------------------------------------------------------------------------
# Each kind of image
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(image_kinds.KINDS))
def test_each_kind_becomes_an_mnist_digit(mnist: Mnist, reader: nn.Module, kind: str) -> None:
    count = _FEWER.get(kind, _COUNT)
    images, labels = mnist[0][:count], mnist[1][:count]
    make = image_kinds.KINDS[kind]
    processed = np.stack([run(make(pixels, seed)) for seed, pixels in enumerate(images)])
    for array in processed:
        assert_mnist_like(array)
        height, width = ink_box(array)
        assert max(height, width) in (20, 21)  # 21: the resampling's faint edge pixels
        row, col = centre_of_mass(array)
        assert abs(row - 14) <= 0.6
        assert abs(col - 14) <= 0.6
    # Laid out like MNIST: the reader does as well as on the raw MNIST arrays, within 5 of 60.
    baseline = (read(reader, unit(images)) == labels).sum()
    assert (read(reader, processed) == labels).sum() >= baseline - max(2, round(5 * count / 60))
    # And close, pixel by pixel, to the MNIST digit it was made from.
    assert np.abs(processed - unit(images)).mean() < 0.08


def test_canvas_export_has_a_transparent_background(digit: Digit) -> None:
    data = image_kinds.canvas_png(digit, seed=3)
    image = Image.open(io.BytesIO(data))
    assert image.mode == "RGBA"
    assert image.getpixel((0, 0)) == (0, 0, 0, 0)
    # Transparent black is paper, not ink: flattened onto white.
    assert decoding.decode(data, max_pixels=MAX_PIXELS).grey[0, 0] == 255
    assert_mnist_like(run(data))


def test_full_pipeline_leaves_mnist_nearly_unchanged(mnist: Mnist, reader: nn.Module) -> None:
    """16-bit MNIST is no MNIST layout (it decodes to float): the photo cleaning must then be
    (nearly) a no-op."""
    images = mnist[0][:300]
    original = unit(images)
    data = [encode(Image.fromarray(p.astype(np.uint16) * 257)) for p in images]
    assert not is_mnist_layout(decoding.decode(data[0], max_pixels=MAX_PIXELS).grey)
    processed = np.stack([run(d) for d in data])
    difference = np.abs(processed - original).mean(axis=(1, 2))
    assert difference.mean() < 0.02
    assert np.median(difference) < 0.015
    agreement = (read(reader, processed) == read(reader, original)).mean()
    assert agreement >= 0.99


@pytest.mark.parametrize("bar_width", [5, 10, 15])
def test_a_plain_one_is_a_digit(bar_width: int) -> None:
    """A "1" drawn as a bar: 100 px tall, so 20 px once fitted, and 1-3 px wide."""
    pixels = np.full((200, 200), 235, dtype=np.uint8)
    pixels[50:150, 100 - bar_width // 2 : 100 - bar_width // 2 + bar_width] = 30
    result = run(encode(Image.fromarray(pixels, mode="L")))
    assert_mnist_like(result)
    assert ink_box(result)[0] in (20, 21)
    row, col = centre_of_mass(result)
    assert abs(row - 14) <= 0.6
    assert abs(col - 14) <= 0.6


def test_rgb_mnist_png_decodes_to_the_mnist_digit(digit: Digit) -> None:
    """Grey saved as RGB decodes to the same 8-bit grey, so it is taken as it is."""
    data = encode(Image.fromarray(digit, mode="L").convert("RGB"))
    assert np.array_equal(run(data), digit.astype(np.float32) / 255)


# --------------------------------------------------------------------------------------------
# No digit
# --------------------------------------------------------------------------------------------


def _blank_photo() -> bytes:
    rng = np.random.default_rng(0)
    light = np.linspace(150, 230, 640, dtype=np.float32)[None, :] * np.ones((480, 1))
    pixels = np.clip(light + rng.normal(0, 4, light.shape), 0, 255).astype(np.uint8)
    return encode(Image.fromarray(pixels, mode="L").convert("RGB"), "JPEG", quality=80)


@pytest.mark.parametrize(
    "data",
    [
        encode(Image.new("L", (28, 28), 0)),
        encode(Image.new("L", (300, 200), 255)),
        encode(Image.new("RGB", (64, 64), (120, 130, 140)), "JPEG"),
        encode(Image.new("RGBA", (280, 280), (0, 0, 0, 0))),
        encode(Image.new("1", (50, 50), 1), "BMP"),
        encode(Image.fromarray(np.full((40, 40), 30000, dtype=np.uint16))),
        _blank_photo(),
    ],
    ids=[
        "black",
        "white",
        "grey-jpeg",
        "transparent",
        "bilevel-white",
        "16-bit-grey",
        "blank-paper-photo",
    ],
)
def test_blank_image_has_no_digit(data: bytes) -> None:
    with pytest.raises(BadImage) as caught:
        run(data)
    assert caught.value.code == "no_digit"
    assert caught.value.status == 400


# --------------------------------------------------------------------------------------------
# Output encoding
# --------------------------------------------------------------------------------------------


def test_encode_png_round_trips_at_8_bits(digit: Digit) -> None:
    array = digit.astype(np.float32) / 255
    image = Image.open(io.BytesIO(encode_png(array)))
    assert image.format == "PNG"
    assert image.mode == "L"
    assert image.size == (28, 28)
    assert np.array_equal(np.asarray(image), digit)


def test_encode_png_rounds_clips_and_zeroes_nan() -> None:
    array = np.array([[-0.5, 0.5, 1.5, np.nan, 0.1]], dtype=np.float32)
    image = Image.open(io.BytesIO(encode_png(array)))
    assert np.asarray(image).tolist() == [[0, 128, 255, 0, 26]]


@pytest.mark.parametrize("shape", [(1, 28, 28), (28,), (28, 28, 1)])
def test_encode_png_refuses_a_wrong_shape(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="2-D"):
        encode_png(np.zeros(shape, dtype=np.float32))


# --------------------------------------------------------------------------------------------
# Properties: nothing but a client error or an MNIST-style array, whatever comes in
# --------------------------------------------------------------------------------------------


@functools.cache
def _small_samples() -> list[bytes]:
    """Valid small images of every accepted format, for the fuzzer to mutate."""
    base = Image.new("L", (24, 24), 255)
    ImageDraw.Draw(base).line((4, 4, 18, 20), fill=0, width=3)
    return [
        encode(base, "PNG"),
        encode(base.convert("RGB"), "JPEG"),
        encode(base, "GIF"),
        encode(base, "BMP"),
        encode(base, "TIFF"),
        encode(base.convert("RGB"), "WEBP"),
    ]


def test_the_fuzzers_samples_are_digits() -> None:
    for data in _small_samples():
        assert_mnist_like(preprocess(data, max_pixels=1_000_000))


@st.composite
def client_bytes(draw: st.DrawFn) -> bytes:
    """Arbitrary bytes, bytes behind a real signature, or a real image with bytes changed."""
    choice = draw(st.integers(0, 2))
    if choice == 0:
        return draw(st.binary(max_size=512))
    if choice == 1:
        signature = draw(st.sampled_from(_small_samples()))[:12]
        return signature + draw(st.binary(max_size=512))
    data = bytearray(draw(st.sampled_from(_small_samples())))
    for _ in range(draw(st.integers(1, 8))):
        position = draw(st.integers(0, len(data) - 1))
        data[position] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


@settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow warns about corrupt TIFF tags
@given(data=client_bytes())
def test_any_bytes_give_a_client_error_or_a_digit(data: bytes) -> None:
    try:
        result = preprocess(data, max_pixels=1_000_000)
    except ServiceError as exc:
        assert 400 <= exc.status < 500
    else:
        assert_mnist_like(result)


_MODES = ["1", "L", "P", "I;16", "I", "F", "LA", "RGB", "RGBA", "CMYK", "YCbCr"]


@st.composite
def small_images(draw: st.DrawFn) -> Image.Image:
    """An arbitrary small image of any mode (random pixels, shapes and constant images)."""
    height, width = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    mode = draw(st.sampled_from(_MODES))
    seed = draw(st.integers(0, 2**32 - 1))
    pattern = draw(st.sampled_from(["noise", "constant", "blob"]))
    rng = np.random.default_rng(seed)
    if pattern == "noise":
        pixels = rng.integers(0, 256, (height, width), dtype=np.uint8)
    elif pattern == "constant":
        pixels = np.full((height, width), rng.integers(0, 256), dtype=np.uint8)
    else:
        pixels = np.full((height, width), 230, dtype=np.uint8)
        pixels[height // 4 : max(height // 4 + 1, height // 2), width // 3 :] = 20
    grey = Image.fromarray(pixels, mode="L")
    if mode == "I;16":
        return Image.fromarray(pixels.astype(np.uint16) * draw(st.sampled_from([1, 257])))
    if mode == "I":
        return Image.fromarray(pixels.astype(np.int32) * draw(st.sampled_from([-1, 1, 300])))
    if mode == "F":
        scale = draw(st.sampled_from([1.0, 1 / 255, -3.5, 1e6]))
        return Image.fromarray(pixels.astype(np.float32) * np.float32(scale))
    if mode in ("LA", "RGBA"):
        image = grey.convert(mode)
        image.putalpha(Image.fromarray(rng.integers(0, 256, (height, width), dtype=np.uint8)))
        return image
    return grey.convert(mode)


@settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(image=small_images())
def test_any_small_image_gives_a_digit_or_no_digit(image: Image.Image) -> None:
    grey = decoding.to_grey(decoding.pixels_from_pillow(image))
    assert grey.shape == (image.height, image.width)
    try:
        result = to_mnist(grey)
    except BadImage as exc:
        assert exc.code == "no_digit"
    else:
        assert_mnist_like(result)
