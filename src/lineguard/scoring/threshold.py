"""Thresholds that turn anomaly scores into decisions, and one normalised scale where every threshold is 1.0.

Rules (all use the metrics' convention: a score ``>= threshold`` is defective):

* ``mu3sigma`` — mean + 3 standard deviations (sample sd, ddof = 1) of the scores of good images;
* ``mad`` — median + 3 (``mad_factor``) robust standard deviations (1.4826 · MAD): a minority of defective
  images among the scores barely moves it, so it also serves a batch scored against itself (``lineguard
  predict --method testbatch``) and the line monitor's recent scores;
* ``quantile`` — the (1 − a) quantile of the good scores (numpy's linear interpolation), so that a fraction
  ``a`` of good parts is expected to be rejected: the target false-alarm rate;
* ``f1`` — from labelled scores, the threshold of highest F1 (``metrics.f1_max``);
* by hand — :class:`Thresholds` built directly.

The good images must be held out from ``fit``: a memory-bank method scores its own training images at (near)
zero, which would put the threshold far too low.

Pixel threshold: the same rule applied to the per-image *maxima* of the anomaly maps, so that a good image
shows no defect region about as often as it is passed — a threshold on all pixels would be set by the
millions of background pixels and mark spots in every good image.

Normalised scores: ``n = (s − c) / (t − c)`` with ``t`` the threshold and ``c`` the centre, the median of the
good scores used in calibration (0 for thresholds set by hand). A typical good part scores 0, the threshold is
**1.0** (:data:`NORMALIZED_THRESHOLD`) whatever the method, and 2.0 is twice as far from normal as the
threshold. Maps are normalised the same way with the pixel threshold and centre.

Letters: N images, H × W map size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch and the metrics load where scores are calibrated: thresholds themselves need neither
    from torch import Tensor

NORMALIZED_THRESHOLD = 1.0
RULES = ("mu3sigma", "mad", "quantile", "f1")
MAD_TO_SIGMA = 1.4826  # the MAD of a normal distribution times this is its standard deviation


class CalibrationError(ValueError):
    """Thresholds cannot be learned from these scores (too few, not finite, all equal, bad rule)."""


class NotCalibratedError(RuntimeError):
    """Decisions were asked of a detector that has no thresholds yet."""


def _values(scores: Tensor | np.ndarray, name: str, minimum: int) -> np.ndarray:
    if hasattr(scores, "detach"):  # a torch tensor, perhaps on a GPU: to the CPU first (numpy reads it then)
        scores = scores.detach().cpu().double()
    values = np.asarray(scores, dtype=float)
    if values.ndim != 1:
        raise CalibrationError(f"{name} must be one score per image (N,), got shape {values.shape}")
    if values.size < minimum:
        raise CalibrationError(f"{name}: need at least {minimum} scores, got {values.size}")
    if not np.isfinite(values).all():
        raise CalibrationError(f"{name} contain {int((~np.isfinite(values)).sum())} NaN or infinite value(s)")
    return values


def mu_sigma_threshold(scores: Tensor | np.ndarray) -> float:
    """(N,) good scores -> mean + 3 sample standard deviations."""
    values = _values(scores, "good scores", 2)
    return float(values.mean() + 3 * values.std(ddof=1))


def robust_threshold(scores: Tensor | np.ndarray, factor: float = 3.0) -> float:
    """(N,) scores -> median + ``factor`` robust standard deviations (1.4826 · median absolute deviation)."""
    if not factor > 0:
        raise CalibrationError(f"mad_factor must be positive, got {factor}")
    values = _values(scores, "scores", 1)
    median = np.median(values)
    return float(median + factor * MAD_TO_SIGMA * np.median(np.abs(values - median)))


def quantile_threshold(scores: Tensor | np.ndarray, false_alarm_rate: float) -> float:
    """(N,) good scores -> their (1 − false_alarm_rate) quantile (linear interpolation between order stats).

    With fewer than 1 / false_alarm_rate good images the quantile lies between the two largest scores: the
    rate asked for cannot be told apart from a smaller one with so few images.
    """
    if not 0.0 < false_alarm_rate < 1.0:
        raise CalibrationError(f"false_alarm_rate must be in (0, 1), got {false_alarm_rate}")
    return float(np.quantile(_values(scores, "good scores", 1), 1.0 - false_alarm_rate))


def f1_threshold(labels: Tensor | np.ndarray, scores: Tensor | np.ndarray) -> float:
    """labels (N,) 0/1 and scores (N,) -> the highest threshold of maximal F1."""
    from lineguard.metrics import f1_max

    return f1_max(labels, scores)[1]


def map_maxima(maps: Tensor) -> Tensor:
    """(N, H, W) -> (N,): the statistic the pixel threshold is calibrated on."""
    return maps.flatten(1).amax(dim=1)


@dataclass(frozen=True)
class Thresholds:
    """Image and pixel thresholds with their centres, in the units of the detector's raw scores and maps."""

    image_threshold: float
    pixel_threshold: float
    image_center: float = 0.0
    pixel_center: float = 0.0
    calibration: str = "set by hand"  # how they were obtained, for people reading /v1/model or a report

    def __post_init__(self) -> None:
        for kind in ("image", "pixel"):
            threshold, center = getattr(self, f"{kind}_threshold"), getattr(self, f"{kind}_center")
            if not (math.isfinite(threshold) and math.isfinite(center)):
                raise CalibrationError(f"{kind} threshold {threshold} and centre {center} must be finite")
            if threshold <= center:
                raise CalibrationError(
                    f"{kind} threshold {threshold:.6g} is not above the typical good score {center:.6g}: the "
                    "good scores do not spread (all equal?) or labelled defects score below the good parts")

    def normalize_scores(self, scores: Tensor) -> Tensor:
        """(N,) raw -> (N,) normalised: 0 typical good, 1.0 the threshold."""
        return (scores - self.image_center) / (self.image_threshold - self.image_center)

    def normalize_maps(self, maps: Tensor) -> Tensor:
        """(N, H, W) raw -> (N, H, W) normalised with the pixel threshold."""
        return (maps - self.pixel_center) / (self.pixel_threshold - self.pixel_center)


