"""Preprocessing: every kind of image people send becomes an MNIST-style digit, bad bytes a 4xx.

Images are made here from real MNIST test digits (``benchmarks.image_kinds``) and by hand.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import struct
import tracemalloc
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFilter
from torch import nn

from benchmarks import image_kinds
from service import preprocess as pp
from service.errors import BadImage, PayloadTooLarge, ServiceError, UnsupportedMediaType

REPO = Path(__file__).resolve().parents[2]
DATA_DIR = Path(os.environ.get("DIGITS_DATA_DIR", REPO.parent / "shared" / "data" / "mnist"))
MAX_PIXELS = 20_000_000

Digit = NDArray[np.uint8]


# --------------------------------------------------------------------------------------------
# Fixtures and helpers
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mnist() -> tuple[Digit, NDArray[np.uint8]]:
    """Real MNIST test digits ``(10000, 28, 28)`` uint8, white on black, and their labels."""
    return image_kinds.load_mnist_test(DATA_DIR)


@pytest.fixture(scope="module")
def digit(mnist: tuple[Digit, NDArray[np.uint8]]) -> Digit:
    """One clearly written MNIST test digit (a 7)."""
    return mnist[0][0]


@pytest.fixture(scope="module")
def reader(mnist: tuple[Digit, NDArray[np.uint8]]) -> nn.Module:
    """A small MLP trained for a few seconds on MNIST training digits (~96 % on test).

    An MLP, not a CNN, on purpose: it is sensitive to shifts and scale, so it notices
    preprocessing that does not lay digits out as MNIST does.
    """
    torch.manual_seed(0)
    train_images = image_kinds._read_idx(DATA_DIR / "train-images-idx3-ubyte.gz")[:20000]
    train_labels = image_kinds._read_idx(DATA_DIR / "train-labels-idx1-ubyte.gz")[:20000]
    inputs = torch.from_numpy(train_images.astype(np.float32) / 255.0).flatten(1)  # (N, 784)
    targets = torch.from_numpy(train_labels.astype(np.int64))
    model = nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-3)
    with torch.random.fork_rng():
        for _ in range(3):
            order = torch.randperm(len(inputs))
            for start in range(0, len(inputs), 128):
                batch = order[start : start + 128]
                loss = nn.functional.cross_entropy(model(inputs[batch]), targets[batch])
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
    return model.eval()


def read(model: nn.Module, images: NDArray[np.float32]) -> NDArray[np.int64]:
    """The model's argmax for ``(N, 28, 28)`` images in [0, 1]."""
    with torch.inference_mode():
        logits = model(torch.from_numpy(np.ascontiguousarray(images)).flatten(1))
    return logits.argmax(dim=1).numpy()


def unit(pixels: NDArray[np.generic] | Image.Image) -> NDArray[np.float32]:
    """8-bit pixels (array or image) as float32 in [0, 1]."""
    return np.asarray(pixels, dtype=np.float32) * np.float32(1.0) / np.float32(255.0)


def encode(image: Image.Image, fmt: str = "PNG", **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def run(data: bytes) -> NDArray[np.float32]:
    return pp.preprocess(data, max_pixels=MAX_PIXELS)


def assert_mnist_like(array: NDArray[np.float32]) -> None:
    """The invariants of every ``to_mnist`` output."""
    assert array.shape == (28, 28)
    assert array.dtype == np.float32
    assert float(array.min()) >= 0.0
    assert float(array.max()) <= 1.0


def centre_of_mass(array: NDArray[np.float32]) -> tuple[float, float]:
    total = float(array.sum())
    axis = np.arange(array.shape[0])
    return float(array.sum(axis=1) @ axis) / total, float(array.sum(axis=0) @ axis) / total


def ink_box(array: NDArray[np.float32]) -> tuple[int, int]:
    """Height and width of the bounding box of the non-zero pixels."""
    rows = np.flatnonzero(array.max(axis=1) > 0)
    cols = np.flatnonzero(array.max(axis=0) > 0)
    return int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)


def on_paper(digit: Digit, *, side: int = 200, paper: int = 235, ink: int = 30) -> Image.Image:
    """Dark ink on light paper, the digit upscaled to fill ``side`` x ``side``."""
    coverage = np.asarray(
        Image.fromarray(digit, mode="L").resize((side, side), Image.Resampling.BICUBIC),
        dtype=np.float32,
    ) / np.float32(255.0)
    pixels = paper * (1 - coverage) + ink * coverage
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="L")


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR (valid CRC) declares ``width`` x ``height`` and has no pixel data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grey
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


