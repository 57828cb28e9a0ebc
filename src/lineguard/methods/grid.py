"""The one fit and predict loop of the methods that score backbone patch features on a grid.

Letters: B images, h × w the feature grid, H × W the working resolution (``size_hw(image_size)``).

Such a method supplies only what is its own:

* ``learn(features)`` — its reference from the normal images' features (an iterator of at least one batch);
* ``patch_scores(features)`` — (B, h, w) anomaly scores of one batch's patches;
* optionally ``grow(features)`` — the reference widened by more normal images' features (``update``;
  set ``grows = True``); ``features(batches, description)`` — what it computes per image batch (default: the extractor's
  aggregated patch features (B, D, h, w)), ``image_scores(grid, maps)`` — the image reduction (default: the
  highest patch score), or ``score_batch`` when its image scores need more than the grid (PatchCore's
  re-weighting needs the nearest bank rows).

The loop owns batching, progress, the "no images" error, the maps (bilinear upsampling and a Gaussian blur of
``sigma`` px, ``scoring.maps``), the image scores, a nearest-neighbour index over ``search_bank`` built on
first use, and the assembly into one :class:`Prediction`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import chain
from typing import Any, ClassVar

import torch
from torch import Tensor

from lineguard.features.extractor import BackboneFeatures
from lineguard.io.images import size_hw
from lineguard.memory.knn import NearestNeighbours
from lineguard.methods.base import Detector, ImageInput, NoImagesError, Prediction, as_batches
from lineguard.scoring.image import max_score
from lineguard.scoring.maps import anomaly_maps


class GridDetector(BackboneFeatures, Detector):
    """Base of backbone methods that score patches on the feature grid (see the module docstring). Subclasses
    take ``batch_size`` (images per batch) and ``sigma`` besides the backbone parameters."""

    batch_size: int
    sigma: float
    #: The learned attribute (M, D) that ``index`` searches, for methods that search one.
    search_bank: ClassVar[str | None] = None

    def fit_batches(self, images: ImageInput) -> Iterable[Tensor]:
        """The (B, 3, H, W) batches the reference is learned from: the normal images as given."""
        return as_batches(images, self.batch_size)

    def query_batches(self, images: ImageInput) -> Iterable[Tensor]:
        """The (B, 3, H, W) batches ``predict`` scores, as given."""
        return as_batches(images, self.batch_size)

    def features(self, batches: Iterable[Tensor], description: str) -> Iterator[Any]:
        """What the method scores of each batch: here (B, D, h, w) aggregated patch features."""
        return self.extractor.iterate(batches, description)

    def learn(self, features: Iterator[Any]) -> None:
        """Set the learned state from the normal images' features (at least one batch)."""
        raise NotImplementedError

    def grow(self, features: Iterator[Any]) -> None:
        """Widen the learned state with more normal images' features (at least one batch)."""
        raise NotImplementedError

    def patch_scores(self, features: Any) -> Tensor:
        """(B, h, w) anomaly scores of one batch's patches."""
        raise NotImplementedError

    def image_scores(self, grid: Tensor, maps: Tensor) -> Tensor:
        """(B, h, w) patch scores, (B, H, W) maps -> (B,): the most anomalous patch decides."""
        return max_score(grid)

    def score_batch(self, features: Any) -> tuple[Tensor, Tensor | None]:
        """(B, h, w) patch scores, and (B,) image scores when the method computes them itself (None: from
        :meth:`image_scores`)."""
        return self.patch_scores(features), None

    def search_backend(self) -> str:
        """The :class:`NearestNeighbours` backend of ``index``."""
        return "auto"

    @property
    def index(self) -> NearestNeighbours:
        """A search index over the learned ``search_bank``, built on first use and again for a new bank."""
        bank = getattr(self, self.search_bank)
        cached = getattr(self, "_index", None)
        if cached is None or cached[0] is not bank:
            self._index = (bank, NearestNeighbours(bank, backend=self.search_backend()))
        return self._index[1]

    def _fit(self, images: ImageInput) -> None:
        features = self.features(self.fit_batches(images), f"{self.name}: normal features")
        first = next(features, None)
        if first is None:
            raise NoImagesError(f"{self.name}: fit needs at least one normal image")
        self.learn(chain([first], features))

    def _update(self, images: ImageInput) -> int:
        counted = [0]

        def counting(batches: Iterable[Tensor]) -> Iterator[Tensor]:
            for batch in batches:
                counted[0] += len(batch)
                yield batch

        features = self.features(self.fit_batches(counting(as_batches(images, self.batch_size))),
                                 f"{self.name}: new normal features")
        first = next(features, None)
        if first is None:
            raise NoImagesError(f"{self.name}: update needs at least one normal image")
        self.grow(chain([first], features))
        return counted[0]

    @torch.no_grad()
    def _predict(self, images: ImageInput) -> Prediction:
        scores, maps = [], []
        size = size_hw(self.image_size)
        for features in self.features(self.query_batches(images), f"{self.name}: scoring"):
            grid, image_scores = self.score_batch(features)
            maps.append(anomaly_maps(grid, size, self.sigma))
            scores.append(self.image_scores(grid, maps[-1]) if image_scores is None else image_scores)
        if not scores:
            raise NoImagesError(f"{self.name}: predict needs at least one image")
        return Prediction(torch.cat(scores), torch.cat(maps))
