"""PatchCore (Roth et al., CVPR 2022): a coreset of normal patch features, scored by distance to the nearest.

Mid-level features (the backbone's stride-8 and stride-16 levels), each averaged over its 3 × 3 neighbourhood
and brought to one grid, describe every patch with its local context. A greedy k-center coreset keeps a
fraction of all normal patches (10 % by default) that still covers them, which bounds both the memory and
the search. A test patch scores its distance to the nearest bank patch; the map is those scores upsampled
and blurred (σ = 4); the image score is the largest patch score, re-weighted by how crowded the bank is
around that patch's nearest neighbour (``scoring.image.reweighted_max``, the paper's eq. 7).

``baseline_quantile`` (off by default, as in the paper) subtracts that quantile of an image's own patch scores
from its image score (``scoring.image.above_baseline``): a normal look the bank lacks (say a lighting the few
support images were not taken under) raises every patch of the image alike, a defect only its own.

Letters: B images, D feature dimension, h × w the feature grid, M bank size, b re-weighting neighbours.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Self

import torch
from torch import Tensor

from lineguard.features.extractor import BackboneFeatures
from lineguard.features.patches import flatten_patches, reduce_channels
from lineguard.memory.coreset import coreset_size, greedy_coreset
from lineguard.memory.knn import NearestNeighbours, check_search
from lineguard.methods.base import Detector, ImageInput, Prediction, as_batches, register
from lineguard.scoring.image import above_baseline, check_baseline_quantile, reweighted_max
from lineguard.scoring.maps import anomaly_maps


@register
class PatchCore(BackboneFeatures, Detector):
    name = "patchcore"

    def __init__(self, backbone: str = "effnet-lite0", levels: list[int] | None = None, image_size: int = 256,
                 radius: int = 3, reduce_dim: int | None = None, coreset_ratio: float = 0.1,
                 projection_dim: int = 128, b: int = 9, search: str = "auto", sigma: float = 4.0,
                 baseline_quantile: float | None = None, seed: int = 0, weights: str | None = None,
                 device: str = "cpu", batch_size: int = 16):
        self.backbone = backbone
        self.levels = levels
        self.image_size = image_size
        self.radius = radius
        self.reduce_dim = reduce_dim
        self.coreset_ratio = coreset_ratio
        self.projection_dim = projection_dim
        self.b = b
        self.search = search
        self.sigma = sigma
        self.baseline_quantile = baseline_quantile
        self.seed = seed
        self.weights = weights
        self.device = device
        self.batch_size = batch_size

    def _check_params(self) -> None:
        coreset_size(1, self.coreset_ratio)  # raises on a ratio outside (0, 1]
        if self.b < 1:
            raise ValueError(f"b (re-weighting neighbours) must be at least 1 (1: plain maximum), "
                             f"got {self.b}")
        if self.reduce_dim is not None and self.reduce_dim < 1:
            raise ValueError(f"reduce_dim must be a positive channel count or None, got {self.reduce_dim}")
        if self.projection_dim < 1:
            raise ValueError(f"projection_dim must be at least 1, got {self.projection_dim}")
        check_baseline_quantile(self.baseline_quantile)
        check_search(self.search)

    def _bank_images(self, images: ImageInput) -> Iterable[Tensor]:
        """The image batches whose patches the bank is built from: here the normal images themselves."""
        return as_batches(images, self.batch_size)

    def _query_images(self, images: ImageInput) -> Iterable[Tensor]:
        """The image batches ``predict`` scores, as given (few-shot first matches their lighting)."""
        return as_batches(images, self.batch_size)

    def _features(self, batches: Iterable[Tensor], description: str) -> Iterator[Tensor]:
        """(B, D, h, w) patch features of each batch, channel-reduced when ``reduce_dim`` asks for it."""
        for feats in self.extractor.iterate(batches, description):
            yield reduce_channels(feats, self.reduce_dim) if self.reduce_dim else feats

    def fit(self, images: ImageInput) -> Self:
        self._check_params()
        batches = self._bank_images(images)
        feats = [flatten_patches(f) for f in self._features(batches, f"{self.name}: normal features")]
        if not feats:
            raise ValueError("fit needs at least one normal image")
        patches = torch.cat(feats)  # -> (N·h·w, D)
        keep = greedy_coreset(patches, coreset_size(len(patches), self.coreset_ratio), seed=self.seed,
                              projection_dim=self.projection_dim)
        self.memory_bank_ = patches[keep].contiguous()  # -> (M, D)
        self._index = None
        return self

    def predict(self, images: ImageInput) -> Prediction:
        self.check_fitted()
        if getattr(self, "_index", None) is None:
            self._index = NearestNeighbours(self.memory_bank_, backend=self.search)
        scores, maps = [], []
        size = (self.image_size, self.image_size)
        for feats in self._features(self._query_images(images), f"{self.name}: scoring"):
            n, _, h, w = feats.shape
            queries = flatten_patches(feats)  # (B·h·w, D)
            dist, nearest = self._index.search(queries, k=1)  # (B·h·w, 1) each
            patch_scores = dist.view(n, h * w)
            image_scores = reweighted_max(queries.view(n, h * w, -1), patch_scores, nearest.view(n, h * w),
                                          self.memory_bank_, self._index, self.b)
            if self.baseline_quantile is not None:
                image_scores = above_baseline(image_scores, patch_scores, self.baseline_quantile)
            maps.append(anomaly_maps(patch_scores.view(n, h, w), size, self.sigma))
            scores.append(image_scores)
        return Prediction(torch.cat(scores), torch.cat(maps))