# --------------------------------------------------------------------------------------------
# Decoding: accepted formats
# --------------------------------------------------------------------------------------------


def test_allowed_formats_are_the_documented_ones() -> None:
    assert frozenset({"PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF"}) == pp.ALLOWED_FORMATS


@pytest.mark.parametrize(
    ("fmt", "options"),
    [
        ("PNG", {}),
        ("JPEG", {"quality": 90}),
        ("WEBP", {"lossless": True}),
        ("BMP", {}),
        ("TIFF", {"compression": "tiff_lzw"}),
        ("GIF", {}),
    ],
)
def test_each_accepted_format_decodes_to_the_same_digit(
    digit: Digit, fmt: str, options: dict[str, object]
) -> None:
    paper = on_paper(digit)
    image = pp.decode_image(encode(paper, fmt, **options), max_pixels=MAX_PIXELS)
    assert image.format == fmt
    assert image.size == paper.size
    expected = pp.to_mnist(paper)
    assert np.abs(pp.to_mnist(image) - expected).mean() < 0.02


def test_mpo_counts_as_jpeg(digit: Digit) -> None:
    first = on_paper(digit).convert("RGB")
    data = encode(first, "MPO", save_all=True, append_images=[first.rotate(90)])
    image = pp.decode_image(data, max_pixels=MAX_PIXELS)
    assert image.format == "MPO"
    assert np.abs(pp.to_mnist(image) - pp.to_mnist(first)).mean() < 0.02


def test_large_jpeg_is_decoded_at_reduced_scale(digit: Digit) -> None:
    photo = on_paper(digit, side=2400).convert("RGB")
    image = pp.decode_image(encode(photo, "JPEG"), max_pixels=MAX_PIXELS)
    assert image.width < 2400
    assert min(image.size) >= 240
    assert np.abs(pp.to_mnist(image) - pp.to_mnist(photo)).mean() < 0.03


def test_animated_gif_uses_the_first_frame(mnist: tuple[Digit, NDArray[np.uint8]]) -> None:
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
    assert np.abs(run(data) - pp.to_mnist(first)).mean() < 0.02


def test_sixteen_bit_png_matches_eight_bit(digit: Digit) -> None:
    paper = np.asarray(on_paper(digit), dtype=np.uint16)
    deep = Image.fromarray(paper * 257)  # I;16, same picture at 16 bits
    data = encode(deep, "PNG")
    assert pp.decode_image(data, max_pixels=MAX_PIXELS).mode.startswith("I")
    assert np.abs(run(data) - run(encode(on_paper(digit), "PNG"))).mean() < 0.01


def test_decoded_image_is_fully_loaded(digit: Digit) -> None:
    image = pp.decode_image(encode(on_paper(digit), "PNG"), max_pixels=MAX_PIXELS)
    # A loaded image has its pixel buffer; nothing is left to read from the (closed) body.
    assert image.im is not None
    assert image.getpixel((0, 0)) == 235


# --------------------------------------------------------------------------------------------
# Decoding: refusals
# --------------------------------------------------------------------------------------------


def test_empty_body_is_a_bad_image() -> None:
    with pytest.raises(BadImage) as caught:
        pp.decode_image(b"", max_pixels=MAX_PIXELS)
    assert caught.value.code == "empty_image"
    assert caught.value.status == 400


@pytest.mark.parametrize(
    "data",
    [
        bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8)),
        b"just some text, not a picture\n",
        b"<!doctype html><html><body><img src=x></body></html>",
        b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"/>',
        b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\n%%EOF\n",
        b'{"image": "aGVsbG8="}',
    ],
    ids=["random", "text", "html", "svg", "pdf", "json"],
)
def test_non_images_are_bad_images(data: bytes) -> None:
    with pytest.raises(BadImage) as caught:
        pp.decode_image(data, max_pixels=MAX_PIXELS)
    assert caught.value.code == "not_an_image"
    assert caught.value.status == 400


@pytest.mark.parametrize("fmt", ["ICO", "PPM", "EPS", "PCX", "SGI", "QOI", "DDS"])
def test_image_formats_we_do_not_accept_are_415(digit: Digit, fmt: str) -> None:
    data = encode(Image.fromarray(digit, mode="L").convert("RGB"), fmt)
    with pytest.raises(UnsupportedMediaType) as caught:
        pp.decode_image(data, max_pixels=MAX_PIXELS)
    assert caught.value.status == 415
    assert fmt[:2] in caught.value.message


