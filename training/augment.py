"""Batched random affine distortion of digit images, done on tensors (fast on a CPU).

One affine matrix per image is drawn, then ``F.affine_grid`` + ``F.grid_sample`` resample the
whole batch at once. The images must be in [0, 1] with a black (0) background so that the
zero padding ``grid_sample`` adds at the borders is background, i.e. apply this *before*
normalisation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F  # noqa: N812 (the conventional name)


@dataclass(frozen=True)
class AffineAugmentation:
    """Ranges of the random distortion; each parameter is drawn uniformly in ``[-x, x]``."""

    rotation_deg: float = 10.0
    scale: float = 0.1  # relative zoom: factor in [1 - scale, 1 + scale]
    shift: float = 0.1  # fraction of the image side
    shear_deg: float = 8.0

    def describe(self) -> str:
        """One line for the model card."""
        return (
            f"random affine per batch on tensors: rotation ±{self.rotation_deg:g}°, "
            f"scale ±{self.scale:g}, shift ±{self.shift:g}, shear ±{self.shear_deg:g}°"
        )


def _uniform(count: int, bound: float, generator: torch.Generator) -> torch.Tensor:
    return (torch.rand(count, generator=generator) * 2.0 - 1.0) * bound


def random_affine_matrices(
    count: int, config: AffineAugmentation, generator: torch.Generator
) -> torch.Tensor:
    """``(count, 2, 3)`` matrices mapping output to input coordinates (``affine_grid``'s
    convention, coordinates in [-1, 1])."""
    angle = _uniform(count, math.radians(config.rotation_deg), generator)
    shear = _uniform(count, math.radians(config.shear_deg), generator)
    scale = 1.0 + _uniform(count, config.scale, generator)
    # A shift of s image sides is 2s in normalised coordinates.
    shift = _uniform(2 * count, 2.0 * config.shift, generator).view(count, 2)
    cos, sin, tan = torch.cos(angle), torch.sin(angle), torch.tan(shear)
    # Rotation @ shear, divided by scale (the grid samples the input, so zooming in by `scale`
    # means reading coordinates shrunk by it).
    matrices = torch.empty(count, 2, 3)
    matrices[:, 0, 0] = cos / scale
    matrices[:, 0, 1] = (cos * tan - sin) / scale
    matrices[:, 1, 0] = sin / scale
    matrices[:, 1, 1] = (sin * tan + cos) / scale
    matrices[:, :, 2] = shift
    return matrices


def random_affine(
    pixels: torch.Tensor, config: AffineAugmentation, generator: torch.Generator
) -> torch.Tensor:
    """Distort each image of ``pixels`` (B, 1, H, W) in [0, 1] with its own random affine map.

    Returns a tensor of the same shape; the random draws come from ``generator`` (on the CPU)
    so that a run is reproducible and resumable.
    """
    matrices = random_affine_matrices(pixels.shape[0], config, generator).to(pixels.device)
    grid = F.affine_grid(matrices, list(pixels.shape), align_corners=False)  # (B, H, W, 2)
    return F.grid_sample(pixels, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
