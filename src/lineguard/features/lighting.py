"""Lighting normalisation: every image brought to the grey level and contrast of the support set.

A few support images show few of the lightings a line's parts are shot under (Magnetic Tile: six set-ups
whose mean grey level ranges over 2.4×). Brightness views widen the bank, but a query lit between or beyond
them still shifts every one of its patches. Matching each image's mean and standard deviation to the support's
averages, before the backbone sees it, removes that shift at its source. One offset and one gain per image,
the same for the three channels, so a colour cast, a stain or any local change stays visible; a part that is
darker or flatter as a whole does not (switch it off where that is the defect to find).

Images are (B, 3, H, W) floats in [0, 1]; a lighting is the pair (mean, standard deviation) over all pixels
and channels of an image.
"""

from __future__ import annotations

import torch
from torch import Tensor


def lighting(images: Tensor) -> Tensor:
    """(B, 3, H, W) -> (B, 2): each image's mean and standard deviation."""
    std, mean = torch.std_mean(images.flatten(1), dim=1)
    return torch.stack([mean, std], dim=1)


def match_lighting(images: Tensor, reference: Tensor) -> Tensor:
    """``images`` (B, 3, H, W) with each image's mean and standard deviation set to ``reference`` (2,),
    clipped to [0, 1]. A flat image (no contrast to scale) only takes the reference mean."""
    own = lighting(images)[:, :, None, None, None]  # (B, 2, 1, 1, 1)
    mean, std = own[:, 0], own[:, 1].clamp_min(1e-6)
    return ((images - mean) / std * reference[1] + reference[0]).clamp(0, 1)
