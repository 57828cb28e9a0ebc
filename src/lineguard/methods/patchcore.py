"""PatchCore (Roth et al., CVPR 2022): a coreset of normal patch features, scored by distance to the nearest.

Mid-level features (the backbone's stride-8 and stride-16 levels), each averaged over its 3 × 3 neighbourhood
and brought to one grid, describe every patch with its local context. A greedy k-center coreset keeps a
fraction of all normal patches (10 % by default) that still covers them, which bounds both the memory and
the search. A test patch scores its distance to the nearest bank patch; the map is those scores upsampled
and blurred (σ = 4); the image score is the largest patch score, re-weighted by how crowded the bank is
around that patch's nearest neighbour (``scoring.image.reweighted_max``, the paper's eq. 7).

``update`` grows the bank without the old images: greedy k-center continues from the old bank as centres
already chosen, over the new patches, and adds as many of them as a fit would keep (``coreset_ratio``), so the
bank ends the size a fit on everything gives. Each new patch starts at its distance to the old bank row the
``search`` index finds nearest (``memory.coreset``). With an exact search the result is exactly the coreset
greedy k-center over everything would pick if its first picks had been the old bank; with IVF (``auto`` on
banks of 16,384 rows or more) that distance is an upper bound, never an underestimate (on Magnetic Tile's
first growth step the true nearest for 91 % of the new patches; their covering radius came out 0.4 % larger
than with an exact search). Either way every old patch stays within the old covering radius r₀ of the bank and
every new patch within the merge's final radius r₁ (at most the distance it recorded) — so all patches seen lie
within max(r₀, r₁) of the grown bank, where a fit on everything covers them within its own r (greedy, within
2× the best possible radius for its size).

``baseline_quantile`` (off by default, as in the paper) subtracts that quantile of an image's own patch scores
from its image score (``scoring.image.above_baseline``): a normal look the bank lacks (say a lighting the few
support images were not taken under) raises every patch of the image alike, a defect only its own.

Letters: B images, D feature dimension, h × w the feature grid, M bank size, b re-weighting neighbours.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
from torch import Tensor

from lineguard.features.patches import flatten_patches, reduce_channels
from lineguard.memory.coreset import coreset_size, greedy_coreset
from lineguard.memory.knn import SEARCH_BACKENDS
from lineguard.methods.base import register
from lineguard.methods.grid import GridDetector
from lineguard.params import FRACTION, POSITIVE, QUANTILE, Options
from lineguard.scoring.image import above_baseline, reweighted_max


@register
class PatchCore(GridDetector):
    name = "patchcore"
    parameter_constraints = {"coreset_ratio": [FRACTION], "reweight_neighbours": [POSITIVE], "reduce_dim": [POSITIVE],
                             "projection_dim": [POSITIVE], "baseline_quantile": [QUANTILE],
                             "search": [Options(*SEARCH_BACKENDS)]}
    search_bank = "memory_bank_"
    grows = True

    def __init__(self, *, backbone: str = "effnet-lite0", levels: list[int] | None = None,
                 image_size: int | tuple[int, int] = 256,
                 patch_size: int = 3, reduce_dim: int | None = None, coreset_ratio: float = 0.1,
                 projection_dim: int = 128, reweight_neighbours: int = 9, search: str = "auto", sigma: float = 4.0,
                 baseline_quantile: float | None = None, seed: int = 0, weights: str | None = None,
                 device: str = "cpu", batch_size: int = 16):
        self.backbone = backbone
        self.levels = levels
        self.image_size = image_size
        self.patch_size = patch_size
        self.reduce_dim = reduce_dim
        self.coreset_ratio = coreset_ratio
        self.projection_dim = projection_dim
        self.reweight_neighbours = reweight_neighbours
        self.search = search
        self.sigma = sigma
        self.baseline_quantile = baseline_quantile
        self.seed = seed
        self.weights = weights
        self.device = device
        self.batch_size = batch_size

    def search_backend(self) -> str:
        return self.search

    def features(self, batches: Iterable[Tensor], description: str) -> Iterator[Tensor]:
        """(B, D, h, w) patch features of each batch, channel-reduced when ``reduce_dim`` asks for it."""
        for feats in self.extractor.iterate(batches, description):
            yield reduce_channels(feats, self.reduce_dim) if self.reduce_dim else feats

    def learn(self, features: Iterator[Tensor]) -> None:
        patches = torch.cat([flatten_patches(f) for f in features])  # -> (N·h·w, D)
        keep = greedy_coreset(patches, coreset_size(len(patches), self.coreset_ratio), seed=self.seed,
                              projection_dim=self.projection_dim)
        self.memory_bank_ = patches[keep].contiguous()  # -> (M, D)

    def grow(self, features: Iterator[Tensor]) -> None:
        new = torch.cat([flatten_patches(f) for f in features])  # -> (N_new·h·w, D)
        keep = greedy_coreset(new, coreset_size(len(new), self.coreset_ratio), seed=self.seed,
                              projection_dim=self.projection_dim, centres=self.memory_bank_, search=self.search)
        self.memory_bank_ = torch.cat([self.memory_bank_, new[keep]])  # -> (M', D)

    def score_batch(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """Nearest-bank distances as patch scores; the image score re-weighted (and above its baseline)."""
        n, _, h, w = features.shape
        queries = flatten_patches(features)  # (B·h·w, D)
        dist, nearest = self.index.search(queries, k=1)  # (B·h·w, 1) each
        patch_scores = dist.view(n, h * w)
        image_scores = reweighted_max(queries.view(n, h * w, -1), patch_scores, nearest.view(n, h * w),
                                      self.memory_bank_, self.index, self.reweight_neighbours)
        if self.baseline_quantile is not None:
            image_scores = above_baseline(image_scores, patch_scores, self.baseline_quantile)
        return patch_scores.view(n, h, w), image_scores
