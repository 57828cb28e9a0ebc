"""Few-shot PatchCore: a memory bank from K = 1…8 good images, widened by augmenting them.

With so few images the bank misses normal variation (a part turned a little, lit a little differently) and
such patches would score as defects. Augmented views of the support set (``features/augment.py``) fill that
gap; a greedy coreset then keeps the bank small without losing its rare patterns. Everything else is
PatchCore's: a patch scores its distance to the nearest bank patch, an image its largest patch score
re-weighted by how crowded the bank is around that nearest patch (``scoring.image.reweight``). No training,
so it works on a category it has never seen; a Siamese encoder trained on other categories
(``lineguard train-encoder``, ``encoder=FOLDER``) can replace the plain backbone features.

Defaults, from measurements on Magnetic Tile (Lite0, K = 4, three support draws; ``benchmarks/results/
memory_bank``), where the support misses most of the line's variation:

* flips and six brightness views with gains in [0.4, 1.6]. The tiles come from six lighting set-ups whose mean
  grey level ranges over 2.4× (66 to 155); four images show at most four of them, and gains of 0.4–1.6 bridge
  most of the gaps between neighbouring set-ups. Brightness views raised image AUROC by 0.014 over no views.
  Rotations and shifts (15°, 5 %) did not help there (flips only 0.773 against 0.771 with them; with
  brightness views, one draw, 0.782 against 0.794) and double the views, so they are off; turn them on for
  parts that come turned or shifted.
* ``baseline_quantile`` 0.25: image scores are measured from the image's own lower-quartile patch score
  (``scoring.image.above_baseline``). A look the bank lacks raises every patch of an image, a defect only
  its own; this added another 0.011 (maps keep absolute distances).
* ``normalize_lighting``: every support and query image is given the support's average grey level and
  contrast (``features/lighting.py``) before the backbone, so a query lit unlike any support image no longer
  shifts all its patches: 0.796 → 0.815 image AUROC and 0.660 → 0.676 AUPRO, pixel AUROC unchanged. One gain
  and offset per image for all three channels: colour casts and local changes stay visible, a part that is
  darker as a whole does not (switch it off where that is the defect).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
from torch import Tensor

from lineguard.features.augment import VIEW_CONSTRAINTS, Augmentations
from lineguard.features.extractor import fit_size
from lineguard.features.lighting import lighting, match_lighting
from lineguard.methods.base import ImageInput, as_batches, register
from lineguard.methods.patchcore import PatchCore
from lineguard.methods.siamese import PatchEncoder, load_encoder


@register
class FewShot(PatchCore):
    """PatchCore on an augmented support set: every PatchCore parameter, few-shot defaults, and the views."""

    name = "fewshot"
    file_params = (*PatchCore.file_params, "encoder")
    parameter_constraints = VIEW_CONSTRAINTS

    def __init__(self, *, backbone: str = "effnet-lite0", levels: list[int] | None = None,
                 image_size: int | tuple[int, int] = 256,
                 patch_size: int = 3, reduce_dim: int | None = None, coreset_ratio: float = 0.25,
                 projection_dim: int = 128, reweight_neighbours: int = 9, search: str = "auto",
                 sigma: float = 4.0, baseline_quantile: float | None = 0.25, seed: int = 0, weights: str | None = None,
                 device: str = "cpu", batch_size: int = 16, grayscale: bool = False, hflip: bool = True,
                 vflip: bool = True, rotation_views: int = 0, max_angle: float = 15.0, translation_views: int = 0,
                 max_shift: float = 0.05, zoom_views: int = 0, zoom_delta: float = 0.1, brightness_views: int = 6,
                 brightness_delta: float = 0.6, contrast_views: int = 0, contrast_delta: float = 0.2,
                 normalize_lighting: bool = True, encoder: str | None = None):
        super().__init__(backbone=backbone, levels=levels, image_size=image_size, patch_size=patch_size,
                         reduce_dim=reduce_dim, coreset_ratio=coreset_ratio, projection_dim=projection_dim,
                         reweight_neighbours=reweight_neighbours,
                         search=search, sigma=sigma, baseline_quantile=baseline_quantile, seed=seed,
                         weights=weights, device=device, batch_size=batch_size)
        self.grayscale = grayscale
        self.hflip = hflip
        self.vflip = vflip
        self.rotation_views = rotation_views
        self.max_angle = max_angle
        self.translation_views = translation_views
        self.max_shift = max_shift
        self.zoom_views = zoom_views
        self.zoom_delta = zoom_delta
        self.brightness_views = brightness_views
        self.brightness_delta = brightness_delta
        self.contrast_views = contrast_views
        self.contrast_delta = contrast_delta
        self.normalize_lighting = normalize_lighting
        self.encoder = encoder

    def feature_head(self) -> PatchEncoder | None:
        """The Siamese encoder folder ``encoder`` names, checked to have been trained on these backbone
        features; none: plain backbone features."""
        if self.encoder is None:
            return None
        head = load_encoder(self.encoder, self.device)
        head.check_features(backbone=self.backbone, levels=self.feature_levels(), patch_size=self.patch_size)
        return head

    def augmentations(self) -> Augmentations:
        """The support-set views these parameters ask for (raises ``AugmentationError`` on bad settings).
        Counts of random views only apply while their range is non-zero, so a range of 0 switches them off."""
        return Augmentations(
            grayscale=self.grayscale, hflip=self.hflip, vflip=self.vflip,
            rotation_views=self.rotation_views if self.max_angle else 0, max_angle=self.max_angle,
            translation_views=self.translation_views if self.max_shift else 0, max_shift=self.max_shift,
            zoom_views=self.zoom_views if self.zoom_delta else 0, zoom_delta=self.zoom_delta,
            brightness_views=self.brightness_views if self.brightness_delta else 0,
            brightness_delta=self.brightness_delta,
            contrast_views=self.contrast_views if self.contrast_delta else 0, contrast_delta=self.contrast_delta)

    def _fit(self, images: ImageInput) -> None:
        """Build the bank from the support set; with ``normalize_lighting``, first note the support's average
        lighting, which every support and query image is matched to."""
        support = [fit_size(batch.float(), self.image_size) for batch in as_batches(images, self.batch_size)]
        if self.normalize_lighting and support:
            self.lighting_ = lighting(torch.cat(support)).mean(dim=0)  # (2,): mean, standard deviation
        elif hasattr(self, "lighting_"):
            del self.lighting_
        super()._fit(support)

    def _matched(self, batches: Iterable[Tensor]) -> Iterator[Tensor]:
        """``batches`` with the support's lighting, when the detector was fitted with lighting matching."""
        reference = getattr(self, "lighting_", None)
        for batch in batches:
            yield batch.float() if reference is None else match_lighting(batch.float(), reference)

    def fit_batches(self, images: ImageInput) -> Iterator[Tensor]:
        """Batches of (≤ batch_size, 3, S, S) views of the support (or of the images ``update`` adds), resized,
        matched to the support's lighting and augmented one input batch at a time."""
        augment, generator = self.augmentations(), torch.Generator().manual_seed(self.seed)
        for batch in self._matched(as_batches(images, self.batch_size)):
            yield from augment.expand(fit_size(batch, self.image_size), generator).split(self.batch_size)

    def query_batches(self, images: ImageInput) -> Iterator[Tensor]:
        return self._matched(super().query_batches(images))
