"""Tiling: a patch-feature detector run on overlapping tiles of each image at its native resolution.

Squashing a 4000 px frame to the 256 px working size shrinks a 20 px defect to about one pixel, below what a
feature cell sees. Cut into tiles of ``tile`` px instead (each tile scored at the working size, so a 256 px
tile is scored pixel for pixel), the defect keeps its size. The tiles' maps are stitched back at the image's
own resolution: where tiles overlap, each map is weighted by a window that rises linearly over the ``overlap``
from the tile's edge, so neighbouring maps cross-fade and no seam shows; an image's score is the highest of
its tiles' scores. Fit (and ``update``) learn from the tiles of the good images, so the reference is made of
the same kind of patches. Memory stays bounded: an image's tiles go through the detector ``batch_size`` at a
time, and only the stitched map (two H × W floats) is kept per image.

Letters: N images, H × W an image's own size, T the tile side, O the overlap, S the working size.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from itertools import islice
from typing import Any

import torch
from torch import Tensor

from lineguard.errors import LineguardError
from lineguard.features.extractor import fit_size
from lineguard.methods.base import Detector, ImageInput, NoImagesError, Prediction, as_batches
from lineguard.methods.grid import GridDetector
from lineguard.native import NativeSizeDetector, TiledPrediction, gathered
from lineguard.scoring.maps import resize_maps

TILING_FILE = "tiling.json"
MIN_TILE = 16  # px: below this a tile is upsampled many times to the working size and its features are blur


class TilingError(LineguardError, ValueError):
    """Tile settings that cannot work, or a method that cannot be tiled; the message names the setting."""


@dataclass(frozen=True)
class Tiling:
    """Square tiles of ``tile`` px, neighbours overlapping by ``overlap`` px (the last tile of a row or column
    sits flush with the image's edge, so it may overlap more)."""

    tile: int
    overlap: int = 0

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not isinstance(value, int) or isinstance(value, bool):
                raise TilingError(f"tiling {name} must be a whole number of pixels, got {value!r}")
        if self.tile < MIN_TILE:
            raise TilingError(f"tile={self.tile}: tiles must be at least {MIN_TILE} px")
        if not 0 <= self.overlap < self.tile:
            raise TilingError(f"overlap={self.overlap}: the overlap must be between 0 and tile - 1 = "
                              f"{self.tile - 1} px")

    def starts(self, length: int) -> list[int]:
        """Where the tiles begin along an axis of ``length`` px (one tile, the whole axis, if it is shorter)."""
        if length <= self.tile:
            return [0]
        return [*range(0, length - self.tile, self.tile - self.overlap), length - self.tile]

    def boxes(self, height: int, width: int) -> list[tuple[slice, slice]]:
        """(rows, columns) of every tile of an H × W image, row by row."""
        rows = [slice(y, y + min(self.tile, height)) for y in self.starts(height)]
        columns = [slice(x, x + min(self.tile, width)) for x in self.starts(width)]
        return [(r, c) for r in rows for c in columns]

    def window(self, height: int, width: int) -> Tensor:
        """(h, w) blending weights of a tile: rising linearly over ``overlap`` px from every edge to 1, never 0,
        so overlapping maps cross-fade and an edge that no other tile covers keeps its own values."""
        def ramp(n: int) -> Tensor:
            distance = torch.arange(n)
            edge = torch.minimum(distance, n - 1 - distance).float() + 1  # 1 at the edge
            return (edge / (self.overlap + 1)).clamp(max=1.0)

        return ramp(height)[:, None] * ramp(width)[None]


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

    def _tiles(self, image: Tensor) -> Iterator[tuple[tuple[slice, slice], Tensor]]:
        """(3, H, W) -> each tile's box and the tile at the working size (3, S, S)."""
        size = self.detector.image_size
        for box in self.tiling.boxes(*image.shape[-2:]):
            yield box, fit_size(image[:, box[0], box[1]][None], size)[0]

    def inputs(self, image: Tensor) -> Iterator[Tensor]:
        return (tile for _, tile in self._tiles(image))

    def update(self, images: ImageInput) -> TiledDetector:
        """``Detector.update`` with the images' tiles; the history counts images, and their tiles."""
        counted = [0]
        self.detector.update(self.input_batches(images, counted))
        last = self.detector.updates_[-1]
        last.update(tiles=last["images"], images=counted[0])
        return self

    @torch.no_grad()
    def predict(self, images: ImageInput) -> Prediction | TiledPrediction:
        """Scores (N,) and maps at each image's own size: a :class:`Prediction` when all images share one size,
        else a :class:`TiledPrediction`."""
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
        height, width = image.shape[-2:]
        total, weight = torch.zeros(height, width), torch.zeros(height, width)
        best = torch.tensor(float("-inf"))
        tiles = self._tiles(image)  # cut as they are scored: 324 tiles of a 8000 x 2000 frame held at once took 255 MB
        while chunk := list(islice(tiles, self.detector.batch_size)):
            prediction = self.detector.predict(torch.stack([tile for _, tile in chunk]))
            best = torch.maximum(best, prediction.scores.max().cpu())
            for (rows, columns), tile_map in zip((box for box, _ in chunk), prediction.maps, strict=True):
                shape = (rows.stop - rows.start, columns.stop - columns.start)
                window = self.tiling.window(*shape)
                total[rows, columns] += resize_maps(tile_map[None].cpu(), shape)[0] * window
                weight[rows, columns] += window
        return best, total / weight


def tiled(detector: Detector, tile: int | None, overlap: int = 0) -> Detector | TiledDetector:
    """``detector`` tiled with ``tile`` px tiles (None: as it is)."""
    if tile is None:
        if overlap:
            raise TilingError(f"overlap={overlap} needs a tile size (--tile)")
        return detector
    return TiledDetector(detector, Tiling(tile, overlap))
