"""Tiling: a patch-feature detector run on overlapping tiles of each image at its native resolution.

Squashing a 4000 px frame to the 256 px working size shrinks a 20 px defect to about one pixel, below what a
feature cell sees. Cut into tiles of ``tile`` px instead (each tile scored at the working size, so a 256 px
tile is scored pixel for pixel), the defect keeps its size. The tiles' maps are stitched back at the image's
own resolution: where tiles overlap, each map is weighted by a window that rises linearly over the ``overlap``
from the tile's edge, so neighbouring maps cross-fade and no seam shows; an image's score is the highest of
its tiles' scores. Fit (and ``update``) learn from the tiles of the good images, so the reference is made of
the same kind of patches. Memory stays bounded: an image's tiles go through the detector ``batch_size`` at a
time, and only the stitched map (two H × W floats) is kept per image. Where the tiles lie and how maps are
stitched is :mod:`lineguard.tile_geometry`, in numpy, which an exported tiled model's runtime uses too.

Letters: N images, H × W an image's own size, T the tile side, O the overlap, S the working size.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lineguard.features.extractor import fit_size
from lineguard.methods.base import Detector, ImageInput, NoImagesError, Prediction, as_batches
from lineguard.methods.grid import GridDetector
from lineguard.native import NativeSizeDetector, NativeSizePrediction, gathered
from lineguard.tile_geometry import MIN_TILE, Box, Tiling, TilingError, stitch

__all__ = ["MIN_TILE", "TILING_FILE", "TiledDetector", "Tiling", "TilingError", "tiled"]

TILING_FILE = "tiling.json"


class TiledDetector(NativeSizeDetector):
    """A patch-feature detector applied tile by tile: fit, update, predict, calibrate and save as a detector
    does, with images read at their own size (``image_size`` None) and maps at it."""

    settings_file = TILING_FILE
    wrapping = "tiled (--tile)"

    def __init__(self, detector: Detector, tiling: Tiling):
        if not isinstance(detector, GridDetector):
            raise TilingError(f"{detector.name} cannot be tiled: only methods that score backbone patch features "
                              "on a grid can (patchcore, fewshot, knn, spade, padim, ...)")
        if not detector.uses_normal_images:
            raise TilingError(f"{detector.name} scores a batch against itself and cannot be tiled")
        if not isinstance(detector.image_size, int):
            raise TilingError(f"tiles are square: give the working size of a tile as one number, got image_size="
                              f"{detector.image_size!r}")
        super().__init__(detector)
        self.tiling = tiling

    def settings(self) -> dict[str, Any]:
        return asdict(self.tiling)

    @classmethod
    def from_settings(cls, detector: Detector, settings: dict[str, Any]) -> TiledDetector:
        return cls(detector, Tiling(int(settings["tile"]), int(settings.get("overlap", 0))))

    def _tile(self, image: Tensor, box: Box) -> Tensor:
        """(3, H, W) -> the tile at ``box``, at the working size (1, 3, S, S)."""
        return fit_size(image[:, box[0], box[1]][None], self.detector.image_size)

    def inputs(self, image: Tensor) -> Iterator[Tensor]:
        return (self._tile(image, box)[0] for box in self.tiling.boxes(*image.shape[-2:]))

    def update(self, images: ImageInput) -> TiledDetector:
        """``Detector.update`` with the images' tiles; the history counts images, and their tiles."""
        counted = [0]
        self.detector.update(self.input_batches(images, counted))
        last = self.detector.updates_[-1]
        last.update(tiles=last["images"], images=counted[0])
        return self

    @torch.no_grad()
    def predict(self, images: ImageInput) -> Prediction | NativeSizePrediction:
        """Scores (N,) and maps at each image's own size: a :class:`Prediction` when all images share one size,
        else a :class:`NativeSizePrediction`."""
        scores, maps = [], []
        for batch in as_batches(images, self.detector.batch_size):
            for image in batch:
                score, stitched = self._predict_one(image.float())
                scores.append(score)
                maps.append(stitched)
        if not scores:
            raise NoImagesError(f"{self.name}: predict needs at least one image")
        return gathered(scores, maps)

    def _predict_one(self, image: Tensor) -> tuple[Tensor, Tensor]:
        """(3, H, W) -> its score (the highest tile score) and (H, W) map (the tiles' maps blended)."""
        def run_tiles(boxes: list[Box]) -> tuple[np.ndarray, np.ndarray]:
            prediction = self.detector.predict(torch.cat([self._tile(image, box) for box in boxes]))
            return prediction.scores.cpu().numpy(), prediction.maps.cpu().numpy()

        best, stitched = stitch(self.tiling, *image.shape[-2:], self.detector.batch_size, run_tiles)
        return torch.tensor(best), torch.from_numpy(stitched)


def tiled(detector: Detector, tile: int | None, overlap: int = 0) -> Detector | TiledDetector:
    """``detector`` tiled with ``tile`` px tiles (None: as it is)."""
    if tile is None:
        if overlap:
            raise TilingError(f"overlap={overlap} needs a tile size (--tile)")
        return detector
    return TiledDetector(detector, Tiling(tile, overlap))
