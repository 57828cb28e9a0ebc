"""Reports from what a run produced: a results folder written by ``predict``, or an evaluation in memory.

A results folder keeps the thresholds its decisions were made with (``io.store``), so the report draws the same
decisions and regions later, without the model; both kinds go through the one pipeline's ``decide``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from lineguard.inspect import Finding, as_array, decide
from lineguard.io.images import ImageError, read_image_array, resize_array
from lineguard.io.store import ResultStore, load_thresholds
from lineguard.report.html import THUMBNAIL, ReportItem, write_report
from lineguard.report.overlay import to_uint8
from lineguard.scoring.threshold import Thresholds


def _picture(path: str | Path, size: tuple[int, int]) -> np.ndarray:
    """The input at the report's (h, w), resized without PyTorch (a report of an export's results needs none);
    mid grey when the file is gone or unreadable since it was scored."""
    try:
        return to_uint8(resize_array(read_image_array(path), size))
    except ImageError:
        return np.full((*size, 3), 128, dtype=np.uint8)


def report_size(shape: tuple[int, ...]) -> tuple[int, int]:
    """(H, W) of a map -> the (h, w) its pictures are drawn at: the longest side at most :data:`THUMBNAIL`
    (the page shows them smaller still), the aspect kept. An 8000 × 2000 tiled map drawn at full size cost
    650 MB for one image; a report holds every image's pictures at once."""
    height, width = shape[-2:]
    scale = min(1.0, THUMBNAIL / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def _shrink(values: np.ndarray | None, size: tuple[int, int]) -> np.ndarray | None:
    """A map averaged over areas, or a mask that keeps any pixel it covers, at ``size`` (itself if it fits)."""
    if values is None or values.shape == size:
        return values
    if values.dtype == bool:
        box = Image.fromarray(values.astype(np.uint8) * 255).resize(size[::-1], Image.Resampling.BOX)
        return np.asarray(box) > 0
    return np.asarray(Image.fromarray(values.astype(np.float32)).resize(size[::-1], Image.Resampling.BOX))


def _small(finding: Finding, mask: np.ndarray | None) -> tuple[Finding, np.ndarray | None]:
    """A finding and its ground truth at the report's size (decisions and regions are kept as made)."""
    size = report_size(finding.map.shape)
    return (replace(finding, map=_shrink(finding.map, size), normalized_map=_shrink(finding.normalized_map, size),
                    mask=_shrink(finding.mask, size)), _shrink(mask, size))


def _items(paths: list[str | Path], findings: Iterable[Finding], labels: list[str | None],
           masks: list[np.ndarray | None]) -> list[ReportItem]:
    """Report items at the report's size, one finding at full size at a time; the inputs are read again in
    parallel (decoding releases the interpreter lock)."""
    small = [_small(f, mask) for f, mask in zip(findings, masks, strict=True)]
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        pictures = list(pool.map(_picture, paths, [f.map.shape for f, _ in small]))
    return [ReportItem(Path(path).name, picture, f.map if f.normalized_map is None else f.normalized_map, f.score,
                       label=label, mask=mask, finding=f if f.decision is not None else None)
            for path, picture, (f, mask), label in zip(paths, pictures, small, labels, strict=True)]


def store_report(store: ResultStore, *, title: str, labels: dict[str, str] | None = None,
                 folder: Path | None = None) -> Path:
    """The report of a results folder (into ``folder``, default ``<results>/report``). ``labels`` maps image
    paths to "good" or a defect type, for the charts and metrics of labelled data."""
    thresholds = load_thresholds(store.folder)
    rows = store.rows
    findings = (decide(np.array([row["score"]], dtype=np.float32), store.load_map(row)[None], thresholds)[0]
                for row in rows)  # one at a time: each is brought to the report's size before the next
    items = _items([row["path"] for row in rows], findings, [(labels or {}).get(row["path"]) for row in rows],
                   [None] * len(rows))
    return write_report(folder or store.folder / "report", items, title=title,
                        calibration=thresholds.calibration if thresholds else None)


def evaluation_report(folder: Path, result, *, title: str, thresholds: Thresholds | None) -> Path:
    """The report of an evaluation (``evaluation.EvaluationResult``): labelled test images with their
    ground-truth outlines and the metrics."""
    findings = decide(result.prediction.scores, result.prediction.maps, thresholds)
    items = _items([s.path for s in result.samples], findings, [s.defect for s in result.samples],
                   [as_array(mask) for mask in result.masks])
    return write_report(folder, items, title=title, metrics=result.metrics,
                        calibration=thresholds.calibration if thresholds else None)
