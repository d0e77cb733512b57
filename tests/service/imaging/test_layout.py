"""Layout: a cropped digit -> 28x28 as MNIST laid its digits out; MNIST's own digits as they are."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from numpy.typing import NDArray
from PIL import Image, ImageFilter
from torch import nn

from service.imaging import decode as decoding
from service.imaging import layout, to_mnist
from service.imaging.components import crop_to_ink
from service.imaging.layout import (
    centre_by_mass,
    fit_20px,
    is_mnist_layout,
    mnist_layout,
    stroke_width,
    thicken_thin_strokes,
)
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


def width_at_20px(digit: NDArray[np.float32]) -> float:
    """Stroke width in pixels of the 20 px box, measured on a 40 px copy (as
    :func:`thicken_thin_strokes` measures it)."""
    return stroke_width(layout._lanczos(digit, 40)) / 2


# --------------------------------------------------------------------------------------------
# Stroke width
# --------------------------------------------------------------------------------------------


def test_stroke_width_of_a_bar_is_its_width() -> None:
    bar = np.zeros((60, 60), dtype=np.float32)
    bar[10:50, 20:26] = 1.0  # 6 px wide, 40 px long
    assert stroke_width(bar) == pytest.approx(6.0, rel=0.2)
    assert stroke_width(np.zeros((5, 5), dtype=np.float32)) == float("inf")


def test_thin_strokes_are_thickened_to_mnist_width() -> None:
    hairline = np.zeros((200, 120), dtype=np.float32)
    hairline[:, 60:62] = 1.0  # a "1" drawn with a 2 px pen: 0.2 px once 20 px tall
    hairline[0:2, 20:62] = 1.0
    # A 1 px line at 40 px measures 1 px at 20 px: the measure's floor, well under MNIST's 1.7.
    assert width_at_20px(hairline) < 1.2
    thick = thicken_thin_strokes(hairline)
    assert 1.7 <= width_at_20px(thick) <= 3.6  # MNIST: 1st to 90th percentile
    assert max(thick.shape) >= 40  # returned at the measuring scale
    assert thick.max() == pytest.approx(1.0)


def test_faint_hairlines_are_thickened_too() -> None:
    hairline = np.zeros((200, 120), dtype=np.float32)
    hairline[:, 60:62] = 0.3
    thick = thicken_thin_strokes(hairline)
    assert 1.7 <= width_at_20px(thick) <= 3.6
    assert thick.max() == pytest.approx(1.0)


def test_mnist_width_strokes_are_left_alone(digit: Digit) -> None:
    crop = crop_to_ink(unit(digit))
    assert 1.7 <= width_at_20px(crop) <= 3.6  # MNIST's 1st to 90th percentile
    assert thicken_thin_strokes(crop) is crop


def test_thin_stroke_limits_are_mnists_own_widths(mnist: Mnist) -> None:
    """Thin is under MNIST's 2nd percentile, the target is MNIST's median (as the constants
    say), measured the way the widths are measured for thickening."""
    widths = [width_at_20px(crop_to_ink(unit(pixels))) for pixels in mnist[0]]
    assert np.percentile(widths, 2) == pytest.approx(layout._THIN_STROKE, abs=0.15)
    assert np.median(widths) == pytest.approx(layout._TARGET_STROKE, abs=0.15)


def test_thin_pen_digit_reads_like_mnist(digit: Digit, reader: nn.Module) -> None:
    pen = np.zeros((280, 280), dtype=np.uint8)
    big = np.asarray(Image.fromarray(digit).resize((200, 200), Image.Resampling.BICUBIC))
    pen[40:240, 40:240] = np.where(big >= 128, 255, 0)
    thin = Image.fromarray(255 - pen).filter(ImageFilter.MaxFilter(11))  # ~1/3 of the width
    result = to_mnist(np.asarray(thin))
    assert result.sum() >= 0.7 * unit(digit).sum()  # as much ink as MNIST's
    assert read(reader, result[None])[0] == 7


# --------------------------------------------------------------------------------------------
# The 20 px box and the centre of mass
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("shape", "expected"), [((100, 50), (20, 10)), ((30, 120), (5, 20))])
def test_fit_20px_keeps_the_aspect_ratio(shape: tuple[int, int], expected: tuple[int, int]) -> None:
    crop = np.ones(shape, dtype=np.float32) * 0.7
    small = fit_20px(crop)
    assert small.shape == expected
    assert small.dtype == np.float32
    assert small.max() == pytest.approx(1.0)
    assert small.min() >= 0.0


def test_fit_20px_upscales_small_crops() -> None:
    crop = np.zeros((7, 5), dtype=np.float32)
    crop[:, 2] = 1.0
    crop[0, :] = 1.0
    assert fit_20px(crop).shape == (20, 14)


def test_fit_20px_shrinks_large_crops() -> None:
    crop = np.zeros((400, 300), dtype=np.float32)
    crop[:, 140:160] = 1.0  # a bar down the middle
    small = fit_20px(crop)
    assert small.shape == (20, 15)
    assert small[:, 7].min() > 0.9  # the bar is kept, in the middle
    assert small[:, 0].max() == 0.0


def test_centre_by_mass_puts_the_mass_at_the_centre() -> None:
    digit = np.zeros((20, 12), dtype=np.float32)
    digit[:4, :] = 1.0  # top-heavy (like a 7): the mass is high up
    digit[:, 5:7] = 1.0
    field = centre_by_mass(digit)
    assert field.shape == (28, 28)
    row, col = centre_of_mass(field)
    assert abs(row - 14) <= 0.5
    assert abs(col - 14) <= 0.5
    assert field.sum() == pytest.approx(digit.sum())


@pytest.mark.parametrize("shape", [(20, 1), (20, 2), (20, 3), (1, 20), (2, 20), (20, 20)])
def test_centre_by_mass_places_bars_of_any_width(shape: tuple[int, int]) -> None:
    bar = np.ones(shape, dtype=np.float32)  # a "1" fitted to 20 px can be 1 or 2 px wide
    field = centre_by_mass(bar)
    assert field.sum() == pytest.approx(bar.sum())
    row, col = centre_of_mass(field)
    assert abs(row - 14) <= 0.5
    assert abs(col - 14) <= 0.5


def test_centre_by_mass_never_cuts_ink_off() -> None:
    digit = np.zeros((20, 20), dtype=np.float32)
    digit[0, :] = 1.0  # all the mass on the top row
    digit[:, 0] = 0.01
    field = centre_by_mass(digit)
    assert field.sum() == pytest.approx(digit.sum())


def test_mnist_layout_is_a_20px_box_centred_by_mass() -> None:
    crop = np.zeros((90, 40), dtype=np.float32)
    crop[:, 15:25] = 1.0
    crop[:10, :] = 1.0
    field = mnist_layout(crop)
    assert_mnist_like(field)
    assert max(ink_box(field)) in (20, 21)  # 21: the resampling's faint edge pixels
    row, col = centre_of_mass(field)
    assert abs(row - 14) <= 0.5
    assert abs(col - 14) <= 0.5


# --------------------------------------------------------------------------------------------
# MNIST itself
# --------------------------------------------------------------------------------------------


def test_mnist_digits_pass_through_unchanged(mnist: Mnist) -> None:
    images = mnist[0][:500]
    laid_out = [pixels for pixels in images if is_mnist_layout(pixels)]
    assert len(laid_out) >= 0.95 * len(images)
    for pixels in laid_out[:100]:
        expected = pixels.astype(np.float32) / 255
        assert np.array_equal(to_mnist(pixels), expected)
        assert np.array_equal(run(encode(Image.fromarray(pixels, mode="L"))), expected)


def _sixteen_bit(digit: Digit) -> NDArray[np.generic]:
    """The digit as a 16-bit PNG decodes it: float32 in [0, 1]."""
    deep = Image.fromarray(digit.astype(np.uint16) * 257)
    return decoding.decode(encode(deep), max_pixels=MAX_PIXELS).grey


@pytest.mark.parametrize(
    "change",
    [
        lambda a: np.roll(a, 4, axis=1),  # off centre
        lambda a: np.asarray(Image.fromarray(a).resize((20, 20)).crop((-4, -4, 24, 24))),  # small
        lambda a: np.asarray(Image.fromarray(a).resize((34, 34)).crop((3, 3, 31, 31))),  # large
        lambda a: 255 - a,  # black on white
        lambda a: (a // 2).astype(np.uint8),  # faint
        _sixteen_bit,  # float, not 8-bit
        unit,  # float, not 8-bit
    ],
    ids=["shifted", "shrunk", "enlarged", "inverted", "faint", "16-bit", "float"],
)
def test_non_mnist_28x28_is_not_taken_as_mnist_and_is_made_mnist(
    digit: Digit, change: Callable[[Digit], NDArray[np.generic]]
) -> None:
    altered = np.ascontiguousarray(change(digit))
    assert altered.shape == (28, 28)
    assert not is_mnist_layout(altered)
    result = to_mnist(altered)
    assert np.abs(result - unit(digit)).mean() < 0.05


def test_other_shapes_and_depths_are_not_mnist_layout(digit: Digit) -> None:
    assert is_mnist_layout(digit)
    assert not is_mnist_layout(np.pad(digit, 1))  # 30x30
    assert not is_mnist_layout(digit.astype(np.uint16))
    assert not is_mnist_layout(np.zeros((28, 28), dtype=np.uint8))
    rgb = np.repeat(digit[:, :, None], 3, axis=2)
    assert not is_mnist_layout(rgb)
