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

from collections.abc import Iterator

import torch
from torch import Tensor

from lineguard.features.patches import flatten_patches
from lineguard.memory.coreset import coreset_size, greedy_coreset
from lineguard.methods.base import register
from lineguard.methods.grid import GridDetector
from lineguard.params import FRACTION, POSITIVE, Interval
from lineguard.scoring.image import top_k_mean


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
class FastRecon(GridDetector):
    name = "fastrecon"
    parameter_constraints = {"coreset_ratio": [FRACTION], "max_support": [POSITIVE], "top_k": [POSITIVE],
                             "lam": [Interval(float, 0, None)], "ridge": [Interval(float, 0, None)]}

    def __init__(self, *, backbone: str = "effnet-lite0", levels: list[int] | None = None,
                 image_size: int | tuple[int, int] = 256,
                 patch_size: int = 3, coreset_ratio: float = 0.05, max_support: int = 512, lam: float = 2.0,
                 ridge: float = 1e-6, top_k: int = 1, sigma: float = 4.0, seed: int = 0,
                 weights: str | None = None, device: str = "cpu", batch_size: int = 16):
        self.backbone = backbone
        self.levels = levels
        self.image_size = image_size
        self.patch_size = patch_size
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

    def learn(self, features: Iterator[Tensor]) -> None:
        feats = torch.cat(list(features))  # (K, D, h, w)
        self.mean_ = flatten_patches(feats.mean(0, keepdim=True))  # μ: (P, D)
        patches = flatten_patches(feats)  # (K · P, D)
        spanning = max(coreset_size(len(patches), self.coreset_ratio), patches.shape[1])  # ≥ D rows: see above
        size = min(spanning, self.max_support, len(patches))
        self.support_ = patches[greedy_coreset(patches, size, seed=self.seed, progress=False)].contiguous()  # S

    def patch_scores(self, features: Tensor) -> Tensor:
        n, _, h, w = features.shape
        queries = flatten_patches(features).view(n, h * w, -1)  # (B, P, D)
        weights = reconstruction_weights(queries, self.support_, self.mean_, self.lam, self.ridge)
        residual = queries.double() - weights @ self.support_.double()  # (B, P, D): Q − W S
        return residual.norm(dim=-1).float().view(n, h, w)

    def image_scores(self, grid: Tensor, maps: Tensor) -> Tensor:
        return top_k_mean(grid, self.top_k)
