"""FastRecon (Fang et al., ICCV 2023): rebuild a query's patch features from a few normal ones, in closed form.

Normal patches of the query can be written as combinations of the support patches; defective ones cannot, so
the reconstruction error marks them. Each query patch q gets the weights w minimising
‖q − w S‖² + λ ‖μ − w S‖², where S (|S|, D) is a coreset of the support patches and μ the support images'
mean feature at the same position, which pulls the reconstruction towards the aligned normal appearance
rather than towards anything the support happens to span. Setting the gradient to zero gives, for the whole
query at once,

    W = (Q Sᵀ + λ μ Sᵀ) ((1 + λ) S Sᵀ)⁻¹,        anomaly map = ‖Q − W S‖ per patch,

solved through a Cholesky factor (with a small ridge) instead of an explicit inverse. No training step:
fitting is feature extraction plus a coreset.

How large S should be was measured (Lite0, 256 px, D = 152, bottle, mean of 2 support draws): with |S| far
below D every patch keeps the energy outside S's span, normal or not, and image AUROC falls to 0.64 (K = 1,
|S| = 10); once S spans the feature space, W S = (Q + λ μ) / (1 + λ) and the map is λ / (1 + λ) · ‖Q − μ‖,
the distance to the aligned normal appearance: 0.995 / 0.982 / 0.932 (image AUROC / pixel AUROC / AUPRO)
at K = 1 and 0.997 / 0.984 / 0.939 at K = 4. So |S| is at least D (``coreset_ratio`` of the support
patches when that is more), and at most ``max_support`` so the M × M solve stays cheap.

Letters: B images, P = h · w patches per image, D feature dimension, M = |S| support coreset size.
"""

from __future__ import annotations

from typing import Self

import torch
from torch import Tensor

from lineguard.features.extractor import BackboneFeatures
from lineguard.features.patches import flatten_patches
from lineguard.memory.coreset import coreset_size, greedy_coreset
from lineguard.methods.base import Detector, ImageInput, Prediction, as_batches, register
from lineguard.scoring.image import top_k_mean
from lineguard.scoring.maps import anomaly_maps


def gram_factor(support: Tensor, lam: float, ridge: float) -> Tensor:
    """The Cholesky factor of (1 + λ) S Sᵀ + εI, in float64: (M, D) -> (M, M). ε = ``ridge`` × the mean
    diagonal of (1 + λ) S Sᵀ, so the ridge is relative to the features' scale and only matters when S Sᵀ is
    (nearly) singular."""
    s = support.double()
    gram = (1 + lam) * (s @ s.T)  # (M, M)
    gram.diagonal().add_(ridge * gram.diagonal().mean())
    return torch.linalg.cholesky(gram)


def reconstruction_weights(queries: Tensor, support: Tensor, mean: Tensor, lam: float, ridge: float) -> Tensor:
    """W = (Q Sᵀ + λ μ Sᵀ)((1 + λ) S Sᵀ + εI)⁻¹ for a batch of queries, in float64.

    (B, P, D), (M, D), (P, D) -> (B, P, M); ε as in :func:`gram_factor`.
    """
    s = support.double()
    rhs = (queries.double() + lam * mean.double()) @ s.T  # (B, P, M) = Q Sᵀ + λ μ Sᵀ
    solved = torch.cholesky_solve(rhs.reshape(-1, s.shape[0]).T, gram_factor(support, lam, ridge))  # (M, B·P)
    return solved.T.reshape(rhs.shape)


@register
class FastRecon(BackboneFeatures, Detector):
    name = "fastrecon"

    def __init__(self, backbone: str = "effnet-lite0", levels: list[int] | None = None, image_size: int = 256,
                 radius: int = 3, coreset_ratio: float = 0.05, max_support: int = 512, lam: float = 2.0,
                 ridge: float = 1e-6, top_k: int = 1, sigma: float = 4.0, seed: int = 0,
                 weights: str | None = None, device: str = "cpu", batch_size: int = 16):
        self.backbone = backbone
        self.levels = levels
        self.image_size = image_size
        self.radius = radius
        self.coreset_ratio = coreset_ratio
        self.max_support = max_support
        self.lam = lam
        self.ridge = ridge
        self.top_k = top_k
        self.sigma = sigma
        self.seed = seed
        self.weights = weights
        self.device = device
        self.batch_size = batch_size

    def fit(self, images: ImageInput) -> Self:
        if self.lam < 0 or self.ridge < 0:
            raise ValueError(f"lam and ridge must be non-negative, got lam={self.lam}, ridge={self.ridge}")
        if self.max_support < 1 or self.top_k < 1:
            raise ValueError(f"max_support and top_k must be at least 1, got {self.max_support}, {self.top_k}")
        coreset_size(1, self.coreset_ratio)  # checks the ratio before any feature is extracted
        feats = list(self.extractor.iterate(as_batches(images, self.batch_size), "fastrecon: support features"))
        if not feats:
            raise ValueError("fit needs at least one support image")
        feats = torch.cat(feats)  # (K, D, h, w)
        self.mean_ = flatten_patches(feats.mean(0, keepdim=True))  # μ: (P, D)
        patches = flatten_patches(feats)  # (K · P, D)
        spanning = max(coreset_size(len(patches), self.coreset_ratio), patches.shape[1])  # ≥ D rows: see above
        size = min(spanning, self.max_support, len(patches))
        self.support_ = patches[greedy_coreset(patches, size, seed=self.seed, progress=False)].contiguous()  # S
        return self

    def predict(self, images: ImageInput) -> Prediction:
        self.check_fitted()
        scores, maps = [], []
        for feats in self.extractor.iterate(as_batches(images, self.batch_size), "fastrecon: scoring"):
            n, _, h, w = feats.shape
            queries = flatten_patches(feats).view(n, h * w, -1)  # (B, P, D)
            weights = reconstruction_weights(queries, self.support_, self.mean_, self.lam, self.ridge)
            residual = queries.double() - weights @ self.support_.double()  # (B, P, D): Q − W S
            patch_scores = residual.norm(dim=-1).float().view(n, h, w)
            maps.append(anomaly_maps(patch_scores, (self.image_size, self.image_size), self.sigma))
            scores.append(top_k_mean(patch_scores, self.top_k))
        return Prediction(torch.cat(scores), torch.cat(maps))
