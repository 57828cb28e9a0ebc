"""Defect masks and bounding boxes on hand-drawn maps."""

from __future__ import annotations

import numpy as np
import pytest

from lineguard.scoring.regions import Region, defect_mask, find_regions


def hand_drawn() -> np.ndarray:
    """A 6 x 8 normalised map with three blobs: an L (rows 0-2, cols 1-2), a diagonal pair, one pixel."""
    values = np.zeros((6, 8))
    values[0:3, 1] = 1.5
    values[2, 2] = 1.0  # exactly at the threshold: inside
    values[4, 5], values[5, 6] = 2.0, 1.2  # diagonal neighbours join (8-connectivity)
    values[0, 7] = 3.0
    values[3, 3] = 0.99  # just below: outside
    return values


def test_mask_is_at_or_above_threshold():
    mask = defect_mask(hand_drawn())
    assert mask.sum() == 7 and mask[2, 2] and not mask[3, 3]


def test_regions_boxes_areas_peaks():
    values = hand_drawn()
    regions = find_regions(defect_mask(values), values)
    assert regions == [Region(x0=7, y0=0, x1=8, y1=1, area=1, peak=3.0),
                       Region(x0=5, y0=4, x1=7, y1=6, area=2, peak=2.0),
                       Region(x0=1, y0=0, x1=3, y1=3, area=4, peak=1.5)]
    assert find_regions(np.zeros((3, 3), bool), np.zeros((3, 3))) == []
    with pytest.raises(ValueError, match="same"):
        find_regions(np.zeros((3, 3), bool), np.zeros((3, 4)))


def test_scaled_box_covers_the_region_in_the_original_image():
    region = Region(x0=1, y0=0, x1=3, y1=3, area=4, peak=1.5)
    # map 6 x 8 -> image 15 x 20: x scale 2.5, y scale 2.5
    assert region.scaled((6, 8), (15, 20)) == Region(x0=2, y0=0, x1=8, y1=8, area=25, peak=1.5)
    assert Region(x0=7, y0=5, x1=8, y1=6, area=1, peak=1).scaled((6, 8), (15, 20)).x1 == 20
