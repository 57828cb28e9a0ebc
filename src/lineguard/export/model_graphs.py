"""Graphs of the methods that score with a fitted model rather than a bank search: PaDiM (a Gaussian per
position), FastRecon (a closed-form reconstruction), DFR (a feature autoencoder) and the pixel autoencoder.

FastRecon solves one small linear system per query, G Wᵀ = (Q Sᵀ + λ μ Sᵀ)ᵀ, but G = (1 + λ) S Sᵀ + εI
depends on the support only. So the solve is done once, at export, in float64 as ``predict`` does it:
W S = (Q + λ μ) Π with Π = Sᵀ G⁻¹ S (D × D), and the residual Q − W S = Q (I − Π) − λ μ Π is two constants
and one matrix product in the graph, with no linear solve left for the runtime (ONNX has no Cholesky).

Letters: N images, S working size, d PaDiM channels kept, D feature dimension, h × w the grid, P = h · w,
M support rows.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lineguard.export.bank_graphs import MapHead
from lineguard.export.graphs import Features, buffer, dims, graph_builder
from lineguard.features.patches import flatten_patches
from lineguard.methods.autoencoder import squared_error_maps
from lineguard.methods.base import Detector
from lineguard.methods.fastrecon import gram_factor
from lineguard.methods.padim import mahalanobis, stack_levels
from lineguard.scoring.image import max_score, top_k_mean
from lineguard.scoring.maps import gaussian_blur


@graph_builder("padim")
class PadimGraph(nn.Module):
    """PaDiM: stacked levels, the kept channels, Mahalanobis distance to each position's Gaussian."""

    def __init__(self, detector: Detector):
        super().__init__()
        self.features, self.maps = Features(detector), MapHead(detector)
        buffer(self, "channels", detector.channels_)  # (d,)
        buffer(self, "mean", detector.mean_)  # (P, d)
        buffer(self, "precision", detector.precision_)  # (P, d, d)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        features = stack_levels(self.features.levels(images))  # (N, C, h, w)
        _, h, w = dims(features)
        kept = features.flatten(2).index_select(1, self.channels)  # (N, d, P)
        maps = self.maps(mahalanobis(kept, self.mean, self.precision).view(-1, h, w))
        return max_score(maps), maps  # of the smoothed map, as PaDiM.predict


@graph_builder("fastrecon")
class FastReconGraph(nn.Module):
    """FastRecon: residual Q (I − Π) − λ μ Π of every patch, its norm the patch score."""

    def __init__(self, detector: Detector):
        super().__init__()
        self.features, self.maps, self.top_k = Features(detector), MapHead(detector), detector.top_k
        support = detector.support_.double()  # (M, D)
        projection = support.T @ torch.cholesky_solve(support, gram_factor(support, detector.lam, detector.ridge))
        buffer(self, "keep", torch.eye(len(projection), dtype=torch.float64) - projection)  # I − Π: (D, D)
        buffer(self, "offset", detector.lam * detector.mean_.double() @ projection)  # λ μ Π: (P, D)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        features = self.features(images)
        d, h, w = dims(features)
        queries = flatten_patches(features).view(-1, h * w, d)  # (N, P, D)
        patch_scores = (queries @ self.keep - self.offset).norm(dim=-1).view(-1, h, w)
        return top_k_mean(patch_scores, self.top_k), self.maps(patch_scores)


@graph_builder("dfr")
class DfrGraph(nn.Module):
    """DFR: standardised patch features through the autoencoder; the squared error is the patch score."""

    def __init__(self, detector: Detector):
        super().__init__()
        self.features, self.maps, self.network = Features(detector), MapHead(detector), detector.network
        buffer(self, "mean", detector.mean_.view(1, -1, 1, 1))
        buffer(self, "std", detector.std_.view(1, -1, 1, 1))

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        x = (self.features(images) - self.mean) / self.std  # DFR.standardized
        patch_scores = (self.network(x) - x).pow(2).mean(dim=1)  # (N, h, w)
        return max_score(patch_scores), self.maps(patch_scores)


@graph_builder("autoencoder")
class AutoencoderGraph(nn.Module):
    """The pixel autoencoder: blurred squared reconstruction error; the image score is its mean."""

    def __init__(self, detector: Detector):
        super().__init__()
        self.network, self.sigma = detector.network, detector.sigma

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        maps = gaussian_blur(squared_error_maps(images, self.network(images)), self.sigma)  # (N, S, S)
        return maps.flatten(1).mean(dim=1), maps

