"""Siamese category-agnostic encoder (after RegAD, Huang et al., 2022): learned once, reused on new products.

A few-shot detector compares patches of a new product with a handful of good images; what it needs from its
features is that the same part of a product looks alike across images, poses and lighting, whatever the
product. This encoder learns that on products it is trained on and is then reused unchanged on others.
On top of frozen backbone patch features, an encoder (three 1 × 1 convolutions) maps every patch to an
embedding and a predictor (two 1 × 1 convolutions) tries to predict the embedding of the matching patch of
a second image of the same category, which is augmented with the few-shot augmentations (flips, rotation,
shift, brightness). The loss is SimSiam's negative cosine similarity, symmetric, with stop-gradient on the
branch without the predictor; SGD with momentum and a one-cycle cosine schedule.

Registration: the augmentation of the second image is a known affine transform; its feature map is warped
back with the inverse transform (a spatial transformer with known parameters), so that a patch is compared
with the patch at the same place of the product, and cells that came from outside the image do not count.

The pairs' augmentation is ``features.augment``'s (``random_affines``, ``warp``, ``random_brightness``).
``train_encoder`` trains across categories, ``save_encoder``/``load_encoder`` keep it as a model folder,
and the loaded :class:`PatchEncoder` maps (B, D, h, w) backbone patch features to (B, D, h, w).

Letters: B images, D backbone feature dimension, h × w the feature grid, S image size.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import Tensor, nn

from lineguard.errors import LineguardError, ParameterError
from lineguard.features.augment import invert_affines, random_affines, random_brightness, warp
from lineguard.features.extractor import PatchExtractor, fit_size
from lineguard.methods.model_folder import ModelFolderError, read_config, read_tensors, renamed, write_folder
from lineguard.training import one_cycle_cosine, resolve_device, seeded, train

ENCODER_METHOD = "siamese-encoder"  # the "method" of its model folder
LEGACY_CONFIG, LEGACY_WEIGHTS = "encoder.json", "encoder.safetensors"  # before model format 2


class EncoderError(LineguardError, ValueError):
    """An encoder folder that is missing, malformed, or made for other backbone features."""


@dataclass(frozen=True)
class EncoderConfig:
    """What the encoder was trained on top of (features must be extracted the same way) and its widths."""

    backbone: str = "effnet-lite0"
    levels: list[int] | None = None
    image_size: int = 256
    patch_size: int = 3
    weights: str | None = None
    hidden: int = 256
    predictor_hidden: int = 64
    channels: int | None = None  # D, the width of the patch features read; filled in by train_encoder

    def extractor(self, device: str) -> PatchExtractor:
        return PatchExtractor(self.backbone, levels=self.levels, weights=self.weights, device=device,
                              image_size=self.image_size, patch_size=self.patch_size)


def pointwise_mlp(widths: Sequence[int]) -> nn.Sequential:
    """1 × 1 convolutions through ``widths``, batch norm and ReLU between them (not after the last)."""
    layers: list[nn.Module] = []
    for i, (c_in, c_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        layers.append(nn.Conv2d(c_in, c_out, 1))
        if i < len(widths) - 2:
            layers += [nn.BatchNorm2d(c_out), nn.ReLU()]
    return nn.Sequential(*layers)


class Residual(nn.Module):
    """x + f(x) with the last convolution of f at zero: the encoder starts as the identity, so training departs
    from the plain backbone features (a strong few-shot baseline) instead of from random projections."""

    def __init__(self, body: nn.Sequential):
        super().__init__()
        nn.init.zeros_(body[-1].weight)
        nn.init.zeros_(body[-1].bias)
        self.body = body

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class SiameseEncoder(nn.Module):
    """Encoder x + f(x), f: D -> hidden -> hidden -> D, and predictor D -> predictor_hidden -> D, all 1 × 1."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        if config.channels is None:
            raise EncoderError("EncoderConfig.channels (the width of the patch features) is not set")
        self.config = config
        self.encoder = Residual(pointwise_mlp([config.channels, config.hidden, config.hidden, config.channels]))
        self.predictor = pointwise_mlp([config.channels, config.predictor_hidden, config.channels])

    def forward(self, features: Tensor) -> Tensor:
        """(B, D, h, w) -> (B, D, h, w)."""
        return self.encoder(features)


def negative_cosine(prediction: Tensor, target: Tensor, valid: Tensor) -> Tensor:
    """SimSiam's D(p, z): minus the cosine similarity of p and the stopped z, over the valid cells.

    (B, D, h, w), (B, D, h, w), (B, h, w) bool -> scalar.
    """
    cosine = F.cosine_similarity(prediction, target.detach(), dim=1)  # (B, h, w)
    return -cosine[valid].mean()


def same_category_partners(rows: Tensor, sizes: Tensor, generator: torch.Generator) -> Tensor:
    """For image indices (B,) into categories laid end to end with ``sizes`` (C,), a random other image of the
    same category for each -> (B,) indices; never the image itself."""
    starts = torch.cumsum(sizes, 0) - sizes
    category = torch.searchsorted(torch.cumsum(sizes, 0), rows, right=True)  # (B,)
    size, start = sizes[category], starts[category]
    offset = 1 + (torch.rand(len(rows), generator=generator) * (size - 1)).long()  # 1 … size − 1
    return start + (rows - start + offset) % size


