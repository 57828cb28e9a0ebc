"""Convolutional autoencoder: the classic reconstruction baseline (Bergmann et al., 2019, with an L2 loss).

Trained on normal images only, the network learns to rebuild what normal parts look like through a narrow
bottleneck; a defect it never saw comes back wrong, and the per-pixel squared error marks it. It needs no
backbone and no pretrained weights, which makes it the reference the feature-based methods must beat.
The image score is the mean of the map (the error of the whole image), and the default decision thresholds
are μ + 3σ of the scores (and map maxima) of normal images held out of training (``Detector.calibrate``).

Letters: B images, H × W image size, C channels of a layer, c latent channels.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lineguard.errors import ParameterError
from lineguard.features.extractor import fit_size
from lineguard.methods.base import Detector, ImageInput, NoImagesError, Prediction, as_batches, register
from lineguard.params import POSITIVE, Each, Interval
from lineguard.scoring.maps import gaussian_blur
from lineguard.training import TrainedNetwork, one_cycle_cosine, resolve_device, train


class ConvAutoencoder(nn.Module):
    """(B, 3, H, W) in [0, 1] -> (B, 3, H, W) reconstruction in [0, 1].

    Each stage halves (encoder, strided 4 × 4 convolutions) or doubles (decoder, transposed convolutions) the
    resolution; the bottleneck is a 1 × 1 convolution down to ``latent`` channels at H / 2^stages.
    """

    def __init__(self, channels: list[int], latent: int):
        super().__init__()

        def block(conv: nn.Module, c_out: int) -> list[nn.Module]:
            return [conv, nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2)]

        widths = [3, *channels]
        down: list[nn.Module] = []
        for c_in, c_out in zip(widths[:-1], widths[1:], strict=True):
            down += block(nn.Conv2d(c_in, c_out, 4, stride=2, padding=1), c_out)
        down.append(nn.Conv2d(widths[-1], latent, 1))
        up: list[nn.Module] = block(nn.Conv2d(latent, widths[-1], 1), widths[-1])
        for c_in, c_out in zip(widths[:1:-1], widths[-2:0:-1], strict=True):
            up += block(nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1), c_out)
        up += [nn.ConvTranspose2d(widths[1], 3, 4, stride=2, padding=1), nn.Sigmoid()]
        self.encoder = nn.Sequential(*down)
        self.decoder = nn.Sequential(*up)

    def forward(self, images: Tensor) -> Tensor:
        return self.decoder(self.encoder(images))


def squared_error_maps(images: Tensor, reconstructions: Tensor) -> Tensor:
    """(B, 3, H, W), (B, 3, H, W) -> (B, H, W): squared error per pixel, averaged over channels."""
    return (images - reconstructions).pow(2).mean(dim=1)


def holdout_split(n: int, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Indices (held out, kept) of ``n`` images: a seeded random ``fraction`` (rounded) is held out."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_held = round(fraction * n)
    return order[:n_held], order[n_held:]


@register
class Autoencoder(TrainedNetwork, Detector):
    name = "autoencoder"
    parameter_constraints = {"channels": [Each(POSITIVE)], "latent": [POSITIVE], "epochs": [POSITIVE],
                             "lr": [Interval(float, 0, None, "neither")],
                             "holdout": [Interval(float, 0, 1, closed="left")]}

    def __init__(self, *, image_size: int = 128, channels: list[int] | None = None, latent: int = 16,
                 epochs: int = 50, lr: float = 2e-3, batch_size: int = 16, holdout: float = 0.2,
                 sigma: float = 4.0, seed: int = 0, checkpoint_dir: str | None = None, resume: bool = False,
                 device: str = "cpu"):
        self.image_size = image_size
        self.channels = channels
        self.latent = latent
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.holdout = holdout
        self.sigma = sigma
        self.seed = seed
        self.checkpoint_dir = checkpoint_dir
        self.resume = resume
        self.device = device

    @property
    def widths(self) -> list[int]:
        return self.channels if self.channels is not None else [32, 64, 128, 128]

    def build_network(self) -> nn.Module:
        return ConvAutoencoder(self.widths, self.latent)

    def validate_params(self) -> None:
        super().validate_params()
        factor = 2 ** len(self.widths)
        if self.image_size % factor:
            raise ParameterError(f"{self.name} parameter image_size must be a multiple of {factor} for "
                                 f"{len(self.widths)} stages, got {self.image_size}")

    def _fit(self, images: ImageInput) -> None:
        data = torch.cat([fit_size(b.float(), self.image_size) for b in as_batches(images, self.batch_size)])
        held, kept = holdout_split(len(data), self.holdout, self.seed)
        if len(kept) == 0:
            raise NoImagesError(f"{self.name}: fit needs normal images to train on besides the held-out ones, got "
                                f"{len(data)}")

        network = self.new_network(self.seed)
        optimizer = torch.optim.Adam(network.parameters(), lr=self.lr)

        def loss(batch: Tensor, generator: torch.Generator) -> Tensor:
            return squared_error_maps(batch, network(batch)).mean()

        train(network, optimizer, loss, data[kept], epochs=self.epochs, batch_size=self.batch_size,
              seed=self.seed, schedule=one_cycle_cosine(), checkpoint_dir=self.checkpoint_dir,
              resume=self.resume,
              fingerprint={"method": self.name, "widths": self.widths, "latent": self.latent, "lr": self.lr,
                           "image_size": self.image_size}, description="autoencoder")
        self.keep_network(network)
        if len(held) >= 2:  # the default decision threshold: μ + 3σ of normal images the network never saw
            self.calibrate(self.predict(data[held]), rule="mu3sigma")

    @torch.no_grad()
    def _predict(self, images: ImageInput) -> Prediction:
        device = resolve_device(self.device)
        maps = []
        for batch in as_batches(images, self.batch_size):
            batch = fit_size(batch.float(), self.image_size).to(device)
            maps.append(gaussian_blur(squared_error_maps(batch, self.network(batch)), self.sigma).cpu())
        maps = torch.cat(maps)  # -> (N, S, S)
        return Prediction(maps.flatten(1).mean(dim=1), maps)
