"""Mutual scoring (MuSc, Li et al., ICLR 2024): every image of an unlabeled batch scores every other.

Letters: N images, S subsets, L_l patches of level l, D_l its channels, h × w the finest grid.

Each patch is compared with its nearest patch in every other image of the batch; the smallest ``fraction``
of those N − 1 distances are averaged (a normal pattern recurs in most images, a defect in few), for every
level and LNAMD radius, and the per-view maps are averaged. The image score is the map's maximum, then
re-scored over a similarity graph of global image embeddings (RsCIN). The cost grows with N², so a large
batch can be cut into interleaved subsets of at most ``max_subset_size`` images, scored separately as MuSc
does; the re-scoring still spans the whole batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from lineguard.errors import ParameterError
from lineguard.features.lnamd import as_patch_rows, lnamd
from lineguard.methods.base import Prediction, register
from lineguard.methods.zero_data import ZeroDataDetector
from lineguard.params import FRACTION, POSITIVE, Each, Interval
from lineguard.scoring.batch import mutual_patch_scores
from lineguard.scoring.image import max_score
from lineguard.scoring.maps import combine_views


@register
class Mutual(ZeroDataDetector):
    """Parameters: ``radii`` LNAMD radii (None: 1, 3, 5); ``fraction`` of the other images averaged (0.3, MuSc);
    ``rescore_k`` neighbour counts of the re-scoring (None: 1, 2, 3; [] turns it off); ``max_subset_size``
    caps the images compared with each other (None: the whole batch); ``sigma`` the map blur in pixels (0, as
    MuSc: on bottle a 4 px blur lowered AUPRO from 0.957 to 0.953 and moved faint defects' peaks to the border)."""

    name = "mutual"
    parameter_constraints = {"fraction": [FRACTION], "max_subset_size": [Interval(int, 2, None)],
                             "rescore_k": [Each(POSITIVE)], "radii": [Each(Interval(int, 1, None, odd=True))]}

    def __init__(self, *, backbone: str = "effnet-lite0", levels: list[int] | None = None,
                 image_size: int | tuple[int, int] = 256,
                 radii: list[int] | None = None, fraction: float = 0.3, rescore_k: list[int] | None = None,
                 max_subset_size: int | None = None, sigma: float = 0.0, weights: str | None = None,
                 device: str = "cpu", batch_size: int = 16):
        self.backbone = backbone
        self.levels = levels
        self.image_size = image_size
        self.radii = radii
        self.fraction = fraction
        self.rescore_k = rescore_k
        self.max_subset_size = max_subset_size
        self.sigma = sigma
        self.weights = weights
        self.device = device
        self.batch_size = batch_size

    def subsets(self, n: int) -> list[Tensor]:
        """Image indices of each subset: image i goes to subset i mod S, so an ordered folder (by time or
        by type) is spread evenly over the subsets."""
        if self.max_subset_size is None:
            return [torch.arange(n)]
        count = -(-n // self.max_subset_size)
        return [torch.arange(s, n, count) for s in range(count)]

    def predict_levels(self, levels: Sequence[Tensor], subsets: Sequence[Tensor] | None = None) -> Prediction:
        """Compare images only within each subset of indices (default: ``subsets(N)``)."""
        self.validate_params()  # also here: benchmarks score cached levels without predict()
        n = len(levels[0])
        subsets = self.subsets(n) if subsets is None else subsets
        covered = torch.cat(list(subsets)).sort().values
        if not torch.equal(covered, torch.arange(n)):
            raise ParameterError(f"subsets must cover each of the {n} images exactly once")
        grid = torch.empty(n, *levels[0].shape[-2:], device=levels[0].device)  # (N, h, w)
        for subset in subsets:
            views = lnamd([level[subset] for level in levels], self.radius_list)
            view_scores = [[mutual_patch_scores(as_patch_rows(v), fraction=self.fraction).view(len(subset),
                                                                                               *v.shape[-2:])
                            for v in level_views] for level_views in views]
            grid[subset] = combine_views(view_scores)
        return self.finish(grid, max_score(grid), levels)
