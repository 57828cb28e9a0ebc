"""Fit a detector on a dataset's normal images, score its test set, and measure what the papers report.

One function serves ``lineguard evaluate``, the benchmark runner and the demo, so every number comes from
the same code: image AUROC, pixel AUROC and AUPRO on maps at the detector's working resolution (masks are
resized to it, as anomalib and MuSc do; a tiled or letterboxed detector's maps are at the images' own
resolution, which may differ from image to image), fit
seconds, images per second and peak resident memory.
"""

from __future__ import annotations

import random
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from lineguard.errors import ParameterError
from lineguard.io.batches import ImageBatches
from lineguard.io.datasets import Dataset, Sample
from lineguard.io.images import read_mask
from lineguard.methods.base import Detector, Prediction
from lineguard.metrics import evaluate as compute_metrics


def select_support(dataset: Dataset, shots: int | None, seed: int) -> list[Path]:
    """All good training images, or ``shots`` of them drawn with ``seed`` (the few-shot support set)."""
    good = dataset.good_train
    if shots is None:
        return good
    if not 1 <= shots <= len(good):
        raise ParameterError(f"--shots must be between 1 and {len(good)} for {dataset.root}, got {shots}")
    return sorted(random.Random(seed).sample(good, shots))


def load_masks(samples: list[Sample], size: int | tuple[int, int], threshold: int) -> Tensor:
    """(N, H, W) bool ground truth at ``size`` (int: square); good images (and defects without a mask) are
    all-normal."""
    size = (size, size) if isinstance(size, int) else size
    masks = torch.zeros(len(samples), *size, dtype=torch.bool)
    for i, sample in enumerate(samples):
        if sample.mask_path is not None:
            mask = read_mask(sample.mask_path, threshold=threshold).float()[None, None]  # (1, 1, H, W)
            masks[i] = F.interpolate(mask, size=size, mode="bilinear", antialias=True)[0, 0] > 0.5
    return masks


def masks_for(samples: list[Sample], maps: Tensor | list[Tensor], threshold: int) -> Tensor | list[Tensor]:
    """Ground truth at the maps' resolution: (N, H, W) for maps (N, H, W); for a list of maps of images' own
    sizes (tiled, letterboxed), one (H_i, W_i) mask each."""
    if isinstance(maps, Tensor):
        return load_masks(samples, tuple(maps.shape[-2:]), threshold)
    return [load_masks([sample], tuple(values.shape), threshold)[0] for sample, values in zip(samples, maps,
                                                                                            strict=True)]


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@dataclass
class EvaluationResult:
    metrics: dict[str, float]
    fit_seconds: float
    predict_seconds: float
    images_per_second: float
    peak_rss_mb: float
    n_support: int
    samples: list[Sample]
    prediction: Prediction
    masks: Tensor | list[Tensor]  # (N, H, W) bool ground truth at the maps' resolution, or (H_i, W_i) each
    failed: list[tuple[Path, str]] = field(default_factory=list)

    def summary(self) -> dict[str, float | int]:
        return {**self.metrics, "fit_seconds": round(self.fit_seconds, 3),
                "predict_seconds": round(self.predict_seconds, 3),
                "images_per_second": round(self.images_per_second, 3), "peak_rss_mb": round(self.peak_rss_mb, 1),
                "n_support": self.n_support, "n_test": len(self.samples)}


def evaluate_detector(detector: Detector, dataset: Dataset, *, image_size: int | None, shots: int | None = None,
                      seed: int = 0, batch_size: int = 16) -> EvaluationResult:
    """Fit on the good training images (or ``shots`` of them; none for test-batch methods), predict the test
    split, and compute the metrics. Unreadable files are skipped and returned in ``failed``; a split with no
    readable image at all is a NoReadableImagesError naming its files."""
    support = select_support(dataset, shots, seed) if detector.uses_normal_images else []
    start = time.perf_counter()
    train = ImageBatches(support, size=image_size, batch_size=batch_size)
    detector.fit(train.require_readable(f"fit on {dataset.root}") if detector.uses_normal_images else train)
    fit_seconds = time.perf_counter() - start

    test = ImageBatches([s.path for s in dataset.test], size=image_size, batch_size=batch_size)
    start = time.perf_counter()
    prediction = detector.predict(test.require_readable(f"the test split of {dataset.root}"))
    predict_seconds = time.perf_counter() - start

    by_path = {s.path: s for s in dataset.test}
    samples = [by_path[p] for p in test.loaded]
    labels = torch.tensor([s.label for s in samples])
    masks = masks_for(samples, prediction.maps, dataset.mask_threshold)
    metrics = compute_metrics(labels, prediction.scores, masks, prediction.maps)
    return EvaluationResult(metrics={k: float(v) for k, v in metrics.items()}, fit_seconds=fit_seconds,
                            predict_seconds=predict_seconds,
                            images_per_second=len(samples) / max(predict_seconds, 1e-9),
                            peak_rss_mb=peak_rss_mb(), n_support=len(support), samples=samples,
                            prediction=prediction, masks=masks, failed=train.failed + test.failed)
