"""Synthetic defects: Perlin-noise masks that blend foreign texture into normal images (as in DRAEM).

Methods trained on normal images alone never see what a defect looks like; planting artificial ones gives
them negatives to contrast with. Perlin noise thresholded at a random level makes blob-, stain- and
crack-like regions of many sizes, with no shape a real defect would have to match; inside them the image is
mixed with texture from somewhere else. Everything is drawn from the ``torch.Generator`` handed in.

Letters: B images, H × W image size, r × r the noise lattice.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from lineguard.errors import ParameterError


def perlin_noise(size: int, cells: int, generator: torch.Generator) -> Tensor:
    """Gradient noise on a ``cells`` × ``cells`` lattice over a size × size image -> (size, size), roughly in
    [−1, 1], zero at every lattice point. ``size`` must be a multiple of ``cells``."""
    if cells < 1 or size % cells:
        raise ParameterError(f"perlin noise needs size divisible by cells, got size={size}, cells={cells}")
    angles = 2 * math.pi * torch.rand(cells + 1, cells + 1, generator=generator)
    gradients = torch.stack([angles.cos(), angles.sin()], dim=-1)  # (r+1, r+1, 2) unit lattice gradients
    step = size // cells
    local = (torch.arange(size) % step + 0.5) / step  # position inside the cell, in (0, 1)
    cell = torch.arange(size) // step
    v, u = torch.meshgrid(local, local, indexing="ij")  # (H, W): row offset, column offset

    def corner(dy: int, dx: int) -> Tensor:  # dot product of the offset to a corner with its gradient
        g = gradients[(cell + dy)[:, None], (cell + dx)[None, :]]  # (H, W, 2)
        return g[..., 0] * (u - dx) + g[..., 1] * (v - dy)

    def fade(t: Tensor) -> Tensor:
        return t * t * t * (t * (t * 6 - 15) + 10)

    fu, fv = fade(u), fade(v)
    top = torch.lerp(corner(0, 0), corner(0, 1), fu)
    bottom = torch.lerp(corner(1, 0), corner(1, 1), fu)
    return math.sqrt(2) * torch.lerp(top, bottom, fv)


def perlin_masks(n: int, size: int, generator: torch.Generator, *, min_cells: int = 2, max_cells: int = 32,
                 threshold: float = 0.5) -> Tensor:
    """(n, size, size) bool: thresholded Perlin noise, each mask with its own lattice (a power of two between
    ``min_cells`` and ``max_cells``, smaller than ``size``) so that defects come at many scales."""
    powers = range(int(math.log2(min_cells)), int(math.log2(min(max_cells, size))) + 1)
    choices = [2 ** p for p in powers if size % 2 ** p == 0]
    if not choices:
        raise ParameterError(f"no lattice between {min_cells} and {max_cells} cells divides size {size}")
    masks = []
    for _ in range(n):
        cells = choices[int(torch.randint(len(choices), (), generator=generator))]
        masks.append(perlin_noise(size, cells, generator) > threshold)
    return torch.stack(masks)


def foreign_textures(images: Tensor, generator: torch.Generator) -> Tensor:
    """(B, 3, H, W) -> (B, 3, H, W): for each image, another image of the batch turned by a multiple of 90°,
    with its tones inverted or not, rescaled and shifted — texture that looks like the product's material but
    does not belong where it lands. No colour cast: on a grey product that alone would give a defect away.
    B = 1 uses the image itself."""
    b = len(images)
    others = images.roll(1, dims=0).rot90(int(torch.randint(1, 4, (), generator=generator)), dims=(-2, -1))
    invert = (torch.rand(b, 1, 1, 1, generator=generator) < 0.5).to(images)
    toned = invert * (1 - others) + (1 - invert) * others
    gain = (0.5 + torch.rand(b, 1, 1, 1, generator=generator)).to(images)  # contrast in [0.5, 1.5)
    offset = (0.4 * torch.rand(b, 1, 1, 1, generator=generator) - 0.2).to(images)
    return (toned * gain + offset).clamp(0, 1)


def plant_defects(images: Tensor, generator: torch.Generator, *, min_opacity: float = 0.3,
                  threshold: float = 0.5) -> tuple[Tensor, Tensor]:
    """(B, 3, H, W) normal images -> (defective images (B, 3, H, W), masks (B, H, W) bool).

    Inside each mask the image becomes a blend of foreign texture (opacity uniform in [min_opacity, 1]) and
    itself; outside it is untouched. H must equal W.
    """
    b, _, h, w = images.shape
    if h != w:
        raise ValueError(f"plant_defects needs square images, got {h}x{w}")
    masks = perlin_masks(b, h, generator, threshold=threshold)  # (B, H, W)
    opacity = min_opacity + (1 - min_opacity) * torch.rand(b, 1, 1, 1, generator=generator)
    alpha = masks[:, None].to(images) * opacity.to(images)  # (B, 1, H, W)
    return images * (1 - alpha) + foreign_textures(images, generator) * alpha, masks.to(images.device)


def downsample_masks(masks: Tensor, grid: tuple[int, int]) -> Tensor:
    """(B, H, W) bool -> (B, h, w) float: the fraction of each feature cell's pixels inside the mask."""
    return F.adaptive_avg_pool2d(masks[:, None].float(), grid)[:, 0]