# -- training ------------------------------------------------------------------------------------------------
def train_encoder(categories: Sequence[Tensor], config: EncoderConfig = EncoderConfig(), *, epochs: int = 10,
                  lr: float = 0.05, batch_size: int = 16, max_angle: float = 15.0, max_shift: float = 0.05,
                  brightness_delta: float = 0.1, seed: int = 0, checkpoint_dir: str | Path | None = None,
                  resume: bool = False, device: str = "cpu") -> SiameseEncoder:
    """Train on normal images of several categories, each (N_c, 3, S, S) in [0, 1]; pairs never mix them."""
    if not categories or any(len(c) < 2 for c in categories):
        raise ParameterError("every category needs at least two normal images to form pairs, got sizes "
                             f"{[len(c) for c in categories]}")
    device = str(resolve_device(device))
    extractor = config.extractor(device)
    config = replace(config, channels=sum(level.channels for level in extractor.backbone.levels))
    images = torch.cat([(fit_size(c.float(), config.image_size) * 255).round().to(torch.uint8)
                        for c in categories])  # (N, 3, S, S) uint8
    sizes = torch.tensor([len(c) for c in categories])
    with seeded(seed):
        model = SiameseEncoder(config)
    model = model.to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)

    def loss(rows: Tensor, generator: torch.Generator) -> Tensor:
        rows = rows.cpu()
        partners = same_category_partners(rows, sizes, generator)
        first = images[rows].float() / 255
        theta = random_affines(len(rows), generator, max_angle=max_angle, max_shift=max_shift)
        second = warp(images[partners].float() / 255, theta, "reflection")
        second = random_brightness(second, generator, brightness_delta)
        f1 = extractor(first).clone()  # (B, D, h, w); clone: out of inference mode for autograd
        f2 = extractor(second).clone()
        back = invert_affines(theta)
        z1, z2 = model(f1), warp(model(f2), back, "zeros")  # z2 registered onto the first image's frame
        valid = warp(torch.ones_like(f2[:, :1]), back, "zeros")[:, 0] > 0.999  # (B, h, w)
        p1, p2 = model.predictor(z1), model.predictor(z2)
        return 0.5 * (negative_cosine(p1, z2, valid) + negative_cosine(p2, z1, valid))

    train(model, optimizer, loss, torch.arange(len(images)), epochs=epochs, batch_size=batch_size, seed=seed,
          schedule=one_cycle_cosine(), checkpoint_dir=checkpoint_dir, resume=resume,
          fingerprint={"encoder": asdict(config), "sizes": sizes.tolist(), "lr": lr, "max_angle": max_angle,
                       "max_shift": max_shift, "brightness_delta": brightness_delta},
          description="siamese encoder")
    return model


# -- saving and loading --------------------------------------------------------------------------------------
def save_encoder(model: SiameseEncoder, folder: str | Path) -> Path:
    """A model folder (``config.json`` with the config, ``state.safetensors`` with the encoder's weights; the
    predictor is only for training)."""
    return write_folder(Path(folder), ENCODER_METHOD, asdict(model.config), model.encoder.state_dict(), {})


class PatchEncoder(nn.Module):
    """A trained encoder for use as a feature head: (B, D, h, w) -> (B, D, h, w), frozen, in eval mode."""

    def __init__(self, config: EncoderConfig, encoder: nn.Module):
        super().__init__()
        self.config = config
        self.encoder = encoder.eval().requires_grad_(False)

    def check_features(self, *, backbone: str, levels: Sequence[int] | None, patch_size: int) -> None:
        """Raise unless features extracted this way are the ones the encoder was trained on."""
        mine = (self.config.backbone, None if self.config.levels is None else list(self.config.levels),
                self.config.patch_size)
        theirs = (backbone, None if levels is None else list(levels), patch_size)
        if mine != theirs:
            raise EncoderError(f"the encoder was trained on (backbone, levels, patch_size) = {mine}, but the "
                               f"features given are {theirs}")

    @torch.no_grad()
    def forward(self, features: Tensor) -> Tensor:
        return self.encoder(features)


def load_encoder(path: str | Path, device: str = "cpu") -> PatchEncoder:
    """Load an encoder folder written by :func:`save_encoder` (or by lineguard before model format 2, as
    ``encoder.json`` and ``encoder.safetensors``); safetensors + JSON, no pickles."""
    folder = Path(path)
    try:
        if (folder / LEGACY_CONFIG).is_file():
            params = renamed(json.loads((folder / LEGACY_CONFIG).read_text()), ENCODER_METHOD, 1)
            tensors = load_file(str(folder / LEGACY_WEIGHTS))
        else:
            method, params, _ = read_config(folder)
            if method != ENCODER_METHOD:
                raise EncoderError(f"{folder} holds a {method} model, not an encoder (made by `lineguard "
                                   "train-encoder`)")
            tensors = read_tensors(folder)
        config = EncoderConfig(**params)
    except (ModelFolderError, TypeError, json.JSONDecodeError, OSError) as exc:
        raise EncoderError(f"{folder} is not an encoder folder made by `lineguard train-encoder`: {exc}") from exc
    encoder = SiameseEncoder(config).encoder
    try:
        encoder.load_state_dict(tensors)
    except RuntimeError as exc:
        raise EncoderError(f"{folder}: the weights do not fit the encoder of its config: {exc}") from exc
    return PatchEncoder(config, encoder).to(resolve_device(device))
