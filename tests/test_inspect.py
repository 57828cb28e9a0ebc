"""The inspection pipeline: decisions and rows from raw scores and maps, with or without PyTorch."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass

import numpy as np

from lineguard.inspect import decide, inspect
from lineguard.scoring.threshold import Thresholds
from tests.scoring.test_regions import hand_drawn

THRESHOLDS = Thresholds(image_threshold=3.0, pixel_threshold=1.0)  # centres 0: normalised = score / 3, map / 1


def test_findings_decide_at_one_and_rows_scale_boxes_to_the_image():
    values = hand_drawn()  # a 6 × 8 map, already on the normalised scale of pixel threshold 1
    findings = decide(np.array([3.0, 2.997]), np.stack([values, np.zeros_like(values)]), THRESHOLDS)
    assert [f.decision for f in findings] == ["defect", "ok"]
    row = findings[0].row("a.png", "knn", (12, 16))
    assert row["path"] == "a.png" and row["decision"] == "defect" and row["normalized_score"] == 1.0
    assert len(row["regions"]) == 3
    assert row["regions"][0] == {"x0": 14, "y0": 0, "x1": 16, "y1": 2, "area": 4, "peak": 3.0}
    assert findings[1].regions == [] and not findings[1].mask.any()
    undecided = decide(np.array([3.0]), values[None], None)[0]
    assert undecided.decision is None and undecided.row("a.png", "knn", (12, 16)) == {
        "path": "a.png", "score": 3.0, "method": "knn"}


@dataclass
class ArrayScorer:
    """What an exported model looks like to the pipeline: numpy in, numpy out, no torch."""

    name = "exported"
    uses_normal_images = True
    array_input = True
    image_size = 6
    thresholds = THRESHOLDS

    def predict(self, images):
        maps = np.asarray(images).mean(axis=1) * 4  # (N, S, S)
        return type("Prediction", (), {"scores": maps.reshape(len(maps), -1).max(1), "maps": maps})


def test_a_scorer_of_numpy_arrays_goes_through_the_same_pipeline_as_a_detector():
    import torch

    images = np.random.default_rng(0).uniform(0, 1, (3, 3, 6, 6)).astype(np.float32)
    from_arrays = inspect(ArrayScorer(), images)
    prediction = ArrayScorer().predict(images)
    from_tensors = decide(torch.from_numpy(prediction.scores), torch.from_numpy(prediction.maps), THRESHOLDS)
    assert [f.row("x", "m", (6, 6)) for f in from_arrays] == [f.row("x", "m", (6, 6)) for f in from_tensors]


def test_the_pipeline_imports_no_torch():
    code = ("import sys, lineguard.inspect, lineguard.io.store, lineguard.report.html, lineguard.report.overlay; "
            "print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "False", done.stderr
