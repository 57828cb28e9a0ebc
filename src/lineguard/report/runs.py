"""Reports from what a run produced: a results folder written by ``predict``, or an evaluation in memory.

A results folder keeps the thresholds its decisions were made with (``io.store``), so the report draws the same
decisions and regions later, without the model; both kinds go through the one pipeline's ``decide``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lineguard.inspect import Finding, as_array, decide
from lineguard.io.images import ImageError, read_image, resize
from lineguard.io.store import ResultStore, load_thresholds
from lineguard.report.html import ReportItem, write_report
from lineguard.report.overlay import to_uint8
from lineguard.scoring.threshold import Thresholds


def _picture(path: str | Path, size: tuple[int, int]) -> np.ndarray:
    """The input at the map's (H, W); mid grey when the file is gone or unreadable since it was scored."""
    try:
        return to_uint8(resize(read_image(path), size))
    except ImageError:
        return np.full((*size, 3), 128, dtype=np.uint8)


def _item(path: str | Path, finding: Finding, label: str | None = None, mask: np.ndarray | None = None
          ) -> ReportItem:
    shown = finding.map if finding.normalized_map is None else finding.normalized_map
    return ReportItem(Path(path).name, _picture(path, finding.map.shape), shown, finding.score, label=label,
                      mask=mask, finding=finding if finding.decision is not None else None)


def store_report(store: ResultStore, *, title: str, labels: dict[str, str] | None = None,
                 folder: Path | None = None) -> Path:
    """The report of a results folder (into ``folder``, default ``<results>/report``). ``labels`` maps image
    paths to "good" or a defect type, for the charts and metrics of labelled data."""
    thresholds = load_thresholds(store.folder)
    items = []
    for row in store.rows:
        (finding,) = decide(np.array([row["score"]], dtype=np.float32), store.load_map(row)[None], thresholds)
        items.append(_item(row["path"], finding, label=(labels or {}).get(row["path"])))
    return write_report(folder or store.folder / "report", items, title=title,
                        calibration=thresholds.calibration if thresholds else None)


def evaluation_report(folder: Path, result, *, title: str, thresholds: Thresholds | None) -> Path:
    """The report of an evaluation (``evaluation.EvaluationResult``): labelled test images with their
    ground-truth outlines and the metrics."""
    findings = decide(result.prediction.scores, result.prediction.maps, thresholds)
    items = [_item(s.path, finding, label=s.defect, mask=as_array(mask))
             for s, finding, mask in zip(result.samples, findings, result.masks, strict=True)]
    return write_report(folder, items, title=title, metrics=result.metrics,
                        calibration=thresholds.calibration if thresholds else None)
