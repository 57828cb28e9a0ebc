"""A frozen backbone plus patch aggregation, applied batch by batch with progress.

Every backbone-based method extracts features the same way; this keeps resizing, device moves, no-grad and
progress in one place. The backbone is built on first use so a detector is cheap to construct and reload.

Letters: B images, D feature dimension, h × w the feature grid.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch
from torch import Tensor

from lineguard.backbones import Backbone, create_backbone
from lineguard.features.patches import patch_features
from lineguard.io.images import ImageSize, resize, size_hw
from lineguard.progress import track


def fit_size(images: Tensor, size: ImageSize) -> Tensor:
    """(B, 3, H, W) -> (B, 3, S, S), or (B, 3, h, w) for a size (h, w); a no-op when already that size."""
    return images if tuple(images.shape[-2:]) == size_hw(size) else resize(images, size)


class PatchExtractor:
    """(B, 3, H, W) images in [0, 1] -> (B, D, h, w) aggregated patch features."""

    def __init__(self, backbone: str, *, levels: Sequence[int] | None, weights: str | Path | None,
                 device: str, image_size: ImageSize, patch_size: int = 3, reduce_dim: int | None = None,
                 head: Callable[[Tensor], Tensor] | None = None):
        self.backbone_name = backbone
        self.levels = levels
        self.weights = weights
        self.device = torch.device(device)
        self.image_size = image_size
        self.patch_size = patch_size
        self.reduce_dim = reduce_dim
        self.head = head  # a trained module applied last, (B, D, h, w) -> (B, E, h, w): the Siamese encoder
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
        return self.patches(self.levels_of(images))

    def patches(self, levels: list[Tensor]) -> Tensor:
        """Backbone maps [(B, C_l, h_l, w_l)] -> (B, D, h, w) patch features, through the head if there is one
        (no inference mode of its own, so an exported graph can trace it)."""
        features = patch_features(levels, patch_size=self.patch_size, reduce_dim=self.reduce_dim)
        return features if self.head is None else self.head(features)

    def iterate(self, batches, description: str = "features") -> Iterator[Tensor]:
        """Apply to every batch of an iterable, with a progress bar."""
        for batch in track(batches, description):
            yield self(batch)


class BackboneFeatures:
    """Mixin for detectors whose parameters include ``backbone, levels, weights, device, image_size, patch_size``:
    their :class:`PatchExtractor`, built on first use so constructing or reloading a detector stays cheap."""

    backbone: str
    levels: Sequence[int] | None
    weights: str | None
    device: str
    image_size: ImageSize
    patch_size: int

    def feature_levels(self) -> Sequence[int] | None:
        """The levels to extract: the ``levels`` parameter (None: the backbone's defaults). A method whose
        paper takes other levels by default resolves ``None`` to those here."""
        return self.levels

    def feature_head(self) -> Callable[[Tensor], Tensor] | None:
        """A trained module the patch features pass through last (e.g. the Siamese encoder); none here."""
        return None

    @property
    def extractor(self) -> PatchExtractor:
        if getattr(self, "_extractor", None) is None:
            self._extractor = PatchExtractor(self.backbone, levels=self.feature_levels(), weights=self.weights,
                                             device=self.device, image_size=self.image_size, patch_size=self.patch_size,
                                             head=self.feature_head())
        return self._extractor
