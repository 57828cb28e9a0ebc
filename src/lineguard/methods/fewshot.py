"""Few-shot PatchCore: a memory bank from K = 1…8 good images, widened by augmenting them.

With so few images the bank misses normal variation (a part turned a little, lit a little differently) and
such patches would score as defects. Augmented views of the support set (``features/augment.py``) fill that
gap; a greedy coreset then keeps the bank small without losing its rare patterns. Everything else is
PatchCore's: a patch scores its distance to the nearest bank patch, an image its largest patch score
re-weighted by how crowded the bank is around that nearest patch (``scoring.image.reweight``). No training,
so it works on a category it has never seen; a Siamese encoder trained on other categories
(``lineguard train-encoder``, ``encoder=FOLDER``) can replace the plain backbone features.

Measured (Lite0, 256 px, mean of 3 support draws; ``benchmarks/results/memory_bank``): bottle image AUROC
0.998 at K = 1 and K = 4. On Magnetic Tile the views add nothing beyond the spread between draws over
PatchCore on the same K images (K = 4: 0.771 vs 0.776), whichever views are on (flips only, brightness and
contrast, zoom, more translations: 0.773 to 0.783): what a few tiles miss is the look of other tiles, which
no view of the same tile supplies.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from lineguard.features.augment import Augmentations
from lineguard.features.extractor import fit_size
from lineguard.methods.base import ImageInput, as_batches, register
from lineguard.methods.patchcore import PatchCore
from lineguard.methods.siamese import PatchEncoder, load_encoder


@register
class FewShot(PatchCore):
    name = "fewshot"

    def __init__(self, backbone: str = "effnet-lite0", levels: list[int] | None = None, image_size: int = 256,
                 radius: int = 3, grayscale: bool = False, hflip: bool = True, vflip: bool = True,
                 rotations: int = 4, max_angle: float = 15.0, translations: int = 2, max_shift: float = 0.05,
                 zooms: int = 0, zoom_delta: float = 0.1, brightness: int = 0, brightness_delta: float = 0.2,
                 contrast: int = 0, contrast_delta: float = 0.2, coreset_ratio: float = 0.25, b: int = 9,
                 search: str = "auto", sigma: float = 4.0, seed: int = 0, weights: str | None = None,
                 device: str = "cpu", batch_size: int = 16, encoder: str | None = None):
        super().__init__(backbone=backbone, levels=levels, image_size=image_size, radius=radius,
                         coreset_ratio=coreset_ratio, b=b, search=search, sigma=sigma, seed=seed, weights=weights,
                         device=device, batch_size=batch_size)
        self.grayscale = grayscale
        self.hflip = hflip
        self.vflip = vflip
        self.rotations = rotations
        self.max_angle = max_angle
        self.translations = translations
        self.max_shift = max_shift
        self.zooms = zooms
        self.zoom_delta = zoom_delta
        self.brightness = brightness
        self.brightness_delta = brightness_delta
        self.contrast = contrast
        self.contrast_delta = contrast_delta
        self.encoder = encoder

    def feature_head(self) -> PatchEncoder | None:
        """The Siamese encoder folder ``encoder`` names, checked to have been trained on these backbone
        features; none: plain backbone features."""
        if self.encoder is None:
            return None
        head = load_encoder(self.encoder, self.device)
        head.check_features(backbone=self.backbone, levels=self.feature_levels(), radius=self.radius)
        return head

    def augmentations(self) -> Augmentations:
        """The support-set views these parameters ask for (raises ``AugmentationError`` on bad settings).
        Counts of random views only apply while their range is non-zero, so a range of 0 switches them off."""
        return Augmentations(
            grayscale=self.grayscale, hflip=self.hflip, vflip=self.vflip,
            rotations=self.rotations if self.max_angle else 0, max_angle=self.max_angle,
            translations=self.translations if self.max_shift else 0, max_shift=self.max_shift,
            zooms=self.zooms if self.zoom_delta else 0, zoom_delta=self.zoom_delta,
            brightness=self.brightness if self.brightness_delta else 0, brightness_delta=self.brightness_delta,
            contrast=self.contrast if self.contrast_delta else 0, contrast_delta=self.contrast_delta)

    def _check_params(self) -> None:
        super()._check_params()
        self.augmentations()

    def _bank_images(self, images: ImageInput) -> Iterator[Tensor]:
        """Batches of (≤ batch_size, 3, S, S) support views, augmented one input batch at a time."""
        augment, generator = self.augmentations(), torch.Generator().manual_seed(self.seed)
        for batch in as_batches(images, self.batch_size):
            yield from augment.expand(fit_size(batch.float(), self.image_size), generator).split(self.batch_size)
