"""MuSc's metric protocol, so a zero-data row can be set beside the MuSc anchor's figures like for like.

lineguard's own metrics (``lineguard.metrics``) are exact: masks resized with antialiasing and kept where
they cover at least half a pixel, AUPRO integrated over every threshold. The MuSc anchor's figures come from
MuSc's ``compute_metrics``, which differs in two ways, each moving AUPRO by up to about 0.01:

* masks are resized bilinearly and a pixel counts as defective only where the resized mask is still fully
  on, so every defect loses its rim;
* AUPRO is sampled at 200 evenly spaced thresholds between the maps' minimum and maximum; the points with
  FPR < 0.3 are kept, their FPRs rescaled to [0, 1] by their own minimum and maximum, and the trapezoid area
  under PRO is taken.

(anomalib's AUPRO on lineguard's maps equals lineguard's to 1e-6 — bottle PatchCore, 0.934989 both — so the
anomalib anchor needs no such twin.) Written from that description; regions are 8-connected, as
``skimage.measure.label`` makes them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image
from scipy import ndimage
from sklearn.metrics import auc, roc_auc_score

from lineguard.io.datasets import Sample
from lineguard.io.images import read_mask


def musc_masks(samples: Sequence[Sample], size: int, threshold: int) -> np.ndarray:
    """(N, size, size) int masks as MuSc's loader makes them: binarised, bilinear resize, fully-on pixels only."""
    masks = np.zeros((len(samples), size, size), dtype=np.int32)
    for i, sample in enumerate(samples):
        if sample.mask_path is not None:
            full = read_mask(sample.mask_path, threshold=threshold).numpy().astype(np.uint8) * 255
            masks[i] = np.asarray(Image.fromarray(full).resize((size, size), Image.BILINEAR)) == 255
    return masks


def sampled_aupro(masks: np.ndarray, maps: np.ndarray, steps: int = 200, fpr_limit: float = 0.3) -> float:
    """MuSc's AUPRO: (N, H, W) 0/1 masks and maps -> area under PRO over the FPR-rescaled sampled points."""
    regions = np.zeros(masks.shape, dtype=np.int64)
    count = 0
    for i, mask in enumerate(masks):
        labels, found = ndimage.label(mask, structure=np.ones((3, 3)))
        regions[i] = np.where(labels > 0, labels + count, 0)
        count += found
    area = np.bincount(regions.ravel(), minlength=count + 1)[1:]
    normal = masks == 0
    low, high = float(maps.min()), float(maps.max())
    pros, fprs = [], []
    for threshold in np.arange(low, high, (high - low) / steps):
        flagged = maps > threshold
        pros.append((np.bincount(regions[flagged], minlength=count + 1)[1:] / area).mean())
        fprs.append((normal & flagged).sum() / normal.sum())
    pros, fprs = np.array(pros), np.array(fprs)
    kept = fprs < fpr_limit
    scaled = (fprs[kept] - fprs[kept].min()) / (fprs[kept].max() - fprs[kept].min())
    return float(auc(scaled, pros[kept]))


def musc_pixel_metrics(samples: Sequence[Sample], maps: np.ndarray, threshold: int) -> dict[str, float]:
    """Pixel AUROC and AUPRO of (N, S, S) ``maps`` under MuSc's protocol."""
    masks = musc_masks(samples, maps.shape[-1], threshold)
    maps = np.asarray(maps, dtype=np.float64)
    return {"musc_pixel_auroc": float(roc_auc_score(masks.ravel(), maps.ravel())),
            "musc_aupro": sampled_aupro(masks, maps)}
