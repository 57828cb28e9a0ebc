"""Graphs of the methods that score a patch by its distance to a memory bank: PatchCore, few-shot, kNN, SPADE
and CSE (whose bank is k-means centroids).

The bank search is :class:`lineguard.export.search.BlockedBank`: exact, in blocks of bank rows. PatchCore's
image score searches again for the top patch only: its nearest bank row m* and the b rows nearest m*, as
``scoring.image.reweighted_max`` does with the detector's index.

Letters: N images, D feature dimension, h × w the grid, P = h · w patches per image, M bank rows,
K nearest normal images (SPADE), b re-weighting neighbours.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lineguard.export.graphs import (Features, buffer, dims, gather_rows, graph_builder, quantile,
                                     with_affine_batch_norms)
from lineguard.export.search import BlockedBank, block_rows
from lineguard.features.lighting import match_lighting
from lineguard.io.images import ImageSize, size_hw
from lineguard.features.patches import flatten_patches, patch_features, reduce_channels
from lineguard.methods.base import Detector
from lineguard.scoring.image import max_score, reweight
from lineguard.scoring.maps import anomaly_maps


def patches_per_image(features: Features, image_size: ImageSize) -> int:
    """P of the patch grid, which lies on the first (finest) chosen level's grid."""
    stride = features.backbone.levels[0].stride
    height, width = size_hw(image_size)
    return (height // stride) * (width // stride)


class MapHead(nn.Module):
    """(N, h, w) grid scores -> (N, H, W) maps at the working size, upsampled and blurred as
    ``scoring.maps.anomaly_maps``."""

    def __init__(self, detector: Detector):
        super().__init__()
        self.size, self.sigma = size_hw(detector.image_size), detector.sigma

    def forward(self, grid_scores: Tensor) -> Tensor:
        return anomaly_maps(grid_scores, self.size, self.sigma)


@graph_builder("patchcore", "fewshot")
class PatchCoreGraph(nn.Module):
    """PatchCore and few-shot: each patch's distance to the bank; the re-weighted top patch; the blurred map."""

    def __init__(self, detector: Detector):
        super().__init__()
        self.features = Features(detector)
        self.maps = MapHead(detector)
        reference = getattr(detector, "lighting_", None)  # few-shot's lighting matching
        self.lighting = None if reference is None else buffer(self, "lighting_reference", reference)
        self.reduction = None
        if detector.reduce_dim:  # adaptive averaging of adjacent channels, as one (D, reduce_dim) matrix
            channels = sum(level.channels for level in self.features.backbone.levels)
            unit = torch.eye(channels)[:, :, None, None]  # each channel alone, sent through the very reduction
            self.reduction = buffer(self, "reduction", reduce_channels(unit, detector.reduce_dim)[:, :, 0, 0])
        rows = block_rows(patches_per_image(self.features, detector.image_size), len(detector.memory_bank_))
        self.bank = BlockedBank(detector.memory_bank_, rows)
        self.reweight_neighbours, self.baseline_quantile = detector.reweight_neighbours, detector.baseline_quantile

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        if self.lighting is not None:
            images = match_lighting(images, self.lighting)
        features = self.features(images)  # (N, D, h, w)
        if self.reduction is not None:
            features = torch.einsum("ndhw,de->nehw", features, self.reduction)
        d, h, w = dims(features)
        queries = flatten_patches(features)  # (N·P, D)
        patch_scores = self.bank.nearest(queries).view(-1, h * w)  # (N, P)
        scores = self.image_scores(queries.view(-1, h * w, d), patch_scores)
        if self.baseline_quantile is not None:
            scores = scores - quantile(patch_scores, self.baseline_quantile)
        return scores, self.maps(patch_scores.view(-1, h, w))

    def image_scores(self, queries: Tensor, patch_scores: Tensor) -> Tensor:
        """(N, P, D), (N, P) -> (N,): ``scoring.image.reweighted_max``, with m* found by the graph's search."""
        if self.reweight_neighbours == 1:
            return max_score(patch_scores)
        m_test_star = gather_rows(queries, patch_scores.argmax(dim=1))  # (N, D)
        m_star = self.bank.rows_at(self.bank.topk(m_test_star, 1)[1][:, 0])  # (N, D)
        _, neighbours = self.bank.topk(m_star, self.reweight_neighbours)  # (N, b), m* among them
        neighbour_rows = self.bank.rows_at(neighbours.reshape(-1)).view(-1, neighbours.shape[1], queries.shape[2])
        return reweight((m_test_star - m_star).norm(dim=-1), (m_test_star[:, None] - neighbour_rows).norm(dim=-1))


class NearestPatchGraph(nn.Module):
    """kNN and CSE: a patch scores its (mean) distance to the nearest ``k`` bank rows; the image its top patch.
    ``embed`` maps the patch features first (CSE's trained embedder)."""

    def __init__(self, detector: Detector, bank: Tensor, k: int, embed: nn.Module | None = None):
        super().__init__()
        self.features, self.embed, self.maps, self.k = Features(detector), embed, MapHead(detector), k
        self.bank = BlockedBank(bank, block_rows(patches_per_image(self.features, detector.image_size), len(bank)))

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        features = self.features(images)
        if self.embed is not None:
            features = self.embed(features)
        _, h, w = dims(features)
        queries = flatten_patches(features)
        distances = self.bank.nearest(queries) if self.k == 1 else self.bank.topk(queries, self.k)[0].mean(1)
        patch_scores = distances.view(-1, h, w)
        return max_score(patch_scores), self.maps(patch_scores)


@graph_builder("knn")
def knn_graph(detector: Detector) -> nn.Module:
    return NearestPatchGraph(detector, detector.memory_bank_, detector.k)


@graph_builder("cse")
def cse_graph(detector: Detector) -> nn.Module:
    return NearestPatchGraph(detector, detector.centroids_, 1, embed=with_affine_batch_norms(detector.network))


@graph_builder("spade")
class SpadeGraph(nn.Module):
    """SPADE: the K nearest normal images by global feature (a top-k over the normal images), then each patch's
    distance to the nearest patch of those K images, one image at a time (an (N, P, P) temporary)."""

    def __init__(self, detector: Detector):
        super().__init__()
        self.features, self.maps, self.patch_size = Features(detector), MapHead(detector), detector.patch_size
        self.images = BlockedBank(detector.global_features_, len(detector.global_features_))
        self.k = min(detector.k_images, len(detector.global_features_))
        patches = buffer(self, "normal_patches", detector.patch_features_)  # (M images, P, D)
        buffer(self, "normal_norms", patches.pow(2).sum(2))  # (M, P)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        levels = self.features.levels(images)
        features = patch_features(levels, patch_size=self.patch_size)  # (N, D, h, w)
        d, h, w = dims(features)
        queries = flatten_patches(features).view(-1, h * w, d)  # (N, P, D)
        _, nearest = self.images.topk(levels[-1].mean(dim=(2, 3)), self.k)  # (N, K)
        best = None
        for i in range(self.k):
            gallery = self.normal_patches[nearest[:, i]]  # (N, P, D)
            partial = torch.baddbmm(self.normal_norms[nearest[:, i]][:, None], queries, gallery.transpose(1, 2),
                                    alpha=-2.0).amin(dim=2)  # (N, P): min over the image's patches of ‖g‖² − 2 q·g
            best = partial if best is None else torch.minimum(best, partial)
        patch_scores = (best + queries.pow(2).sum(2)).clamp_min(0).sqrt().view(-1, h, w)
        maps = self.maps(patch_scores)
        return max_score(maps), maps
