"""Synthetic defects: Perlin noise against the textbook formula, masks, blending only inside the mask."""

from __future__ import annotations

import math

import pytest
import torch

from lineguard.features.perlin import downsample_masks, perlin_masks, perlin_noise, plant_defects


def textbook_perlin(x: float, y: float, gradients: torch.Tensor) -> float:
    """Classic 2-D gradient noise at one point (x, y) in lattice units, written out corner by corner."""
    x0, y0 = int(x), int(y)
    fade = lambda t: 6 * t ** 5 - 15 * t ** 4 + 10 * t ** 3  # noqa: E731
    total = 0.0
    for dy in (0, 1):
        for dx in (0, 1):
            gx, gy = gradients[y0 + dy, x0 + dx].tolist()
            dot = gx * (x - x0 - dx) + gy * (y - y0 - dy)
            wx = fade(x - x0) if dx else 1 - fade(x - x0)
            wy = fade(y - y0) if dy else 1 - fade(y - y0)
            total += wx * wy * dot
    return math.sqrt(2) * total


def test_noise_matches_the_textbook_formula():
    size, cells = 16, 2
    noise = perlin_noise(size, cells, torch.Generator().manual_seed(3))
    angles = 2 * math.pi * torch.rand(cells + 1, cells + 1, generator=torch.Generator().manual_seed(3))
    gradients = torch.stack([angles.cos(), angles.sin()], dim=-1)
    step = size / cells
    for row, col in [(0, 0), (3, 11), (8, 8), (15, 2), (10, 15)]:
        expected = textbook_perlin((col + 0.5) / step, (row + 0.5) / step, gradients)
        assert noise[row, col].item() == pytest.approx(expected, abs=1e-5)


def test_noise_is_deterministic_bounded_and_checked():
    a = perlin_noise(64, 8, torch.Generator().manual_seed(0))
    b = perlin_noise(64, 8, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.abs().max() <= 1.0
    with pytest.raises(ValueError, match="divisible"):
        perlin_noise(30, 4, torch.Generator())


def test_masks_come_at_several_sizes_and_cover_part_of_the_image():
    masks = perlin_masks(64, 64, torch.Generator().manual_seed(0))
    assert masks.shape == (64, 64, 64) and masks.dtype == torch.bool
    coverage = masks.float().mean(dim=(1, 2))
    assert 0 < coverage.mean() < 0.3 and coverage.std() > 0


def test_defects_change_the_image_only_inside_the_mask():
    images = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    defective, masks = plant_defects(images, torch.Generator().manual_seed(2))
    outside = ~masks[:, None].expand_as(images)
    assert torch.equal(defective[outside], images[outside])
    assert (defective - images).abs()[~outside].mean() > 0.05
    again, _ = plant_defects(images, torch.Generator().manual_seed(2))
    assert torch.equal(again, defective)


def test_downsampled_masks_are_cell_fractions():
    masks = torch.zeros(1, 4, 4, dtype=torch.bool)
    masks[0, :2, :2] = True
    masks[0, 2, 2] = True
    expected = torch.tensor([[[1.0, 0.0], [0.0, 0.25]]])
    assert torch.equal(downsample_masks(masks, (2, 2)), expected)
