"""Heatmap overlays and defect contours for people to look at.

Maps are shown on one scale for a whole run (``low``/``high``), so a hot image really is hotter than a cool
one; per-image min-max scaling would paint every good image red somewhere. Normalised maps of a calibrated
detector use the fixed :data:`NORMALIZED_RANGE`, where the threshold (1.0) sits in the middle.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

#: Colour scale of normalised maps (threshold 1.0): fixed, so one image can be shown without a run around it.
NORMALIZED_RANGE = (0.0, 2.0)
REGION_COLOUR = (255, 255, 255)  # the detected defect region's outline
TRUTH_COLOUR = (255, 0, 255)  # the ground-truth outline, where known

# A perceptually ordered dark-blue → cyan → yellow → red ramp ("turbo"-like), as (position, RGB) stops.
_STOPS = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
_COLOURS = np.array([[48, 18, 59], [40, 150, 240], [100, 250, 100], [250, 190, 40], [180, 20, 10]],
                    dtype=np.float32)


def to_uint8(image) -> np.ndarray:
    """(3, H, W) floats in [0, 1] (an array or a CPU tensor) -> (H, W, 3) uint8, for showing."""
    return (np.asarray(image).transpose(1, 2, 0) * 255).round().astype(np.uint8)


def colorize(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """(H, W) scores -> (H, W, 3) uint8 colours, ``low`` and below dark blue, ``high`` and above red."""
    t = np.clip((values - low) / max(high - low, 1e-12), 0.0, 1.0)
    rgb = [np.interp(t, _STOPS, _COLOURS[:, c]) for c in range(3)]
    return np.stack(rgb, axis=-1).round().astype(np.uint8)


def overlay(image: np.ndarray, values: np.ndarray, low: float, high: float, alpha: float = 0.5) -> np.ndarray:
    """Blend the heatmap over an (H, W, 3) uint8 image; cool areas keep more of the image visible."""
    heat = colorize(values, low, high).astype(np.float32)
    weight = alpha * np.clip((values - low) / max(high - low, 1e-12), 0.15, 1.0)[..., None]
    return (image.astype(np.float32) * (1 - weight) + heat * weight).round().astype(np.uint8)


def draw_contour(image: np.ndarray, region: np.ndarray, colour: tuple[int, int, int] = REGION_COLOUR
                 ) -> np.ndarray:
    """Outline a boolean (H, W) region on a copy of the image (2 px wide boundary)."""
    boundary = region & ~ndimage.binary_erosion(region, iterations=2)
    out = image.copy()
    out[boundary] = colour
    return out


def annotate(image: np.ndarray, values: np.ndarray, low: float, high: float, *,
             region: np.ndarray | None = None, truth: np.ndarray | None = None) -> np.ndarray:
    """(H, W, 3) uint8 image + (H, W) map -> heatmap overlay, the detected region outlined in white and the
    ground truth (where known) in magenta."""
    out = overlay(image, values, low, high)
    for mask, colour in ((truth, TRUTH_COLOUR), (region, REGION_COLOUR)):
        if mask is not None and mask.any():
            out = draw_contour(out, mask, colour)
    return out


def display_range(maps: list[np.ndarray]) -> tuple[float, float]:
    """One colour scale for a run: from the median to the 99.9th percentile of all map values."""
    values = np.concatenate([m.ravel()[:: max(1, m.size // 4096)] for m in maps])
    low, high = np.percentile(values, [50, 99.9])
    return float(low), float(max(high, low + 1e-6))
