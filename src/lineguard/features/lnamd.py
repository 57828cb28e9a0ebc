"""LayerNorm + multi-radius neighbourhood aggregation ("LNAMD", MuSc): the features of test-batch methods.

Letters: B images, C channels, h × w a level's grid, L = h · w patches, R radii.

Zero-data methods compare patches of *different* images, so every image is first brought to a common
scale: LayerNorm over the whole (C, h, w) map of an image (no learned affine) removes per-image brightness
and contrast offsets that would otherwise dominate the distances. Each cell is then averaged with its r × r
neighbourhood (zero padding counted, like PatchCore), for several r: a small r keeps thin defects sharp, a
large r sees defects larger than one cell and tolerates small misalignments. Every radius is scored on its own
and the maps averaged, so no single radius has to fit all defect sizes. Finally each patch vector is scaled
to unit length, so distances measure the pattern, not the activation energy.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor

from lineguard.errors import ParameterError
from lineguard.features.patches import aggregate_neighbourhood

DEFAULT_RADII = (1, 3, 5)  # MuSc's choice: 1 cell for thin defects, up to 5 for defects spanning several cells


def layer_normalise(features: Tensor) -> Tensor:
    """(B, C, h, w) -> (B, C, h, w), each image normalised to mean 0, variance 1 over all its values."""
    return F.layer_norm(features, features.shape[1:])


def lnamd(levels: Sequence[Tensor], radii: Sequence[int] = DEFAULT_RADII) -> list[list[Tensor]]:
    """Raw backbone levels [(B, C_l, h_l, w_l)] -> ``views[l][r]`` (B, C_l, h_l, w_l), unit length along C.

    Levels keep their own grids (no resampling), which keeps the coarse level four times cheaper to compare.
    """
    if not radii:
        raise ParameterError("at least one aggregation radius is needed")
    views = []
    for level in levels:
        normalised = layer_normalise(level.float())
        views.append([F.normalize(aggregate_neighbourhood(normalised, r), dim=1) for r in radii])
    return views


def as_patch_rows(view: Tensor) -> Tensor:
    """(B, C, h, w) -> (B, L, C): one row per patch, grouped by image, row-major over the grid."""
    return view.flatten(2).transpose(1, 2)
