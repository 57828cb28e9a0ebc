"""Multi-level backbone maps → one grid of patch features.

Letters: B images, C channels, h × w the feature grid, D feature dimension.

PatchCore-style features aggregate each level over a small neighbourhood first (so a patch carries its local
context, which makes the match tolerant to small shifts), then bring every level onto the grid of the
finest one and concatenate. Test-batch methods use the same aggregation at several radii (1, 3, 5).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from lineguard.errors import ParameterError


def aggregate_neighbourhood(features: Tensor, patch_size: int) -> Tensor:
    """Average every cell with its ``patch_size × patch_size`` neighbourhood (odd size, stride 1, same size).

    (B, C, h, w) -> (B, C, h, w). Padding cells count as zeros, like PatchCore's AvgPool2d(p, 1, p // 2).
    Pooled in channels-last layout: the same values, 6–8× faster on the CPU (200 × 40 × 32 × 32, r = 5:
    44 ms against 244 ms), since each cell's neighbours are then contiguous runs of channels.
    """
    if patch_size < 1 or patch_size % 2 == 0:
        raise ParameterError(f"neighbourhood size must be a positive odd number, got {patch_size}")
    if patch_size == 1:
        return features
    return F.avg_pool2d(features.contiguous(memory_format=torch.channels_last), kernel_size=patch_size, stride=1,
                        padding=patch_size // 2)


def align_levels(maps: Sequence[Tensor], grid: tuple[int, int] | None = None) -> Tensor:
    """Resize every level to ``grid`` (default: the first, finest level's) and concatenate channels.

    [(B, C_l, h_l, w_l)] -> (B, sum C_l, h, w); bilinear, as PatchCore and PaDiM do.
    """
    if not maps:
        raise ParameterError("no feature levels given")
    grid = grid or tuple(maps[0].shape[-2:])
    resized = [m if tuple(m.shape[-2:]) == grid else F.interpolate(m, size=grid, mode="bilinear",
                                                                     align_corners=False) for m in maps]
    return torch.cat(resized, dim=1)


def reduce_channels(features: Tensor, dim: int) -> Tensor:
    """Shrink D to ``dim`` by averaging adjacent channels (patchcore-inspection's adaptive pooling).

    Cheaper than a learned projection and needs no fitting. (B, D, h, w) -> (B, dim, h, w).
    """
    b, d, h, w = features.shape
    if dim >= d:
        return features
    flat = features.permute(0, 2, 3, 1).reshape(-1, 1, d)  # -> (B*h*w, 1, D)
    pooled = F.adaptive_avg_pool1d(flat, dim)  # -> (B*h*w, 1, dim)
    return pooled.reshape(b, h, w, dim).permute(0, 3, 1, 2)


def patch_features(maps: Sequence[Tensor], *, patch_size: int = 3, reduce_dim: int | None = None,
                   grid: tuple[int, int] | None = None) -> Tensor:
    """Backbone levels -> one (B, D, h, w) grid: aggregate, align, concatenate, optionally reduce."""
    aggregated = [aggregate_neighbourhood(m, patch_size) for m in maps]
    features = align_levels(aggregated, grid)
    return reduce_channels(features, reduce_dim) if reduce_dim else features


def flatten_patches(features: Tensor) -> Tensor:
    """(B, D, h, w) -> (B * h * w, D), rows ordered image by image, then row-major over the grid."""
    return features.permute(0, 2, 3, 1).reshape(-1, features.shape[1])
