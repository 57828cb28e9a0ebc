"""Reports from what a run produced: a results folder written by ``predict``, or an evaluation in memory.

A results folder keeps the thresholds its decisions were made with (``thresholds.json``), so the report
draws the same decisions and regions later, without the model.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from lineguard.errors import LineguardError
from lineguard.evaluation import EvaluationResult
from lineguard.io.images import ImageError, read_image, resize
from lineguard.io.store import ResultStore
from lineguard.report.html import ReportItem, write_report
from lineguard.scoring.regions import Finding, find
from lineguard.scoring.threshold import Thresholds

THRESHOLDS_FILE = "thresholds.json"


class OtherThresholdsError(LineguardError, ValueError):
    """A results folder already holds decisions made with other thresholds (or a damaged thresholds file)."""


def save_thresholds(folder: Path, thresholds: Thresholds) -> None:
    """Record the thresholds of a results folder; refuse to mix decisions made with different ones."""
    path = Path(folder) / THRESHOLDS_FILE
    existing = load_thresholds(folder)
    if existing is not None and existing != thresholds:
        raise OtherThresholdsError(f"{folder} holds results decided with other thresholds ({path}): use a new "
                                   "--out folder for a recalibrated model")
    path.write_text(json.dumps(asdict(thresholds), indent=2))


def load_thresholds(folder: Path) -> Thresholds | None:
    path = Path(folder) / THRESHOLDS_FILE
    if not path.is_file():
        return None
    try:
        return Thresholds(**json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, TypeError) as exc:  # bad JSON, keys or values
        raise OtherThresholdsError(f"{path}: not a thresholds file ({exc}): move it away or use another "
                                   "--out folder") from None


def findings(scores: Tensor, maps: Tensor, thresholds: Thresholds | None) -> list[Finding] | list[None]:
    """scores (N,), raw maps (N, H, W) -> decision and regions per image (None each when uncalibrated)."""
    if thresholds is None:
        return [None] * len(scores)
    normalized_scores, normalized_maps = thresholds.normalize_scores(scores), thresholds.normalize_maps(maps)
    return find(scores.numpy(), normalized_scores.numpy(), normalized_maps.numpy())


def to_uint8(image: Tensor) -> np.ndarray:
    """(3, H, W) float tensor in [0, 1] -> (H, W, 3) uint8."""
    return (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def _picture(path: str | Path, size: tuple[int, int]) -> np.ndarray:
    """The input at the map's (H, W); mid grey when the file is gone or unreadable since it was scored."""
    try:
        return to_uint8(resize(read_image(path), size))
    except ImageError:
        return np.full((*size, 3), 128, dtype=np.uint8)


def _item(name: str, image: np.ndarray, raw_map: Tensor, score: float, finding: Finding | None,
          thresholds: Thresholds | None, label: str | None = None, mask: np.ndarray | None = None
          ) -> ReportItem:
    shown = raw_map if thresholds is None else thresholds.normalize_maps(raw_map)
    return ReportItem(name, image, shown.numpy(), score, label=label, mask=mask, finding=finding)


def store_report(store: ResultStore, *, title: str, labels: dict[str, str] | None = None,
                 folder: Path | None = None) -> Path:
    """The report of a results folder (into ``folder``, default ``<results>/report``). ``labels`` maps image
    paths to "good" or a defect type, for the charts and metrics of labelled data."""
    thresholds = load_thresholds(store.folder)
    items = []
    for row in store.rows:
        raw_map = torch.from_numpy(store.load_map(row))  # (H, W)
        (finding,) = findings(torch.tensor([row["score"]]), raw_map[None], thresholds)
        items.append(_item(Path(row["path"]).name, _picture(row["path"], tuple(raw_map.shape)), raw_map,
                           row["score"], finding, thresholds, label=(labels or {}).get(row["path"])))
    return write_report(folder or store.folder / "report", items, title=title,
                        calibration=thresholds.calibration if thresholds else None)


def evaluation_report(folder: Path, result: EvaluationResult, *, title: str,
                      thresholds: Thresholds | None) -> Path:
    """The report of an evaluation: labelled test images with their ground-truth outlines and the metrics."""
    scores, maps = result.prediction.scores, result.prediction.maps
    size = tuple(maps.shape[-2:])
    items = [_item(s.path.name, _picture(s.path, size), m, float(score), finding, thresholds, label=s.defect,
                   mask=mask.numpy())
             for s, m, score, mask, finding in zip(result.samples, maps, scores, result.masks,
                                                   findings(scores, maps, thresholds), strict=True)]
    return write_report(folder, items, title=title, metrics=result.metrics,
                        calibration=thresholds.calibration if thresholds else None)
