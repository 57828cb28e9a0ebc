"""Plain nearest-neighbour detector: every normal patch feature is kept, none is subsampled.

The simplest full-shot method and the upper bound of what a coreset can keep: a query patch scores its
Euclidean distance to the nearest normal patch (mean over ``k`` neighbours); the image score is the maximum.
``search`` picks the index (``memory.knn``): ``auto`` turns to an approximate IVF index from 16,384 bank rows,
``faiss`` or ``torch`` stay exact.

Letters: N images, D feature dimension, h × w the feature grid, M bank size.
"""

from __future__ import annotations

from typing import Self

import torch

from lineguard.features.extractor import BackboneFeatures
from lineguard.features.patches import flatten_patches
from lineguard.memory.knn import NearestNeighbours, check_search
from lineguard.methods.base import Detector, ImageInput, Prediction, as_batches, register
from lineguard.scoring.image import max_score
from lineguard.scoring.maps import anomaly_maps


@register
class KNN(BackboneFeatures, Detector):
    name = "knn"

    def __init__(self, backbone: str = "effnet-lite0", levels: list[int] | None = None, image_size: int = 256,
                 radius: int = 3, k: int = 1, search: str = "auto", sigma: float = 4.0, weights: str | None = None,
                 device: str = "cpu", batch_size: int = 16):
        self.backbone = backbone
        self.levels = levels
        self.image_size = image_size
        self.radius = radius
        self.k = k
        self.search = search
        self.sigma = sigma
        self.weights = weights
        self.device = device
        self.batch_size = batch_size

    def fit(self, images: ImageInput) -> Self:
        if self.k < 1:
            raise ValueError(f"k must be at least 1, got {self.k}")
        check_search(self.search)
        feats = [flatten_patches(f) for f in self.extractor.iterate(as_batches(images, self.batch_size),
                                                                      "knn: normal features")]
        if not feats:
            raise ValueError("fit needs at least one normal image")
        self.memory_bank_ = torch.cat(feats)  # -> (M, D)
        self._index = None
        return self

    def predict(self, images: ImageInput) -> Prediction:
        self.check_fitted()
        if getattr(self, "_index", None) is None:
            self._index = NearestNeighbours(self.memory_bank_, backend=self.search)
        scores, maps = [], []
        for feats in self.extractor.iterate(as_batches(images, self.batch_size), "knn: scoring"):
            n, _, h, w = feats.shape
            dist, _ = self._index.search(flatten_patches(feats), k=self.k)
            patch_scores = dist.mean(1).view(n, h, w)
            maps.append(anomaly_maps(patch_scores, (self.image_size, self.image_size), self.sigma))
            scores.append(max_score(patch_scores))
        return Prediction(torch.cat(scores), torch.cat(maps))
