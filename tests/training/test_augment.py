from __future__ import annotations

import pytest
import torch

from training.augment import AffineAugmentation, random_affine, random_affine_matrices
from training.data import MnistSplits, to_float

NONE = AffineAugmentation(rotation_deg=0.0, scale=0.0, shift=0.0, shear_deg=0.0)


def _centre_of_mass(pixels: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) -> (B, 2) as (x, y) in pixels."""
    height, width = pixels.shape[-2:]
    mass = pixels.sum(dim=(1, 2, 3))
    ys = torch.arange(height, dtype=torch.float32).view(1, 1, height, 1)
    xs = torch.arange(width, dtype=torch.float32).view(1, 1, 1, width)
    x = (pixels * xs).sum(dim=(1, 2, 3)) / mass
    y = (pixels * ys).sum(dim=(1, 2, 3)) / mass
    return torch.stack([x, y], dim=1)


def test_zero_ranges_leave_images_unchanged(mnist: MnistSplits) -> None:
    pixels = to_float(mnist.validation.images[:16])
    result = random_affine(pixels, NONE, torch.Generator().manual_seed(0))
    assert torch.allclose(result, pixels, atol=1e-5)


def test_distortion_keeps_shape_range_and_most_ink(mnist: MnistSplits) -> None:
    pixels = to_float(mnist.validation.images[:64])
    result = random_affine(pixels, AffineAugmentation(), torch.Generator().manual_seed(0))
    assert result.shape == pixels.shape
    assert float(result.min()) >= 0.0 and float(result.max()) <= 1.0 + 1e-6
    assert not torch.allclose(result, pixels, atol=1e-3)
    ink_ratio = result.sum(dim=(1, 2, 3)) / pixels.sum(dim=(1, 2, 3))
    assert float(ink_ratio.min()) > 0.6 and float(ink_ratio.max()) < 1.5


def test_same_generator_seed_gives_the_same_distortion(mnist: MnistSplits) -> None:
    pixels = to_float(mnist.validation.images[:8])
    first = random_affine(pixels, AffineAugmentation(), torch.Generator().manual_seed(7))
    second = random_affine(pixels, AffineAugmentation(), torch.Generator().manual_seed(7))
    assert torch.equal(first, second)


def test_shift_moves_the_digit_within_its_range(mnist: MnistSplits) -> None:
    pixels = to_float(mnist.validation.images[:256])
    shift_only = AffineAugmentation(rotation_deg=0.0, scale=0.0, shift=0.1, shear_deg=0.0)
    moved = random_affine(pixels, shift_only, torch.Generator().manual_seed(1))
    displacement = (_centre_of_mass(moved) - _centre_of_mass(pixels)).abs()
    assert float(displacement.max()) <= 0.1 * 28 + 0.5  # at most 10% of the side (+ rounding)
    assert float(displacement.mean()) > 0.5  # and it does move


@pytest.mark.parametrize("degrees", [5.0, 30.0])
def test_rotation_matrices_are_rotations_within_range(degrees: float) -> None:
    config = AffineAugmentation(rotation_deg=degrees, scale=0.0, shift=0.0, shear_deg=0.0)
    matrices = random_affine_matrices(1000, config, torch.Generator().manual_seed(0))
    linear = matrices[:, :, :2]
    assert torch.allclose(torch.linalg.det(linear), torch.ones(1000), atol=1e-5)
    angles = torch.atan2(linear[:, 1, 0], linear[:, 0, 0]).rad2deg().abs()
    assert float(angles.max()) <= degrees + 1e-4
    assert float(angles.max()) > 0.9 * degrees
    assert torch.equal(matrices[:, :, 2], torch.zeros(1000, 2))
