"""What "the export gives the same answers" means, checked the same way wherever it is tested: scores and maps
within 1e-4 of the PyTorch model's (max absolute difference / the model's range), the same ok/defect decisions
and the same regions (boxes, areas) at the model's thresholds."""

from __future__ import annotations

import numpy as np

from lineguard.scoring.regions import find
from lineguard.scoring.threshold import Thresholds

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
    expected = find(scores, thresholds.normalize_scores(scores), thresholds.normalize_maps(maps))
    found = find(got_scores, thresholds.normalize_scores(got_scores), thresholds.normalize_maps(got_maps))
    assert [f.decision for f in found] == [f.decision for f in expected], f"{what}: decisions differ"
    boxes = [[(r.x0, r.y0, r.x1, r.y1, r.area) for r in f.regions] for f in expected]
    assert [[(r.x0, r.y0, r.x1, r.y1, r.area) for r in f.regions] for f in found] == boxes, f"{what}: regions"
