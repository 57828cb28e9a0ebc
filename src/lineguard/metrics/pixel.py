"""Pixel-level AUROC and AP: the image-level ranking metrics over every pixel of every map.

Letters: N images, H x W map size. Masks must already have the maps' size: resizing (nearest, so
they stay binary) is the caller's choice, not something a metric should guess.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lineguard.metrics.image import (
    MetricError,
    Ranking,
    check_binary,
    check_same_shape,
    check_scores,
)

_RESIZE_HINT = "resize the masks to the maps' size (nearest neighbour) before evaluating"


def check_masks_maps(masks, maps) -> tuple[np.ndarray | list[np.ndarray], np.ndarray | list[np.ndarray]]:
    """masks (N, H, W) 0/1, or a length-N sequence of (H, W) masks and None (= no defect pixel);
    maps (N, H, W) real -> (masks as bool, maps). Maps of images of different sizes come as a list of (H_i, W_i)
    maps, masks as a sequence: both are returned as lists."""
    if isinstance(maps, list | tuple):
        return _check_each(masks, maps)
    maps = check_scores(maps, "maps")
    if maps.ndim != 3:
        raise MetricError(f"maps must be (N, H, W), got shape {tuple(maps.shape)}")
    if isinstance(masks, Sequence):
        if len(masks) != len(maps):
            raise MetricError(f"got {len(masks)} masks for {len(maps)} maps")
        masks = np.stack([_one_mask(mask, index, maps.shape[1:]) for index, mask in enumerate(masks)])
    else:
        masks = check_binary(masks, "masks")
    check_same_shape(masks, maps, "masks", "maps", _RESIZE_HINT)
    return masks, maps


def _check_each(masks, maps: Sequence) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """A list of (H_i, W_i) maps and a sequence of masks of their sizes (or None) -> bool masks, maps."""
    maps = [check_scores(values, f"maps[{index}]") for index, values in enumerate(maps)]
    flat = [index for index, values in enumerate(maps) if values.ndim != 2]
    if flat:
        raise MetricError(f"maps[{flat[0]}] must be (H, W), got shape {tuple(maps[flat[0]].shape)}")
    if len(masks) != len(maps):
        raise MetricError(f"got {len(masks)} masks for {len(maps)} maps")
    return [_one_mask(mask, index, values.shape) for index, (mask, values) in enumerate(zip(masks, maps,
                                                                                          strict=True))], maps


def flat_pixels(values: np.ndarray | list[np.ndarray]) -> np.ndarray:
    """(N, H, W), or a list of (H_i, W_i) -> every pixel in one (P,) array."""
    if isinstance(values, np.ndarray):
        return values.reshape(-1)
    return np.concatenate([v.reshape(-1) for v in values])


def _one_mask(mask, index: int, size: tuple[int, int]) -> np.ndarray:
    """(H, W) 0/1 or None -> (H, W) bool; None marks an image known to be defect-free."""
    if mask is None:
        return np.zeros(size, dtype=bool)
    mask = check_binary(mask, f"masks[{index}]")
    if mask.shape != size:
        raise MetricError(f"masks[{index}] shape {tuple(mask.shape)} does not match map size {size}; {_RESIZE_HINT}")
    return mask


def pixel_ranking(masks, maps) -> Ranking:
    """Checked masks and maps -> one ranking of all pixels, shared by pixel AUROC and AP."""
    masks, maps = check_masks_maps(masks, maps)
    return Ranking.of(flat_pixels(masks), flat_pixels(maps), "masks")


def pixel_auroc(masks, maps) -> float:
    """masks (N, H, W) 0/1, maps (N, H, W) -> AUROC over all pixels (dominated by the many easy normal ones)."""
    return pixel_ranking(masks, maps).auroc()


def pixel_ap(masks, maps) -> float:
    """masks (N, H, W) 0/1, maps (N, H, W) -> average precision over all pixels."""
    return pixel_ranking(masks, maps).average_precision()
