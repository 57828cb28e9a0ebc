"""Evaluation metrics: pure functions on numpy arrays or torch tensors, exact, with named input checks.

    evaluate(labels, scores, masks, maps)  # -> {"image_auroc": ..., "pixel_auroc": ..., "aupro": ...}

Image level: ``image_auroc``, ``image_ap``, ``f1_max``; pixel level: ``pixel_auroc``, ``pixel_ap``,
``aupro``. Bad input raises :class:`MetricError`.
"""

from __future__ import annotations

from lineguard.metrics.image import MetricError, f1_max, image_ap, image_auroc, image_ranking, roc_curve
from lineguard.metrics.pixel import check_masks_maps, pixel_ap, pixel_auroc, pixel_ranking
from lineguard.metrics.pro import aupro

__all__ = ["MetricError", "aupro", "evaluate", "f1_max", "image_ap", "image_auroc", "pixel_ap", "pixel_auroc",
           "roc_curve"]


def evaluate(labels, scores, masks=None, maps=None) -> dict[str, float]:
    """labels (N,) 0/1, scores (N,), optionally masks and maps (N, H, W) -> every metric by name. Maps of
    images of different sizes: a list of (H_i, W_i) maps and a sequence of masks of the same sizes.

    ``masks`` may be a length-N sequence with None for images without a ground-truth mask (good
    images); the pixel metrics are computed only when both masks and maps are given.
    """
    ranking = image_ranking(labels, scores)
    results = {
        "image_auroc": ranking.auroc(),
        "image_ap": ranking.average_precision(),
        "image_f1_max": ranking.f1_max()[0],
    }
    if masks is None:
        return results
    if maps is None:
        raise MetricError("masks were given without maps: pixel metrics need both")
    masks, maps = check_masks_maps(masks, maps)
    n_images = ranking.n_positive + ranking.n_negative
    if len(maps) != n_images:
        raise MetricError(f"got {len(maps)} maps for {n_images} labels")
    pixels = pixel_ranking(masks, maps)
    results["pixel_auroc"] = pixels.auroc()
    results["pixel_ap"] = pixels.average_precision()
    results["aupro"] = aupro(masks, maps)
    return results
