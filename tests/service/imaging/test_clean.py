"""Cleaning: polarity, lighting, shadows and contrast -> bright ink on an exactly black
background."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray
from PIL import Image
from torch import nn

from benchmarks import image_kinds
from service.errors import BadImage
from service.imaging.clean import (
    cell_grid,
    ink_level,
    ink_on_black,
    inverted,
    keep_near_strokes,
    median,
    normalise_contrast,
)
from service.imaging.decode import Grey
from tests.service.imaging.conftest import (
    Digit,
    Mnist,
    encode,
    ink_box,
    on_paper,
    read,
    run,
    unit,
)


def cleaned(grey: Grey) -> NDArray[np.float32]:
    """``grey`` through polarity and contrast normalisation, as :func:`to_mnist` does it."""
    grid = cell_grid(grey)
    ink, flipped = ink_on_black(grey, grid)
    return normalise_contrast(ink, inverted(grid) if flipped else grid)


# --------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("count", [1, 3, 101, 4097])
def test_median_is_numpys_for_odd_counts(count: int) -> None:
    values = np.random.default_rng(count).normal(size=count).astype(np.float32)
    assert median(values) == float(np.median(values))


def test_median_of_an_even_count_is_the_upper_one() -> None:
    values = np.array([4.0, 1.0, 3.0, 2.0], dtype=np.float32)
    assert median(values) == 3.0


def test_median_takes_every_element_of_a_2d_array() -> None:
    values = np.random.default_rng(0).random((31, 17)).astype(np.float32)  # 527 values
    assert median(values) == float(np.median(values))
    assert median(values) != float(np.median(values[:, 0]))


def test_cell_grid_holds_each_cells_median() -> None:
    image = np.full((160, 240), 200, dtype=np.uint8)
    image[:80, :120] = 40  # the top-left quarter darker
    grid = cell_grid(image)
    assert grid is not None
    assert grid.cell == 30  # the longer side in 8 cells
    assert grid.medians.shape == (5, 8)
    assert grid.medians.dtype == np.float32
    assert grid.medians[0, 0] == pytest.approx(40 / 255)  # in [0, 1] whatever the depth
    assert grid.medians[-1, -1] == pytest.approx(200 / 255)
    flipped = inverted(grid)
    assert flipped is not None
    assert np.allclose(flipped.medians, 1 - grid.medians)


def test_cell_grid_of_a_small_picture_is_none(digit: Digit) -> None:
    assert cell_grid(digit) is None  # 28x28: cells of 3 px, too small
    assert inverted(None) is None


# --------------------------------------------------------------------------------------------
# Polarity
# --------------------------------------------------------------------------------------------


def test_ink_on_black_inverts_light_backgrounds(digit: Digit) -> None:
    grey = np.asarray(on_paper(digit))
    ink, flipped = ink_on_black(grey, cell_grid(grey))
    assert flipped
    assert ink.dtype == np.float32
    assert ink[0, 0] == pytest.approx(1 - 235 / 255)  # paper became dark
    assert np.allclose(ink, 1 - unit(grey), atol=1e-6)


def test_ink_on_black_inverts_float_pictures_too(digit: Digit) -> None:
    grey = unit(on_paper(digit))
    ink, flipped = ink_on_black(grey, cell_grid(grey))
    assert flipped
    assert np.array_equal(ink, 1 - grey)


def test_ink_on_black_keeps_dark_backgrounds(digit: Digit) -> None:
    ink, flipped = ink_on_black(digit, cell_grid(digit))
    assert not flipped
    assert np.array_equal(ink, unit(digit))


def test_ink_on_black_follows_the_ink_not_a_threshold(digit: Digit) -> None:
    # Dim paper (grey 90) with darker ink (30): the paper is still the background.
    grey = np.asarray(on_paper(digit, paper=90, ink=30))
    ink, flipped = ink_on_black(grey, cell_grid(grey))
    assert flipped
    assert np.allclose(ink, 1 - unit(grey), atol=1e-6)
    # And light ink (200) on a darker board (120) is kept as it is.
    board = np.asarray(on_paper(digit, paper=120, ink=200))
    assert not ink_on_black(board, cell_grid(board))[1]


# --------------------------------------------------------------------------------------------
# Contrast, lighting and shadows
# --------------------------------------------------------------------------------------------


def test_normalise_contrast_stretches_faint_ink_and_zeroes_background(digit: Digit) -> None:
    result = cleaned(unit(on_paper(digit, paper=150, ink=110)))
    assert result.dtype == np.float32
    assert result.max() == 1.0
    assert result.min() == 0.0
    assert (result == 1.0).sum() > 0.05 * (result > 0).sum()
    assert result[:5].max() == 0.0  # the paper is exactly black


def test_normalise_contrast_removes_uneven_light(digit: Digit) -> None:
    paper = unit(on_paper(digit, side=300))
    light = np.linspace(0.45, 1.0, 300, dtype=np.float32)[None, :]  # dark left, bright right
    noise = np.random.default_rng(0).normal(0, 0.01, paper.shape).astype(np.float32)
    photo = np.clip(paper * light + noise, 0, 1)
    result = cleaned(photo)
    background = result[np.asarray(on_paper(digit, side=300)) > 230]
    assert (background > 0).mean() < 0.01
    # Ink in the shadow is as strong as ink in the light.
    left, right = result[:, :150], result[:, 150:]
    assert abs(np.percentile(left[left > 0], 75) - np.percentile(right[right > 0], 75)) < 0.15


def test_background_follows_a_shadow_across_the_page(digit: Digit) -> None:
    paper = unit(on_paper(digit, side=240))
    shade = np.ones_like(paper)
    shade[:, :100] = 0.6  # a hard-edged shadow over the left side, across the digit
    result = cleaned(paper * shade)
    stroke_free = np.asarray(on_paper(digit, side=240)) > 230
    assert np.abs(result[stroke_free]).mean() < 0.03
    assert np.percentile(np.abs(result[stroke_free]), 99) < 0.25  # at most along the edge
    # The shadow's edge is no ink: the strokes are found where they are, on both sides.
    assert (result[:, :100][~stroke_free[:, :100]] > 0).mean() > 0.5
    unshaded = cleaned(paper)
    assert np.abs(result - unshaded).mean() < 0.03


def test_blank_paper_has_no_digit() -> None:
    rng = np.random.default_rng(0)
    light = np.linspace(0.6, 0.9, 320, dtype=np.float32)[None, :] * np.ones((240, 1), np.float32)
    paper = np.clip(light + rng.normal(0, 0.015, light.shape), 0, 1).astype(np.float32)
    with pytest.raises(BadImage) as caught:
        cleaned(paper)
    assert caught.value.code == "no_digit"


def test_ink_barely_above_the_paper_is_no_digit(digit: Digit) -> None:
    with pytest.raises(BadImage) as caught:
        cleaned(np.asarray(on_paper(digit, paper=200, ink=195)))  # 5 grey levels: no pen
    assert caught.value.code == "no_digit"


def test_ink_level_is_the_pen_not_the_ruled_lines() -> None:
    rng = np.random.default_rng(0)
    lines = rng.normal(0.3, 0.03, 20000)  # many faint pixels: a notebook's ruled lines
    pen = rng.normal(0.8, 0.05, 3000)  # fewer, strong: the digit
    strong = np.concatenate([lines, pen]).astype(np.float32)
    assert ink_level(strong) == pytest.approx(0.8, abs=0.03)
    assert float(np.percentile(strong, 75)) < 0.4  # a plain percentile would pick the lines


def test_keep_near_strokes_drops_faint_lines_but_keeps_edges() -> None:
    ink = np.zeros((60, 80), dtype=np.float32)
    ink[:, 38:42] = 1.0  # a stroke's core ...
    ink[:, 37] = ink[:, 42] = 0.3  # ... and its anti-aliased edges
    ink[20:22, :] = np.maximum(ink[20:22, :], 0.3)  # a ruled line crossing it
    kept = keep_near_strokes(ink.copy())
    assert np.array_equal(kept[:, 37:43], ink[:, 37:43])
    assert kept[20:22, :30].max() == 0.0
    assert kept[20:22, 50:].max() == 0.0


def test_ruled_notebook_paper_is_read(mnist: Mnist) -> None:
    images, labels = mnist[0][:30], mnist[1][:30]
    for seed, pixels in enumerate(images):
        result = run(image_kinds.notebook_jpeg(pixels, seed))
        height, width = ink_box(result)
        assert max(height, width) in (20, 21)
        assert np.abs(result - unit(pixels)).mean() < 0.1, f"digit {seed} ({labels[seed]})"


@pytest.mark.parametrize("side", [12, 16, 24])
def test_a_tight_crop_mostly_ink_is_read(mnist: Mnist, reader: nn.Module, side: int) -> None:
    """A digit cropped to its ink and scaled to a few pixels (a form's field, scikit-learn's
    8x8 digits) is mostly ink: its paper is no longer at its median. Each is still read."""
    images, labels = mnist[0][:40], mnist[1][:40]
    seen = []
    for pixels in images:
        rows = np.flatnonzero(pixels.max(axis=1))
        cols = np.flatnonzero(pixels.max(axis=0))
        crop = 255 - pixels[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]  # dark on light
        scale = side / max(crop.shape)
        size = (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale)))
        small = Image.fromarray(crop, mode="L").resize(size, Image.Resampling.BOX)
        seen.append(run(encode(small)))  # raises no_digit if the paper is mistaken
    # the reader is a quick MLP (~96 % on MNIST); 8 px leaves little of a digit's shape
    assert (read(reader, np.stack(seen)) == labels).mean() >= 0.7
