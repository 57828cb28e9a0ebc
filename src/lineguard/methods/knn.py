"""Plain nearest-neighbour detector: every normal patch feature is kept, none is subsampled.

The simplest full-shot method and the upper bound of what a coreset can keep: a query patch scores its
Euclidean distance to the nearest normal patch (mean over ``k`` neighbours); the image score is the maximum.
``update`` appends the new images' patches: the same bank a fit on everything builds.

Letters: N images, D feature dimension, h × w the feature grid, M bank size.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from lineguard.features.patches import flatten_patches
from lineguard.memory.knn import SEARCH_BACKENDS
from lineguard.methods.base import register
from lineguard.methods.grid import GridDetector
from lineguard.params import POSITIVE, Options


@register
class KNN(GridDetector):
    name = "knn"
    parameter_constraints = {"k": [POSITIVE], "search": [Options(*SEARCH_BACKENDS)]}
    search_bank = "memory_bank_"
    grows = True

    def __init__(self, *, backbone: str = "effnet-lite0", levels: list[int] | None = None,
                 image_size: int | tuple[int, int] = 256,
                 patch_size: int = 3, k: int = 1, search: str = "auto", sigma: float = 4.0,
                 weights: str | None = None, device: str = "cpu", batch_size: int = 16):
        self.backbone = backbone
        self.levels = levels
        self.image_size = image_size
        self.patch_size = patch_size
        self.k = k
        self.search = search
        self.sigma = sigma
        self.weights = weights
        self.device = device
        self.batch_size = batch_size

    def search_backend(self) -> str:
        return self.search

    def learn(self, features: Iterator[Tensor]) -> None:
        self.memory_bank_ = torch.cat([flatten_patches(f) for f in features])  # -> (M, D)

    def grow(self, features: Iterator[Tensor]) -> None:
        self.memory_bank_ = torch.cat([self.memory_bank_, *(flatten_patches(f) for f in features)])  # -> (M', D)

    def patch_scores(self, features: Tensor) -> Tensor:
        n, _, h, w = features.shape
        dist, _ = self.index.search(flatten_patches(features), k=self.k)
        return dist.mean(1).view(n, h, w)
