"""A frozen backbone plus patch aggregation, applied batch by batch with progress.

Every backbone-based method extracts features the same way; this keeps resizing, device moves, no-grad and
progress in one place. The backbone is built on first use so a detector is cheap to construct and reload.

Letters: B images, D feature dimension, h × w the feature grid.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch import Tensor

from lineguard.backbones import Backbone, create_backbone
from lineguard.features.patches import patch_features
from lineguard.io.images import resize
from lineguard.progress import track


def fit_size(images: Tensor, size: int) -> Tensor:
    """(B, 3, H, W) -> (B, 3, size, size); a no-op when already that size."""
    return images if tuple(images.shape[-2:]) == (size, size) else resize(images, size)


class PatchExtractor:
    """(B, 3, H, W) images in [0, 1] -> (B, D, h, w) aggregated patch features."""

    def __init__(self, backbone: str, *, levels: Sequence[int] | None, weights: str | Path | None,
                 device: str, image_size: int, radius: int = 3, reduce_dim: int | None = None):
        self.backbone_name = backbone
        self.levels = levels
        self.weights = weights
        self.device = torch.device(device)
        self.image_size = image_size
        self.radius = radius
        self.reduce_dim = reduce_dim
        self._backbone: Backbone | None = None

    @property
    def backbone(self) -> Backbone:
        if self._backbone is None:
            self._backbone = create_backbone(self.backbone_name, levels=self.levels, weights=self.weights,
                                             device=self.device)
        return self._backbone

    @torch.inference_mode()
    def levels_of(self, images: Tensor) -> list[Tensor]:
        """Raw backbone maps of one batch: [(B, C_l, h_l, w_l)]."""
        return self.backbone(fit_size(images.to(self.device).float(), self.image_size))

    @torch.inference_mode()
    def __call__(self, images: Tensor) -> Tensor:
        return patch_features(self.levels_of(images), radius=self.radius, reduce_dim=self.reduce_dim)

    def iterate(self, batches, description: str = "features") -> Iterator[Tensor]:
        """Apply to every batch of an iterable, with a progress bar."""
        for batch in track(batches, description):
            yield self(batch)