def test_psd_signature_is_415() -> None:
    header = b"8BPS" + struct.pack(">H6xHIIHH", 1, 1, 28, 28, 8, 1)
    with pytest.raises(UnsupportedMediaType):
        pp.decode_image(header + bytes(64), max_pixels=MAX_PIXELS)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "WEBP", "TIFF", "BMP"])
def test_truncated_images_are_bad_images(digit: Digit, fmt: str) -> None:
    data = encode(on_paper(digit).convert("RGB"), fmt)
    with pytest.raises(BadImage) as caught:
        pp.decode_image(data[: len(data) // 2], max_pixels=MAX_PIXELS)
    assert caught.value.code == "corrupt_image"


def test_png_with_corrupted_middle_is_a_bad_image(digit: Digit) -> None:
    data = bytearray(encode(on_paper(digit), "PNG"))
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(64)  # breaks the IDAT chunk's CRC and zlib stream
    with pytest.raises(BadImage):
        pp.decode_image(bytes(data), max_pixels=MAX_PIXELS)


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
    with pytest.raises(BadImage):
        pp.decode_image(bytes(data), max_pixels=MAX_PIXELS)


def test_header_declaring_too_many_pixels_is_413_before_allocating() -> None:
    data = png_header_only(30000, 30000)  # 900 megapixels: 900 MB if it were decoded
    tracemalloc.start()
    try:
        with pytest.raises(PayloadTooLarge) as caught:
            pp.decode_image(data, max_pixels=MAX_PIXELS)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert caught.value.status == 413
    assert peak < 5_000_000


def test_pixel_limit_is_the_callers(digit: Digit) -> None:
    data = encode(on_paper(digit, side=100), "PNG")
    assert pp.decode_image(data, max_pixels=10_000).size == (100, 100)
    with pytest.raises(PayloadTooLarge) as caught:
        pp.decode_image(data, max_pixels=9_999)
    assert "100x100" in caught.value.message


def test_header_beyond_pillows_own_bomb_limit_is_413() -> None:
    with pytest.raises(PayloadTooLarge):
        pp.decode_image(png_header_only(30000, 30000), max_pixels=10**12)


@pytest.mark.parametrize(("width", "height"), [(0, 10), (10, 0), (0, 0)])
def test_zero_sized_image_is_a_bad_image(width: int, height: int) -> None:
    with pytest.raises(BadImage) as caught:
        pp.decode_image(png_header_only(width, height), max_pixels=MAX_PIXELS)
    assert caught.value.code == "corrupt_image"


# --------------------------------------------------------------------------------------------
# The steps, one by one
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_orient_applies_the_exif_orientation(digit: Digit, orientation: int) -> None:
    upright = on_paper(digit, side=120).crop((0, 0, 120, 80))  # not square: sides must swap
    stored = upright.transpose(
        {
            3: Image.Transpose.ROTATE_180,
            6: Image.Transpose.ROTATE_90,
            8: Image.Transpose.ROTATE_270,
        }[orientation]
    )
    exif = Image.Exif()
    exif[0x0112] = orientation
    image = pp.decode_image(encode(stored, "PNG", exif=exif.tobytes()), max_pixels=MAX_PIXELS)
    oriented = pp._orient(image)
    assert oriented.size == upright.size
    assert np.array_equal(np.asarray(oriented), np.asarray(upright))


def test_orient_leaves_untagged_images_alone(digit: Digit) -> None:
    image = on_paper(digit)
    assert pp._orient(image) is image


def test_sideways_photo_reads_like_the_upright_one(digit: Digit) -> None:
    upright = image_kinds.photo_jpeg(digit, seed=0)
    image = Image.open(io.BytesIO(upright))
    assert image.getexif().get(0x0112, 1) == 1
    sideways = Image.open(io.BytesIO(upright)).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(sideways, "JPEG", quality=95, exif=exif.tobytes())
    assert np.abs(run(data) - run(upright)).mean() < 0.03


def test_flatten_alpha_composites_onto_white() -> None:
    rgba = Image.new("RGBA", (20, 20), (0, 0, 0, 0))  # canvas exports: transparent *black*
    ImageDraw.Draw(rgba).line((2, 10, 17, 10), fill=(200, 0, 0, 255), width=3)
    flat = pp._flatten_alpha(rgba)
    assert flat.mode == "RGB"
    assert flat.getpixel((0, 0)) == (255, 255, 255)
    assert flat.getpixel((10, 10)) == (200, 0, 0)


def test_flatten_alpha_blends_partial_transparency() -> None:
    la = Image.new("LA", (4, 4), (0, 0))
    la.putpixel((1, 1), (0, 128))  # half-transparent black ink
    flat = np.asarray(pp._flatten_alpha(la).convert("L"))
    assert flat[0, 0] == 255
    assert 120 <= flat[1, 1] <= 135


def test_flatten_alpha_puts_light_ink_on_black() -> None:
    rgba = Image.new("RGBA", (20, 20), (0, 0, 0, 0))
    ImageDraw.Draw(rgba).line((2, 10, 17, 10), fill=(255, 255, 255, 255), width=3)
    flat = pp._flatten_alpha(rgba)
    assert flat.getpixel((0, 0)) == (0, 0, 0)
    assert flat.getpixel((10, 10)) == (255, 255, 255)


def test_flatten_alpha_handles_palette_transparency() -> None:
    palette = Image.new("P", (10, 10), 0)
    palette.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    palette.putpixel((5, 5), 1)
    palette.info["transparency"] = 0
    flat = pp._flatten_alpha(palette)
    assert flat.getpixel((0, 0)) == (255, 255, 255)
    assert flat.getpixel((5, 5)) == (10, 20, 30)


def test_opaque_images_keep_their_pixels(digit: Digit) -> None:
    grey = on_paper(digit)
    assert pp._flatten_alpha(grey) is grey
    rgba = grey.convert("RGBA")
    assert np.array_equal(np.asarray(pp._flatten_alpha(rgba).convert("L")), np.asarray(grey))


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


@pytest.mark.parametrize(
    "mode", ["1", "L", "I;16", "I", "F", "P", "CMYK", "LA", "RGBA", "RGB", "YCbCr", "LAB", "HSV"]
)
def test_every_mode_converts_to_the_same_digit(digit: Digit, mode: str) -> None:
    paper = on_paper(digit)
    image = _in_mode(paper, mode)
    assert image.mode == mode
    grey = pp._to_grey(pp._flatten_alpha(image))
    assert grey.mode in ("L", "F")
    result = pp.to_mnist(image)
    assert_mnist_like(result)
    tolerance = 0.05 if mode == "1" else 0.015  # bilevel loses the anti-aliasing
    assert np.abs(result - pp.to_mnist(paper)).mean() < tolerance


@pytest.mark.parametrize(
    ("values", "mode", "expected"),
    [
        (np.array([[0, 65535]], dtype=np.uint16), "I;16", [0.0, 1.0]),
        (np.array([[0, 255]], dtype=np.int32), "I", [0.0, 1.0]),
        (np.array([[0, 4000]], dtype=np.int32), "I", [0.0, 4000 / 65535]),
        (np.array([[-5, 5]], dtype=np.int32), "I", [0.0, 1.0]),
        (np.array([[0.25, 0.5]], dtype=np.float32), "F", [0.25, 0.5]),
        (np.array([[0.0, 200.0]], dtype=np.float32), "F", [0.0, 200 / 255]),
        (np.array([[np.nan, 1.0]], dtype=np.float32), "F", [0.0, 1.0]),
    ],
)
def test_deep_grey_is_scaled_into_unit_range(
    values: NDArray[np.generic], mode: str, expected: list[float]
) -> None:
    assert np.allclose(pp._scale_deep_grey(values, mode).ravel(), expected, atol=1e-6)


def test_ink_on_black_inverts_light_backgrounds(digit: Digit) -> None:
    grey = unit(on_paper(digit))
    ink = pp._ink_on_black(grey)
    assert ink[0, 0] == pytest.approx(1 - 235 / 255)  # paper became dark
    assert np.array_equal(ink, 1 - grey)


def test_ink_on_black_keeps_dark_backgrounds(digit: Digit) -> None:
    grey = unit(digit)
    assert pp._ink_on_black(grey) is grey


def test_ink_on_black_follows_the_ink_not_a_threshold(digit: Digit) -> None:
    # Dim paper (grey 90) with darker ink (30): the paper is still the background.
    grey = unit(on_paper(digit, paper=90, ink=30))
    assert np.array_equal(pp._ink_on_black(grey), 1 - grey)


def test_normalise_contrast_stretches_faint_ink_and_zeroes_background(digit: Digit) -> None:
    faint = unit(on_paper(digit, paper=150, ink=110))
    result = pp._normalise_contrast(pp._ink_on_black(faint))
    assert result.max() == 1.0
    assert (result == 1.0).sum() > 0.05 * (result > 0).sum()
    assert result[:5].max() == 0.0  # the paper is exactly black


def test_normalise_contrast_removes_uneven_light(digit: Digit) -> None:
    paper = unit(on_paper(digit, side=300))
    light = np.linspace(0.45, 1.0, 300, dtype=np.float32)[None, :]  # dark left, bright right
    noise = np.random.default_rng(0).normal(0, 0.01, paper.shape).astype(np.float32)
    photo = np.clip(paper * light + noise, 0, 1)
    result = pp._normalise_contrast(pp._ink_on_black(photo))
    background = result[np.asarray(on_paper(digit, side=300)) > 230]
    assert (background > 0).mean() < 0.01
    # Ink in the shadow is as strong as ink in the light.
    left, right = result[:, :150], result[:, 150:]
    assert abs(np.percentile(left[left > 0], 75) - np.percentile(right[right > 0], 75)) < 0.15


def test_ink_level_is_the_pen_not_the_ruled_lines() -> None:
    rng = np.random.default_rng(0)
    lines = rng.normal(0.3, 0.03, 20000)  # many faint pixels: a notebook's ruled lines
    pen = rng.normal(0.8, 0.05, 3000)  # fewer, strong: the digit
    strong = np.concatenate([lines, pen]).astype(np.float32)
    assert pp._ink_level(strong) == pytest.approx(0.8, abs=0.03)
    assert float(np.percentile(strong, 75)) < 0.4  # a plain percentile would pick the lines


def test_keep_near_strokes_drops_faint_lines_but_keeps_edges() -> None:
    ink = np.zeros((60, 80), dtype=np.float32)
    ink[:, 38:42] = 1.0  # a stroke's core ...
    ink[:, 37] = ink[:, 42] = 0.3  # ... and its anti-aliased edges
    ink[20:22, :] = np.maximum(ink[20:22, :], 0.3)  # a ruled line crossing it
    kept = pp._keep_near_strokes(ink.copy())
    assert np.array_equal(kept[:, 37:43], ink[:, 37:43])
    assert kept[20:22, :30].max() == 0.0
    assert kept[20:22, 50:].max() == 0.0


def test_ruled_notebook_paper_is_read(mnist: tuple[Digit, NDArray[np.uint8]]) -> None:
    images, labels = mnist[0][:30], mnist[1][:30]
    for seed, pixels in enumerate(images):
        result = run(image_kinds.notebook_jpeg(pixels, seed))
        height, width = ink_box(result)
        assert max(height, width) in (20, 21)
        assert np.abs(result - unit(pixels)).mean() < 0.1, f"digit {seed} ({labels[seed]})"


def test_dilate_grows_a_square() -> None:
    mask = np.zeros((9, 9), dtype=bool)
    mask[4, 4] = True
    grown = pp._dilate(mask, 2)
    assert np.array_equal(np.argwhere(grown).min(axis=0), [2, 2])
    assert np.array_equal(np.argwhere(grown).max(axis=0), [6, 6])
    assert grown.sum() == 25
    assert mask.sum() == 1  # the input is left alone


def test_min_and_max_filters_match_the_definition() -> None:
    rng = np.random.default_rng(0)
    image = rng.random((37, 53)).astype(np.float32)
    for window in (1, 3, 7, 21):
        padded = np.pad(image, window // 2, mode="edge")
        windows = np.lib.stride_tricks.sliding_window_view(padded, (window, window))
        assert np.array_equal(pp._min_filter(image, window), windows.min(axis=(-1, -2)))
        assert np.array_equal(pp._max_filter(image, window), windows.max(axis=(-1, -2)))


def test_background_follows_a_shadow_across_the_page(digit: Digit) -> None:
    paper = unit(on_paper(digit, side=240)).copy()
    shade = np.ones_like(paper)
    shade[:, :100] = 0.6  # a hard-edged shadow over the left side
    ink = 1 - paper * shade
    unlit = ink - pp._lighting_surface(ink)
    signal = unlit - pp._shadows(unlit)
    stroke_free = np.asarray(on_paper(digit, side=240)) > 230
    assert np.abs(signal[stroke_free]).mean() < 0.03
    assert np.percentile(np.abs(signal[stroke_free]), 99) < 0.25  # only along the shadow's edge


def test_crop_to_ink_takes_the_bounding_box() -> None:
    ink = np.zeros((100, 120), dtype=np.float32)
    ink[20:70, 30:55] = 1.0
    assert pp._crop_to_ink(ink).shape == (50, 25)


def test_crop_to_ink_ignores_specks_and_paper_edges() -> None:
    ink = np.zeros((240, 320), dtype=np.float32)
    ink[60:160, 100:160] = 1.0  # the digit (a bar)
    ink[220:223, 20:23] = 1.0  # a speck of dust far away
    ink[10:12, 300:302] = 0.8  # another
    ink[:, 312:] = 1.0  # the edge of the paper (a band along the right side)
    ink[236:, :] = 1.0  # the table under the photo's bottom edge
    crop = pp._crop_to_ink(ink)
    assert crop.shape == (100, 60)


def test_crop_to_ink_keeps_broken_strokes() -> None:
    ink = np.zeros((200, 200), dtype=np.float32)
    ink[50:150, 90:100] = 1.0  # a stroke
    ink[40:46, 70:130] = 1.0  # a separate bar just above it (a 5's top, a 7's bar)
    assert pp._crop_to_ink(ink).shape == (110, 60)


def test_crop_to_ink_keeps_a_digit_touching_the_border() -> None:
    ink = np.zeros((60, 60), dtype=np.float32)
    ink[:, 25:32] = 1.0  # a "1" cropped tightly by the user: touches top and bottom
    assert pp._crop_to_ink(ink).shape == (60, 7)


def test_thin_strokes_are_thickened_to_mnist_width() -> None:
    hairline = np.zeros((200, 120), dtype=np.float32)
    hairline[:, 60:62] = 1.0  # a "1" drawn with a 2 px pen: 0.2 px once 20 px tall
    hairline[0:2, 20:62] = 1.0

    def width(digit: NDArray[np.float32]) -> float:  # as _thicken_thin_strokes measures it
        return pp._stroke_width(pp._resize(digit, 40)) / 2

    assert width(hairline) < 1.0
    assert 1.6 <= width(pp._thicken_thin_strokes(hairline)) <= 2.6  # MNIST: 1.4-2.9


def test_mnist_width_strokes_are_left_alone(digit: Digit) -> None:
    crop = pp._crop_to_ink(unit(digit))
    assert pp._thicken_thin_strokes(crop) is crop


def test_thin_pen_digit_reads_like_mnist(digit: Digit, reader: nn.Module) -> None:
    pen = np.zeros((280, 280), dtype=np.uint8)
    big = np.asarray(Image.fromarray(digit).resize((200, 200), Image.Resampling.BICUBIC))
    pen[40:240, 40:240] = np.where(big >= 128, 255, 0)
    thin = Image.fromarray(255 - pen).filter(ImageFilter.MaxFilter(11))  # ~1/3 of the width
    result = pp.to_mnist(thin)
    assert result.sum() >= 0.7 * (digit / np.float32(255)).sum()  # as much ink as MNIST's
    assert read(reader, result[None])[0] == 7


@pytest.mark.parametrize(("shape", "expected"), [((100, 50), (20, 10)), ((30, 120), (5, 20))])
def test_fit_20px_keeps_the_aspect_ratio(shape: tuple[int, int], expected: tuple[int, int]) -> None:
    crop = np.ones(shape, dtype=np.float32) * 0.7
    small = pp._fit_20px(crop)
    assert small.shape == expected
    assert small.max() == pytest.approx(1.0)


def test_fit_20px_upscales_small_crops() -> None:
    crop = np.zeros((7, 5), dtype=np.float32)
    crop[:, 2] = 1.0
    crop[0, :] = 1.0
    assert pp._fit_20px(crop).shape == (20, 14)


def test_centre_by_mass_puts_the_mass_at_the_centre() -> None:
    digit = np.zeros((20, 12), dtype=np.float32)
    digit[:4, :] = 1.0  # top-heavy (like a 7): the mass is high up
    digit[:, 5:7] = 1.0
    field = pp._centre_by_mass(digit)
    assert field.shape == (28, 28)
    row, col = centre_of_mass(field)
    assert abs(row - 14) <= 0.5
    assert abs(col - 14) <= 0.5
    assert field.sum() == pytest.approx(digit.sum())


def test_centre_by_mass_never_cuts_ink_off() -> None:
    digit = np.zeros((20, 20), dtype=np.float32)
    digit[0, :] = 1.0  # all the mass on the top row
    digit[:, 0] = 0.01
    field = pp._centre_by_mass(digit)
    assert field.sum() == pytest.approx(digit.sum())


# --------------------------------------------------------------------------------------------
# MNIST itself, and the fast path
# --------------------------------------------------------------------------------------------


def test_mnist_digits_take_the_fast_path_unchanged(
    mnist: tuple[Digit, NDArray[np.uint8]],
) -> None:
    images = mnist[0][:500]
    fast = 0
    for pixels in images:
        image = Image.fromarray(pixels, mode="L")
        shortcut = pp._mnist_fast_path(image)
        if shortcut is not None:
            fast += 1
            assert np.array_equal(shortcut, pixels.astype(np.float32) / 255)
            assert np.array_equal(run(encode(image)), shortcut)
    assert fast >= 0.95 * len(images)


@pytest.mark.parametrize(
    "change",
    [
        lambda a: np.roll(a, 4, axis=1),  # off centre
        lambda a: np.asarray(Image.fromarray(a).resize((20, 20)).crop((-4, -4, 24, 24))),  # small
        lambda a: 255 - a,  # black on white
        lambda a: (a // 2).astype(np.uint8),  # faint
    ],
    ids=["shifted", "shrunk", "inverted", "faint"],
)
def test_non_mnist_28x28_skips_the_fast_path_and_is_made_mnist(
    digit: Digit, change: Callable[[Digit], Digit]
) -> None:
    altered = Image.fromarray(np.ascontiguousarray(change(digit)), mode="L")
    assert pp._mnist_fast_path(altered) is None
    result = pp.to_mnist(altered)
    assert np.abs(result - digit / np.float32(255)).mean() < 0.05


def test_full_pipeline_leaves_mnist_nearly_unchanged(
    mnist: tuple[Digit, NDArray[np.uint8]], reader: nn.Module
) -> None:
    """RGB MNIST misses the fast path: the photo cleaning must then be (nearly) a no-op."""
    images = mnist[0][:300]
    original = unit(images)
    processed = np.stack([run(encode(Image.fromarray(p, mode="L").convert("RGB"))) for p in images])
    difference = np.abs(processed - original).mean(axis=(1, 2))
    assert difference.mean() < 0.02
    assert np.median(difference) < 0.015
    agreement = (read(reader, processed) == read(reader, original)).mean()
    assert agreement >= 0.99


# --------------------------------------------------------------------------------------------
# Each kind of image, end to end
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(image_kinds.KINDS))
def test_each_kind_becomes_an_mnist_digit(
    mnist: tuple[Digit, NDArray[np.uint8]], reader: nn.Module, kind: str
) -> None:
    images, labels = mnist[0][:60], mnist[1][:60]
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
    assert (read(reader, processed) == labels).sum() >= baseline - 5
    # And close, pixel by pixel, to the MNIST digit it was made from.
    assert np.abs(processed - images / np.float32(255)).mean() < 0.08


def test_canvas_export_has_a_transparent_background(digit: Digit) -> None:
    image = Image.open(io.BytesIO(image_kinds.canvas_png(digit, seed=3)))
    assert image.mode == "RGBA"
    assert image.getpixel((0, 0)) == (0, 0, 0, 0)


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
        _blank_photo(),
    ],
    ids=["black", "white", "grey-jpeg", "transparent", "bilevel-white", "blank-paper-photo"],
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
    image = Image.open(io.BytesIO(pp.encode_png(array)))
    assert image.format == "PNG"
    assert image.mode == "L"
    assert np.array_equal(np.asarray(image), digit)


def test_encode_png_refuses_a_wrong_shape() -> None:
    with pytest.raises(ValueError, match="2-D"):
        pp.encode_png(np.zeros((1, 28, 28), dtype=np.float32))


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
        result = pp.preprocess(data, max_pixels=1_000_000)
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
    try:
        result = pp.to_mnist(image)
    except BadImage as exc:
        assert exc.code == "no_digit"
    else:
        assert_mnist_like(result)
