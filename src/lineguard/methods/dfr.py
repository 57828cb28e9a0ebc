"""DFR, deep feature reconstruction (Shi, Yang & Qi, 2021): an autoencoder over regional backbone features.

Each location of a multi-scale feature map describes its neighbourhood at several scales (backbone levels,
each averaged over a small region, resized to one grid and concatenated). A deep autoencoder of 1 × 1
convolutions learns to squeeze those vectors through a narrow bottleneck and rebuild them, for normal images
only; vectors of a defect are off the normal manifold and come back with a large error. Unlike the pixel
autoencoder, reconstruction happens where a pretrained network has already made textures and parts
comparable, and the cost of scoring does not grow with the number of training images.

Letters: N images, B a batch, D feature dimension, h × w the feature grid, L latent channels.
"""

from __future__ import annotations

from typing import Self

import torch
from torch import Tensor, nn

from lineguard.errors import ParameterError
from lineguard.features.extractor import BackboneFeatures
from lineguard.features.patches import flatten_patches
from lineguard.methods.base import Detector, ImageInput, Prediction, as_batches, register
from lineguard.scoring.image import max_score
from lineguard.scoring.maps import anomaly_maps
from lineguard.training import TrainedNetwork, one_cycle_cosine, resolve_device, train


def pointwise_autoencoder(channels: int, latent: int) -> nn.Sequential:
    """DFR's CAE: 1 × 1 convolutions D -> (D + 2L) / 2 -> 2L -> L and back, batch norm and ReLU between.

    (B, D, h, w) -> (B, D, h, w); every location is reconstructed on its own.
    """
    widths = [channels, (channels + 2 * latent) // 2, 2 * latent, latent]
    path = widths + widths[-2::-1]  # D, (D+2L)/2, 2L, L, 2L, (D+2L)/2, D
    layers: list[nn.Module] = []
    for i, (c_in, c_out) in enumerate(zip(path[:-1], path[1:], strict=True)):
        layers.append(nn.Conv2d(c_in, c_out, 1))
        if i not in (2, len(path) - 2):  # no activation on the code and on the output
            layers += [nn.BatchNorm2d(c_out), nn.ReLU()]
    return nn.Sequential(*layers)


@register
class DFR(TrainedNetwork, BackboneFeatures, Detector):
    name = "dfr"

    def __init__(self, backbone: str = "effnet-lite0", levels: list[int] | None = None, image_size: int = 256,
                 radius: int = 3, latent: int = 48, epochs: int = 10, lr: float = 2e-3,
                 batch_size: int = 4096, sigma: float = 4.0, seed: int = 0,
                 checkpoint_dir: str | None = None, resume: bool = False, weights: str | None = None,
                 device: str = "cpu", image_batch_size: int = 16):
        self.backbone = backbone
        self.levels = levels
        self.image_size = image_size
        self.radius = radius
        self.latent = latent
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.sigma = sigma
        self.seed = seed
        self.checkpoint_dir = checkpoint_dir
        self.resume = resume
        self.weights = weights
        self.device = device
        self.image_batch_size = image_batch_size

    def build_network(self) -> nn.Module:
        return pointwise_autoencoder(len(self.mean_), self.latent)

    def standardized(self, features: Tensor) -> Tensor:
        """(B, D, h, w) -> (B, D, h, w) with every channel at zero mean and unit variance over normal data, so
        that levels of very different scale weigh alike in the reconstruction error."""
        mean, std = self.mean_.to(features).view(1, -1, 1, 1), self.std_.to(features).view(1, -1, 1, 1)
        return (features - mean) / std

    def fit(self, images: ImageInput) -> Self:
        if self.latent < 1:
            raise ParameterError(f"latent must be at least 1, got {self.latent}")
        batches = as_batches(images, self.image_batch_size)
        feats = [flatten_patches(f) for f in self.extractor.iterate(batches, "dfr: normal features")]
        if not feats:
            raise ValueError("fit needs at least one normal image")
        vectors = torch.cat(feats)  # -> (N·h·w, D)
        self.mean_, self.std_ = vectors.mean(0), vectors.std(0).clamp_min(1e-6)  # (D,), (D,)
        vectors = ((vectors - self.mean_) / self.std_)[..., None, None]  # -> (N·h·w, D, 1, 1)

        network = self.new_network(self.seed)
        optimizer = torch.optim.Adam(network.parameters(), lr=self.lr)

        def loss(batch: Tensor, generator: torch.Generator) -> Tensor:
            return (network(batch) - batch).pow(2).mean()

        train(network, optimizer, loss, vectors, epochs=self.epochs, batch_size=self.batch_size,
              seed=self.seed, schedule=one_cycle_cosine(), checkpoint_dir=self.checkpoint_dir,
              resume=self.resume,
              fingerprint={"method": self.name, "backbone": self.backbone, "levels": self.levels,
                           "image_size": self.image_size, "radius": self.radius, "latent": self.latent,
                           "lr": self.lr}, description="dfr")
        self.keep_network(network)
        return self

    @torch.no_grad()
    def predict(self, images: ImageInput) -> Prediction:
        self.check_fitted()
        device = resolve_device(self.device)
        scores, maps = [], []
        batches = as_batches(images, self.image_batch_size)
        for feats in self.extractor.iterate(batches, "dfr: scoring"):
            x = self.standardized(feats.to(device))
            patch_scores = (self.network(x) - x).pow(2).mean(dim=1).cpu()  # -> (B, h, w)
            maps.append(anomaly_maps(patch_scores, (self.image_size, self.image_size), self.sigma))
            scores.append(max_score(patch_scores))
        return Prediction(torch.cat(scores), torch.cat(maps))