def calibrate(scores: Tensor, maps: Tensor, *, rule: str = "mu3sigma", false_alarm_rate: float = 0.01,
              mad_factor: float = 3.0, labels: Tensor | None = None) -> Thresholds:
    """Learn thresholds from held-out images: scores (N,), maps (N, H, W), and for ``f1`` labels (N,) 0/1.

    ``mu3sigma``, ``mad`` and ``quantile`` use the images labelled good (all of them when ``labels`` is None);
    ``mad`` puts the threshold ``mad_factor`` robust standard deviations above their median.
    """
    if rule not in RULES:
        raise CalibrationError(f"unknown calibration rule {rule!r}; choose from {', '.join(RULES)}")
    if rule == "f1" and labels is None:
        raise CalibrationError("rule 'f1' needs labels (0 good, 1 defective) for the scores")
    import torch

    maxima = map_maxima(maps)
    good = torch.ones(len(scores), dtype=torch.bool) if labels is None else torch.as_tensor(labels) == 0
    if labels is not None and len(good) != len(scores):
        raise CalibrationError(f"got {len(good)} labels for {len(scores)} scores")
    if rule == "mu3sigma":
        image, pixel = mu_sigma_threshold(scores[good]), mu_sigma_threshold(maxima[good])
        how = f"mu3sigma: mean + 3 sd of {int(good.sum())} good images"
    elif rule == "mad":
        image, pixel = robust_threshold(scores[good], mad_factor), robust_threshold(maxima[good], mad_factor)
        how = f"mad: median + {mad_factor:g} robust sd of {int(good.sum())} images"
    elif rule == "quantile":
        image = quantile_threshold(scores[good], false_alarm_rate)
        pixel = quantile_threshold(maxima[good], false_alarm_rate)
        how = f"quantile: {false_alarm_rate:g} false-alarm rate on {int(good.sum())} good images"
    else:
        image, pixel = f1_threshold(labels, scores), f1_threshold(labels, maxima)
        how = f"f1: F1-max on {len(scores)} labelled images ({int((~good).sum())} defective)"
    return Thresholds(image_threshold=image, pixel_threshold=pixel,
                      image_center=float(np.median(_values(scores[good], "good scores", 1))),
                      pixel_center=float(np.median(_values(maxima[good], "good map maxima", 1))),
                      calibration=how)
