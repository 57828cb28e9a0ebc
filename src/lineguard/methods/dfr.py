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

from collections.abc import Iterator

import torch
from torch import Tensor, nn

from lineguard.features.patches import flatten_patches
from lineguard.methods.base import register
from lineguard.methods.grid import GridDetector
from lineguard.params import POSITIVE, Interval
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
class DFR(TrainedNetwork, GridDetector):
    """Parameters of the training: ``latent`` code channels, ``epochs``, ``lr``, and ``patch_batch_size`` patch
    vectors per optimiser step (every location is its own training example); ``batch_size`` counts images, as
    for every method."""

    name = "dfr"
    parameter_constraints = {"latent": [POSITIVE], "epochs": [POSITIVE], "lr": [Interval(float, 0, None, "neither")],
                             "patch_batch_size": [POSITIVE]}

    def __init__(self, *, backbone: str = "effnet-lite0", levels: list[int] | None = None, image_size: int = 256,
                 patch_size: int = 3, latent: int = 48, epochs: int = 10, lr: float = 2e-3,
                 patch_batch_size: int = 4096, sigma: float = 4.0, seed: int = 0,
                 checkpoint_dir: str | None = None, resume: bool = False, weights: str | None = None,
                 device: str = "cpu", batch_size: int = 16):
        self.backbone = backbone
        self.levels = levels
        self.image_size = image_size
        self.patch_size = patch_size
        self.latent = latent
        self.epochs = epochs
        self.lr = lr
        self.patch_batch_size = patch_batch_size
        self.sigma = sigma
        self.seed = seed
        self.checkpoint_dir = checkpoint_dir
        self.resume = resume
        self.weights = weights
        self.device = device
        self.batch_size = batch_size

    def build_network(self) -> nn.Module:
        return pointwise_autoencoder(len(self.mean_), self.latent)

    def standardized(self, features: Tensor) -> Tensor:
        """(B, D, h, w) -> (B, D, h, w) with every channel at zero mean and unit variance over normal data, so
        that levels of very different scale weigh alike in the reconstruction error."""
        mean, std = self.mean_.to(features).view(1, -1, 1, 1), self.std_.to(features).view(1, -1, 1, 1)
        return (features - mean) / std

    def learn(self, features: Iterator[Tensor]) -> None:
        vectors = torch.cat([flatten_patches(f) for f in features])  # -> (N·h·w, D)
        self.mean_, self.std_ = vectors.mean(0), vectors.std(0).clamp_min(1e-6)  # (D,), (D,)
        vectors = ((vectors - self.mean_) / self.std_)[..., None, None]  # -> (N·h·w, D, 1, 1)

        network = self.new_network(self.seed)
        optimizer = torch.optim.Adam(network.parameters(), lr=self.lr)

        def loss(batch: Tensor, generator: torch.Generator) -> Tensor:
            return (network(batch) - batch).pow(2).mean()

        train(network, optimizer, loss, vectors, epochs=self.epochs, batch_size=self.patch_batch_size,
              seed=self.seed, schedule=one_cycle_cosine(), checkpoint_dir=self.checkpoint_dir,
              resume=self.resume,
              fingerprint={"method": self.name, "backbone": self.backbone, "levels": self.levels,
                           "image_size": self.image_size, "patch_size": self.patch_size, "latent": self.latent,
                           "lr": self.lr}, description="dfr")
        self.keep_network(network)

    def patch_scores(self, features: Tensor) -> Tensor:
        """Squared reconstruction error of each standardised patch vector, mean over channels: (B, h, w)."""
        x = self.standardized(features.to(resolve_device(self.device)))
        return (self.network(x) - x).pow(2).mean(dim=1).cpu()
