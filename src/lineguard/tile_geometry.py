"""Where the tiles of an image lie and how their maps are stitched back, in numpy: shared by the PyTorch tiled
detector (:mod:`lineguard.tiling`) and an exported tiled model run without PyTorch (``export.runtime``), so both
cut the same tiles and blend the same way.

A tile's map comes at the working size and is resized (bilinear, as ``scoring.maps.resize_maps``) to the tile's
own size, weighted by the tile's :meth:`Tiling.window` and added; the stitched map is the weighted mean, the image
score the highest tile score.

Letters: H × W an image's own size, T the tile side, O the overlap, S × S the working size, B tiles.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np

from lineguard.errors import LineguardError

MIN_TILE = 16  # px: below this a tile is upsampled many times to the working size and its features are blur

Box = tuple[slice, slice]  # a tile's (rows, columns) in the image


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

    def boxes(self, height: int, width: int) -> list[Box]:
        """(rows, columns) of every tile of an H × W image, row by row."""
        rows = [slice(y, y + min(self.tile, height)) for y in self.starts(height)]
        columns = [slice(x, x + min(self.tile, width)) for x in self.starts(width)]
        return [(r, c) for r in rows for c in columns]

    def window(self, height: int, width: int) -> np.ndarray:
        """(h, w) float32 blending weights of a tile: rising linearly over ``overlap`` px from every edge to 1,
        never 0, so overlapping maps cross-fade and an edge that no other tile covers keeps its own values."""
        def ramp(n: int) -> np.ndarray:
            distance = np.arange(n)
            edge = np.minimum(distance, n - 1 - distance).astype(np.float32) + 1  # 1 at the edge
            return np.minimum(edge / np.float32(self.overlap + 1), np.float32(1.0))

        return ramp(height)[:, None] * ramp(width)[None]


@lru_cache(maxsize=32)
def bilinear_operator(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) float32: bilinear resampling along one axis, pixel centres aligned (PyTorch's
    ``interpolate(mode="bilinear", align_corners=False)`` without antialiasing, which ``resize_maps`` uses)."""
    source = np.maximum((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0)
    low = np.minimum(source.astype(np.int64), n_in - 1)
    high = np.minimum(low + 1, n_in - 1)
    weight_high = (source - low).astype(np.float32)
    operator = np.zeros((n_out, n_in), np.float32)
    np.add.at(operator, (np.arange(n_out), low), 1 - weight_high)
    np.add.at(operator, (np.arange(n_out), high), weight_high)
    return operator


class Stitching:
    """The stitched map and score of one H × W image, tiles added a batch at a time."""

    def __init__(self, tiling: Tiling, height: int, width: int):
        self.tiling = tiling
        self.total = np.zeros((height, width), np.float32)
        self.weight = np.zeros((height, width), np.float32)
        self.best = np.float32(-np.inf)

    def add(self, boxes: list[Box], scores: np.ndarray, maps: np.ndarray) -> None:
        """The tiles at ``boxes``, their scores (B,) and maps (B, S, S) at the working size."""
        self.best = max(self.best, np.float32(np.max(scores)))
        for (rows, columns), tile_map in zip(boxes, maps, strict=True):
            shape = (rows.stop - rows.start, columns.stop - columns.start)
            window = self.tiling.window(*shape)
            resized = bilinear_operator(tile_map.shape[0], shape[0]) @ tile_map.astype(np.float32) \
                @ bilinear_operator(tile_map.shape[1], shape[1]).T  # (h, w)
            self.total[rows, columns] += resized * window
            self.weight[rows, columns] += window

    def result(self) -> tuple[np.float32, np.ndarray]:
        """The image's score (the highest tile score) and (H, W) map (the tiles' maps blended)."""
        return self.best, self.total / self.weight


def stitch(tiling: Tiling, height: int, width: int, batch_size: int,
           score: Callable[[list[Box]], tuple[np.ndarray, np.ndarray]]) -> tuple[np.float32, np.ndarray]:
    """One H × W image's score and stitched map: its tiles' boxes go to ``score`` (boxes -> scores (B,), maps
    (B, S, S)) ``batch_size`` at a time, so only one batch of tiles exists at once (324 tiles of an 8000 × 2000
    frame held together took 255 MB)."""
    stitching = Stitching(tiling, height, width)
    boxes = tiling.boxes(height, width)
    for start in range(0, len(boxes), batch_size):
        chunk = boxes[start:start + batch_size]
        stitching.add(chunk, *score(chunk))
    return stitching.result()
