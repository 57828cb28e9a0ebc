"""What "the export gives the same answers" means, checked the same way wherever it is tested: scores and maps
within 1e-4 of the PyTorch model's (max absolute difference / the model's range), the same ok/defect decisions
and the same regions at the model's thresholds.

Two float implementations of the same map can put a pixel that lies within rounding of the threshold on either
side of it (a pixel at 1.1 × 10⁻⁶ of the threshold did, on the contract test's PatchCore). Such pixels are allowed
to differ, and only they: every pixel in one defect mask and not the other must lie within the tolerance of the
threshold, and the regions must then be the same in number, with boxes within one pixel and areas within the
count of those pixels."""

from __future__ import annotations

import numpy as np

from lineguard.inspect import decide
from lineguard.scoring.threshold import NORMALIZED_THRESHOLD, Thresholds

TOLERANCE = 1e-4


def relative_difference(got: np.ndarray, expected: np.ndarray) -> float:
    """max |got − expected| / (max − min of expected)."""
    expected = np.asarray(expected, dtype=np.float64)
    return float(np.abs(np.asarray(got, dtype=np.float64) - expected).max() / (expected.max() - expected.min()))


def assert_same_answers(got_scores, got_maps, scores, maps, thresholds: Thresholds, what: str) -> None:
    """The export's (N,), (N, S, S) against the model's, all as numpy arrays."""
    assert got_scores.shape == scores.shape and got_maps.shape == maps.shape, what
    assert relative_difference(got_scores, scores) <= TOLERANCE, f"{what}: scores differ"
    assert relative_difference(got_maps, maps) <= TOLERANCE, f"{what}: maps differ"
    expected, found = decide(scores, maps, thresholds), decide(got_scores, got_maps, thresholds)
    assert [f.decision for f in found] == [f.decision for f in expected], f"{what}: decisions differ"
    normalized = thresholds.normalize_maps(maps)
    margin = TOLERANCE * float(normalized.max() - normalized.min())
    for i, (mine, theirs) in enumerate(zip(found, expected, strict=True)):
        flipped = mine.mask != theirs.mask
        assert (np.abs(normalized[i][flipped] - NORMALIZED_THRESHOLD) <= margin).all(), \
            f"{what}: image {i}: mask pixels differ away from the threshold"
        boxes = [(r.x0, r.y0, r.x1, r.y1, r.area) for r in mine.regions]
        reference = [(r.x0, r.y0, r.x1, r.y1, r.area) for r in theirs.regions]
        if not flipped.any():
            assert boxes == reference, f"{what}: image {i}: regions differ"
            continue
        assert len(boxes) == len(reference), f"{what}: image {i}: region count differs"
        for box, other in zip(boxes, reference, strict=True):
            assert max(abs(a - b) for a, b in zip(box[:4], other[:4], strict=True)) <= 1, f"{what}: image {i}: box"
            assert abs(box[4] - other[4]) <= flipped.sum(), f"{what}: image {i}: area"
