"""AUPRO: the area under the per-region overlap (PRO) curve up to a false positive rate limit.

The MVTec AD definition (Bergmann et al., IJCV 2021): the regions are the 8-connected components of
each ground-truth mask (the official ``pro_curve_util.py`` labels with ``np.ones((3, 3))``; anomalib's
``connected_components_cpu`` uses OpenCV's default 8-connectivity too). For a threshold t,

    PRO(t) = mean over all regions r of |r ∩ {map >= t}| / |r|
    FPR(t) = fraction of the normal pixels of all images with map >= t

and AUPRO = (1 / fpr_limit) * ∫ PRO dFPR from 0 to fpr_limit, the curve being linear between
thresholds and cut at the limit by linear interpolation. Unlike MVTec's script (a fixed grid of
thresholds), this is exact: every distinct score is a threshold, found with one sort, and equal
scores form one step. A region pixel adds 1 / (|r| * n_regions) to PRO once passed, a normal pixel
1 / n_normal to FPR.

Letters: N images, H x W map size, D defect pixels, S distinct normal scores above the limit.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from lineguard.metrics.image import MetricError, descending_steps
from lineguard.metrics.pixel import check_masks_maps, flat_pixels

_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def aupro(masks, maps, *, fpr_limit: float = 0.3) -> float:
    """masks (N, H, W) 0/1 (or a sequence with None for defect-free images), maps (N, H, W) -> AUPRO in [0, 1].

    Unlike pixel AUROC, every defect region weighs the same however large it is, so small defects count.
    """
    if not 0 < fpr_limit <= 1:
        raise MetricError(f"fpr_limit must be in (0, 1], got {fpr_limit}")
    masks, maps = check_masks_maps(masks, maps)
    defect_scores, defect_weights = _region_pixels(masks, maps)  # (D,), (D,) summing to 1
    normal = flat_pixels(maps)[~flat_pixels(masks)]  # (N * H * W - D,)
    if normal.size == 0:
        raise MetricError("masks mark every pixel as defective: the false positive rate needs normal pixels")
    normal.sort()
    # Thresholds below the first one whose FPR reaches the limit do not matter; one extra pixel
    # guards the ceiling against rounding.
    n_limit = min(normal.size, math.ceil(fpr_limit * normal.size) + 1)
    v_limit = normal[normal.size - n_limit]
    top = normal[np.searchsorted(normal, v_limit, side="left") :]  # (>= n_limit,) sorted
    kept = defect_scores >= v_limit
    defect_scores, defect_weights = defect_scores[kept], defect_weights[kept]
    order = np.argsort(defect_scores)
    _, n_passed, pro_at, pro_above = descending_steps(top, defect_scores[order], defect_weights[order])
    return _area_to_limit(n_passed / normal.size, pro_above, pro_at, fpr_limit) / fpr_limit


def _region_pixels(masks, maps) -> tuple[np.ndarray, np.ndarray]:
    """Scores of all defect pixels and their PRO weights 1 / (|region| * n_regions), in ``maps[masks]`` order
    (masks and maps (N, H, W), or lists of (H_i, W_i))."""
    scores, weights = [], []
    n_regions = 0
    for mask, values in zip(masks, maps, strict=True):
        if not mask.any():
            continue
        regions, count = ndimage.label(mask, structure=_EIGHT_CONNECTED)  # (H, W) 0 = normal
        sizes = np.bincount(regions.ravel())
        scores.append(values[mask])
        weights.append(1.0 / sizes[regions[mask]])
        n_regions += count
    if n_regions == 0:
        raise MetricError("masks contain no defect pixel: AUPRO needs at least one defect region")
    return np.concatenate(scores), np.concatenate(weights) / n_regions


def _area_to_limit(fpr: np.ndarray, pro_start: np.ndarray, pro_end: np.ndarray, limit: float) -> float:
    """Trapezoid area of the PRO curve from FPR 0 to ``limit``.

    Step i (thresholds descending) goes from (fpr[i-1], pro_start[i]) to (fpr[i], pro_end[i]), with
    fpr[-1] = 0; between steps the curve rises at constant FPR, which adds no area. ``fpr`` reaches
    ``limit`` at some step.
    """
    fpr_start = np.concatenate(([0.0], fpr[:-1]))
    cut = int(np.argmax(fpr >= limit))  # the step that crosses the limit
    widths = fpr[:cut] - fpr_start[:cut]
    area = float(np.dot(widths, (pro_start[:cut] + pro_end[:cut]) / 2))
    width = limit - fpr_start[cut]
    pro_limit = pro_start[cut] + (pro_end[cut] - pro_start[cut]) * width / (fpr[cut] - fpr_start[cut])
    return area + width * (pro_start[cut] + pro_limit) / 2
