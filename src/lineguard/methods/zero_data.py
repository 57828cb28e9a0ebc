"""What the test-batch (zero-data) methods share: a backbone read once, LNAMD views, map assembly.

Letters: N images, C_l channels of level l, h_l × w_l its grid, h × w the finest grid, H × W the image.

Such a method scores the batch handed to ``predict`` against itself, so ``fit`` learns nothing. The
backbone runs once per image; everything after it works on the cached levels.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence

import torch
from torch import Tensor

from lineguard.errors import ParameterError
from lineguard.features.extractor import BackboneFeatures
from lineguard.features.lnamd import DEFAULT_RADII
from lineguard.io.images import size_hw
from lineguard.methods.base import Detector, ImageInput, Prediction, as_batches
from lineguard.progress import track
from lineguard.scoring.batch import global_embedding, rescore_by_similarity
from lineguard.scoring.maps import gaussian_blur, upsample

DEFAULT_RESCORE_K = (1, 2, 3)  # RsCIN's setting: the image itself and its one or two closest look-alikes


class ZeroDataDetector(BackboneFeatures, Detector):
    """Base of methods with ``uses_normal_images = False``. Subclasses declare the attributes read here
    (backbone, levels, weights, device, image_size, batch_size, radii, rescore_k, sigma) in ``__init__``."""

    uses_normal_images = False
    patch_size = 1  # the extractor's own aggregation is off: LNAMD aggregates at its radii

    @property
    def radius_list(self) -> tuple[int, ...]:
        return tuple(self.radii) if self.radii is not None else DEFAULT_RADII

    @property
    def rescore_list(self) -> tuple[int, ...]:
        return tuple(self.rescore_k) if self.rescore_k is not None else DEFAULT_RESCORE_K

    def _fit(self, images: ImageInput) -> None:
        """Nothing to learn: the batch given to ``predict`` is its own reference."""
        if any(True for _ in as_batches(images, self.batch_size)):
            raise ParameterError(f"{self.name} uses no normal images: pass the unlabeled batch to predict()")

    def _predict(self, images: ImageInput) -> Prediction:
        """Read every image once, then score the batch against itself."""
        return self.predict_levels(self.read_levels(images, f"{self.name}: features"))

    @abstractmethod
    def predict_levels(self, levels: list[Tensor]) -> Prediction:
        """Score the batch from its backbone levels [(N, C_l, h_l, w_l)]."""

    def read_levels(self, images: ImageInput, description: str) -> list[Tensor]:
        """Every image through the backbone once: [(N, C_l, h_l, w_l)] where they were computed (the N² scoring
        then runs on the same device as the backbone)."""
        per_batch = [self.extractor.levels_of(batch)
                     for batch in track(as_batches(images, self.batch_size), description)]
        if not per_batch:
            raise ParameterError(f"{self.name} needs a batch of images to score, got none")
        return [torch.cat(levels) for levels in zip(*per_batch, strict=True)]

    def finish(self, grid_scores: Tensor, image_scores: Tensor, levels: Sequence[Tensor]) -> Prediction:
        """(N, h, w) patch scores, (N,) raw image scores -> Prediction with re-scored images and full maps."""
        scores = rescore_by_similarity(image_scores, global_embedding(levels[-1]), self.rescore_list)
        # the blur runs on the grid (σ converted to cells) before upsampling: the same map within bilinear
        # error, at 1/64 of the cost of a full-resolution blur at stride 8 (it was a sixth of a batch's time)
        size = size_hw(self.image_size)
        cells = self.sigma * grid_scores.shape[-1] / size[1]
        maps = upsample(gaussian_blur(grid_scores.float(), cells), size)
        return Prediction(scores.cpu(), maps.cpu())
