"""Defect regions: where a normalised anomaly map crosses the threshold, as a mask and as bounding boxes.

A region is one 8-connected group of pixels at or above the threshold (diagonal neighbours join: a thin
diagonal scratch is one defect, not a staircase of many). Boxes are half-open like Python slices: the region
spans columns ``x0 .. x1 - 1`` and rows ``y0 .. y1 - 1``.

Letters: H × W map size.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from lineguard.scoring.threshold import NORMALIZED_THRESHOLD

_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class Region:
    x0: int
    y0: int
    x1: int
    y1: int
    area: int  # pixels in the region (at the resolution it was found at)
    peak: float  # highest normalised map value inside

    def scaled(self, source: tuple[int, int], target: tuple[int, int]) -> Region:
        """The box in another (H, W) of the same image (e.g. the original's); it still covers the region."""
        sy, sx = target[0] / source[0], target[1] / source[1]
        return Region(x0=math.floor(self.x0 * sx), y0=math.floor(self.y0 * sy),
                      x1=min(target[1], math.ceil(self.x1 * sx)), y1=min(target[0], math.ceil(self.y1 * sy)),
                      area=round(self.area * sx * sy), peak=self.peak)

    def to_dict(self) -> dict[str, int | float]:
        return asdict(self)


def defect_mask(normalized_map: np.ndarray, threshold: float = NORMALIZED_THRESHOLD) -> np.ndarray:
    """(H, W) normalised map -> (H, W) bool, True where the map is at or above ``threshold``."""
    return np.asarray(normalized_map) >= threshold


def find_regions(mask: np.ndarray, values: np.ndarray) -> list[Region]:
    """Connected regions of an (H, W) bool mask, with their peak in ``values`` (H, W); highest peak first."""
    mask, values = np.asarray(mask, dtype=bool), np.asarray(values)
    if mask.ndim != 2 or mask.shape != values.shape:
        raise ValueError(f"mask and values must be the same (H, W), got {mask.shape} and {values.shape}")
    labelled, count = ndimage.label(mask, structure=_EIGHT_CONNECTED)
    if count == 0:
        return []
    index = np.arange(1, count + 1)
    areas = ndimage.sum_labels(mask, labelled, index)
    peaks = ndimage.maximum(values, labelled, index)
    regions = [Region(x0=box[1].start, y0=box[0].start, x1=box[1].stop, y1=box[0].stop, area=int(area),
                      peak=float(peak))
               for box, area, peak in zip(ndimage.find_objects(labelled), areas, peaks, strict=True)]
    return sorted(regions, key=lambda r: -r.peak)
