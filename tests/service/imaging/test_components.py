"""Components: which strokes form the digit, and which are specks or clutter."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray

from service.errors import BadImage
from service.imaging.components import ANALYSIS_SIDE, Components, components, crop_to_ink
from tests.service.imaging.conftest import Digit, unit


def pixel_box(found: Components, component: int) -> tuple[int, int, int, int]:
    """(top, left, bottom, right), inclusive, in pixels of the picture, of a component's cells."""
    row, col = found.origin
    factor = found.factor
    return (
        (row + int(found.top[component])) * factor,
        (col + int(found.left[component])) * factor,
        (row + int(found.bottom[component]) + 1) * factor - 1,
        (col + int(found.right[component]) + 1) * factor - 1,
    )


def component_at(found: Components, row: int, col: int) -> int:
    """The component of the picture's pixel (row, col)."""
    origin_row, origin_col = found.origin
    return int(found.labels[row // found.factor - origin_row, col // found.factor - origin_col])


# --------------------------------------------------------------------------------------------
# Labelling
# --------------------------------------------------------------------------------------------


def test_two_separated_blobs_are_two_components_with_their_boxes() -> None:
    ink = np.zeros((100, 120), dtype=np.float32)
    ink[10:30, 10:40] = 1.0
    ink[60:90, 70:110] = 0.5
    found = components(ink)
    assert found.factor == 1  # small enough to label pixel by pixel
    assert found.mass.size == 3  # the background and two blobs
    first, second = component_at(found, 20, 20), component_at(found, 70, 80)
    assert {first, second} == {1, 2}
    assert pixel_box(found, first) == (10, 10, 29, 39)
    assert pixel_box(found, second) == (60, 70, 89, 109)
    assert found.mass[first] == pytest.approx(20 * 30 * 1.0)
    assert found.mass[second] == pytest.approx(30 * 40 * 0.5)
    assert found.mass[0] == 0.0
    assert not found.edge.any()
    assert found.labels[ink[10:90, 10:110] == 0].max() == 0  # the background is component 0


def test_large_pictures_are_labelled_on_a_coarse_grid() -> None:
    ink = np.zeros((300, 400), dtype=np.float32)
    ink[10:30, 10:40] = 1.0
    ink[160:200, 200:280] = 0.5
    found = components(ink)
    assert found.factor == -(-400 // ANALYSIS_SIDE)  # at most ANALYSIS_SIDE cells a side
    assert found.mass.size == 3
    first, second = component_at(found, 20, 20), component_at(found, 180, 240)
    assert {first, second} == {1, 2}
    # The boxes are whole cells around the ink, never more than one cell loose.
    for component, (top, left, bottom, right) in (
        (first, (10, 10, 29, 39)),
        (second, (160, 200, 199, 279)),
    ):
        box = pixel_box(found, component)
        assert box[0] <= top < box[0] + found.factor
        assert box[1] <= left < box[1] + found.factor
        assert box[2] - found.factor < bottom <= box[2]
        assert box[3] - found.factor < right <= box[3]
    assert found.mass[first] == pytest.approx(20 * 30 / found.factor**2, rel=0.01)
    assert found.mass[second] == pytest.approx(40 * 80 * 0.5 / found.factor**2, rel=0.01)


def test_diagonal_neighbours_are_one_component() -> None:
    ink = np.zeros((40, 40), dtype=np.float32)
    ink[10:20, 10:20] = 1.0
    ink[20:30, 20:30] = 1.0  # touches the first at a corner only
    assert components(ink).mass.size == 2  # 8-connected


def test_a_band_along_a_side_is_an_edge() -> None:
    ink = np.zeros((100, 100), dtype=np.float32)
    ink[40:60, 40:60] = 1.0
    ink[:, 95:] = 1.0  # the edge of the paper
    found = components(ink)
    assert found.edge[component_at(found, 50, 97)]
    assert not found.edge[component_at(found, 50, 50)]


def test_faint_ink_is_no_component() -> None:
    ink = np.full((50, 50), 0.2, dtype=np.float32)  # below the mask's level everywhere
    with pytest.raises(BadImage) as caught:
        components(ink)
    assert caught.value.code == "no_digit"


# --------------------------------------------------------------------------------------------
# Cropping to the digit
# --------------------------------------------------------------------------------------------


def test_crop_to_ink_takes_the_bounding_box() -> None:
    ink = np.zeros((100, 120), dtype=np.float32)
    ink[20:70, 30:55] = 1.0
    crop = crop_to_ink(ink)
    assert crop.shape == (50, 25)
    assert np.array_equal(crop, ink[20:70, 30:55])


def test_crop_to_ink_ignores_specks_and_paper_edges() -> None:
    ink = np.zeros((240, 320), dtype=np.float32)
    ink[60:160, 100:160] = 1.0  # the digit (a bar)
    ink[220:223, 20:23] = 1.0  # a speck of dust far away
    ink[10:12, 300:302] = 0.8  # another
    ink[:, 312:] = 1.0  # the edge of the paper (a band along the right side)
    ink[236:, :] = 1.0  # the table under the photo's bottom edge
    assert crop_to_ink(ink).shape == (100, 60)


def test_crop_to_ink_zeroes_a_speck_inside_the_digits_box() -> None:
    ink = np.zeros((200, 200), dtype=np.float32)
    ink[20:180, 20:40] = 1.0  # an L: its box holds much empty paper
    ink[160:180, 20:180] = 1.0
    ink[60:62, 120:122] = 1.0  # dust inside the box, far from the strokes
    crop = crop_to_ink(ink)
    assert crop.shape == (160, 160)
    assert crop[40:42, 100:102].max() == 0.0
    assert crop.sum() == pytest.approx(ink.sum() - 4.0)


def test_crop_to_ink_keeps_broken_strokes() -> None:
    ink = np.zeros((200, 200), dtype=np.float32)
    ink[50:150, 90:100] = 1.0  # a stroke
    ink[40:46, 70:130] = 1.0  # a separate bar just above it (a 5's top, a 7's bar)
    assert crop_to_ink(ink).shape == (110, 60)


def test_crop_to_ink_keeps_a_digit_touching_the_border() -> None:
    ink = np.zeros((60, 60), dtype=np.float32)
    ink[:, 25:32] = 1.0  # a "1" cropped tightly by the user: touches top and bottom
    assert crop_to_ink(ink).shape == (60, 7)


def test_crop_to_ink_of_an_mnist_digit_is_its_box(digit: Digit) -> None:
    ink = unit(digit)
    rows, cols = np.flatnonzero(digit.max(axis=1)), np.flatnonzero(digit.max(axis=0))
    expected: NDArray[np.float32] = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    assert np.array_equal(crop_to_ink(ink), expected)
