"""The one inspection pipeline: a scorer and images in, findings out — behind ``predict``, the service, ``watch``
and the reports.

    images (N, 3, S, S) → scorer.predict → raw scores (N,) and maps (N, S, S)
        → normalised with the thresholds (typical good part 0, threshold 1.0) → decision, defect mask, regions
        → one row per image: what the results folder, the service and the report say of it

The scorer is anything with the shape of :class:`Scorer`: a fitted :class:`lineguard.Detector`, or an exported
model run without PyTorch (``lineguard.export``). This module works on numpy arrays and imports no PyTorch, so
both go through it alike; reading files (:func:`inspect_files`) loads the image readers on first use.

Letters: N images, S the scorer's working size, H × W an image's own size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from lineguard.scoring.regions import Region, defect_mask, find_regions
from lineguard.scoring.threshold import NORMALIZED_THRESHOLD, CalibrationError, Thresholds, calibrate

#: A batch scored against itself decides from its own median and spread: not from fewer images than this.
MIN_BATCH_FOR_DECISIONS = 8


class Scorer(Protocol):
    """What the pipeline needs of a model."""

    name: str  # the method, as rows name it
    uses_normal_images: bool  # False: ``predict`` scores the batch handed to it against itself
    image_size: int | None  # images are resized to S × S, maps come at it; None: at their own size (tiled)
    array_input: bool  # True: ``predict`` takes numpy arrays (an export: files are read without PyTorch)

    @property
    def thresholds(self) -> Thresholds | None:
        """The calibrated thresholds, or None: scores only."""

    def predict(self, images: Any) -> Any:
        """(N, 3, S, S) floats in [0, 1] (or an iterable of such batches; tensors, or arrays with
        ``array_input``) -> ``.scores`` (N,), ``.maps`` (N, S, S), tensors or arrays."""


@dataclass
class Finding:
    """What the line learns about one image: its raw score and map and, with thresholds, the decision and
    where the defect is (at the map's resolution; :meth:`summary` scales the boxes to the image)."""

    score: float  # raw, in the scorer's units
    map: np.ndarray  # (S, S) raw anomaly map
    normalized_score: float | None = None  # 1.0 = the image threshold
    normalized_map: np.ndarray | None = None  # (S, S), 1.0 = the pixel threshold
    mask: np.ndarray | None = None  # (S, S) bool: the defect regions
    regions: list[Region] = field(default_factory=list)
    decision: str | None = None  # "defect", "ok", or None: not decided

    def summary(self, image_size: tuple[int, int]) -> dict[str, Any]:
        """Score, and when decided the normalised score, decision and boxes in the (H, W) image's pixels."""
        summary: dict[str, Any] = {"score": self.score}
        if self.normalized_score is not None:
            summary["normalized_score"] = self.normalized_score
        if self.decision is not None:
            summary["decision"] = self.decision
        if self.mask is not None:
            summary["regions"] = [r.scaled(self.mask.shape, image_size).to_dict() for r in self.regions]
        return summary

    def row(self, path: str, method: str, image_size: tuple[int, int]) -> dict[str, Any]:
        """The results row of the image at ``path`` (``io.store`` adds its map and mask files)."""
        return {"path": path, "score": self.score, "method": method, **self.summary(image_size)}


def as_array(values: Any) -> np.ndarray:
    """A tensor (on any device) or array -> numpy array, without a copy where possible."""
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    return np.asarray(values)


def as_maps(maps: Any) -> np.ndarray | list[np.ndarray]:
    """(N, S, S) maps as one array, or a list of maps of different sizes (a tiled scorer's) as arrays."""
    return [as_array(m) for m in maps] if isinstance(maps, list | tuple) else as_array(maps)


def decide(scores: Any, maps: Any, thresholds: Thresholds | None) -> list[Finding]:
    """Raw scores (N,) and maps (N, S, S), or a list of (H, W) maps, -> one :class:`Finding` each; decided when
    there are thresholds."""
    scores, maps = as_array(scores), as_maps(maps)
    if thresholds is None:
        return [Finding(float(score), values) for score, values in zip(scores, maps, strict=True)]
    findings = []
    normalized_scores = thresholds.normalize_scores(scores)
    normalized_maps = [thresholds.normalize_maps(values) for values in maps]
    for score, values, normalized, normalized_map in zip(scores, maps, normalized_scores, normalized_maps,
                                                         strict=True):
        mask = defect_mask(normalized_map)
        findings.append(Finding(float(score), values, float(normalized), normalized_map, mask,
                                find_regions(mask, normalized_map),
                                "defect" if normalized >= NORMALIZED_THRESHOLD else "ok"))
    return findings


def inspect(scorer: Scorer, images: Any, thresholds: Thresholds | None = None) -> list[Finding]:
    """Score ``images`` (N, 3, S, S) and decide with ``thresholds`` (default: the scorer's own)."""
    prediction = scorer.predict(images)
    return decide(prediction.scores, prediction.maps, scorer.thresholds if thresholds is None else thresholds)


def batch_thresholds(scores: Any, maps: Any, mad_factor: float) -> Thresholds:
    """Thresholds for a batch scored against itself, from the batch: median + ``mad_factor`` robust sd of its
    image scores and map maxima (rule ``mad``), since defects are rare in a batch from a line. CalibrationError
    when the scores do not spread; the caller checks :data:`MIN_BATCH_FOR_DECISIONS` first."""
    thresholds = calibrate(scores, maps, rule="mad", mad_factor=mad_factor)
    return replace(thresholds, calibration=f"{thresholds.calibration} of this batch (defects assumed rare)")


def own_thresholds(scores: Any, maps: Any, mad_factor: float) -> tuple[Thresholds | None, str | None]:
    """A batch's own thresholds (:func:`batch_thresholds`), or None and why not: too few images to estimate a
    spread (:data:`MIN_BATCH_FOR_DECISIONS`), or scores that do not spread."""
    if len(scores) < MIN_BATCH_FOR_DECISIONS:
        return None, (f"{len(scores)} images: too few to decide from the batch itself (at least "
                      f"{MIN_BATCH_FOR_DECISIONS}); results get scores only")
    try:
        return batch_thresholds(scores, maps, mad_factor), None
    except CalibrationError as error:
        return None, f"no decisions: {error}"


@dataclass
class FileInspection:
    """Inspect image files: decoded (in parallel, ``io.batches``), scored, decided, one image at a time.

    A fitted scorer works through ``chunk`` files at a time, so that findings come out while later files are
    still read; a test-batch scorer scores all of them together. ``thresholds`` gives the thresholds of a chunk
    from its scores and maps (default: the scorer's own). Unreadable files are skipped and kept in ``failed``.
    """

    scorer: Scorer
    paths: Sequence[Path]
    batch_size: int = 16
    chunk: int = 64
    thresholds: Callable[[np.ndarray, np.ndarray], Thresholds | None] | None = None
    failed: list[tuple[Path, str]] = field(default_factory=list)

    def __iter__(self) -> Iterator[tuple[Path, Finding]]:
        from lineguard.io.batches import ImageBatches

        step = self.chunk if self.scorer.uses_normal_images else max(len(self.paths), 1)
        for start in range(0, len(self.paths), step):
            batches = ImageBatches(self.paths[start:start + step], size=self.scorer.image_size,
                                   batch_size=self.batch_size, arrays=self.scorer.array_input)
            if not batches.any_readable():
                self.failed += batches.failed
                continue
            prediction = self.scorer.predict(batches)
            self.failed += batches.failed
            scores, maps = as_array(prediction.scores), as_maps(prediction.maps)
            thresholds = self.scorer.thresholds if self.thresholds is None else self.thresholds(scores, maps)
            yield from zip(batches.loaded, decide(scores, maps, thresholds), strict=True)
