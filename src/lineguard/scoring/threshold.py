"""Thresholds that turn anomaly scores into decisions, and one normalised scale where every threshold is 1.0.

Rules (all use the metrics' convention: a score ``>= threshold`` is defective):

* ``t3sigma`` (the default) — ``mu3sigma`` widened for the few images it is estimated from: the normal
  prediction bound with mu3sigma's tail (0.135 %), mean + t₍ₙ₋₁₎(0.99865) · √(1 + 1/n) · sd. With many good
  images it is mean + 3 sd; with 6 it is mean + 5.9 sd, because a mean and sd from 6 scores are themselves
  uncertain and plain mean + 3 sd then rejects several percent of good parts
  (``benchmarks/results/calibration/README.md``);
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

Scores and maps may be numpy arrays or torch tensors; nothing here imports torch, so decisions are made the same
way where it is not installed (an exported model on a line PC).

Letters: N images, H × W map size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import stats

from lineguard.errors import LineguardError

if TYPE_CHECKING:
    from torch import Tensor

NORMALIZED_THRESHOLD = 1.0
RULES = ("t3sigma", "mu3sigma", "mad", "quantile", "f1")
DEFAULT_RULE = "t3sigma"
MAD_TO_SIGMA = 1.4826  # the MAD of a normal distribution times this is its standard deviation
THREE_SIGMA_TAIL = float(stats.norm.sf(3.0))  # 0.00135: the share of a normal distribution above mean + 3 sd


class CalibrationError(LineguardError, ValueError):
    """Thresholds cannot be learned from these scores (too few, not finite, all equal, bad rule)."""


class NotCalibratedError(LineguardError, RuntimeError):
    """Decisions were asked of a model that has no thresholds yet."""


def as_array(values: Any) -> np.ndarray:
    """A tensor (on any device) or anything numpy reads -> numpy array."""
    return np.asarray(values.detach().cpu().numpy() if hasattr(values, "detach") else values)


def _values(scores: Tensor | np.ndarray, name: str, minimum: int) -> np.ndarray:
    values = as_array(scores).astype(float)
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


def t_sigma_threshold(scores: Tensor | np.ndarray) -> float:
    """(N,) good scores -> the normal prediction bound that a new good score exceeds with probability 0.135 %
    (mean + 3 sd's tail): mean + t_(N−1)(1 − 0.00135) · √(1 + 1/N) · sd; mean + 3 sd for large N."""
    values = _values(scores, "good scores", 2)
    n = values.size
    factor = stats.t.isf(THREE_SIGMA_TAIL, n - 1) * math.sqrt(1 + 1 / n)
    return float(values.mean() + factor * values.std(ddof=1))


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


def map_maxima(maps: Tensor | np.ndarray) -> np.ndarray:
    """(N, H, W), or a list of (H_i, W_i), -> (N,): the statistic the pixel threshold is calibrated on."""
    if isinstance(maps, list | tuple):
        return np.array([as_array(m).max() for m in maps])
    maps = as_array(maps)
    return maps.reshape(len(maps), -1).max(axis=1)


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

    def normalize_scores(self, scores: Any) -> Any:
        """(N,) raw -> (N,) normalised: 0 typical good, 1.0 the threshold."""
        return (scores - self.image_center) / (self.image_threshold - self.image_center)

    def normalize_maps(self, maps: Any) -> Any:
        """(N, H, W) raw -> (N, H, W) normalised with the pixel threshold."""
        return (maps - self.pixel_center) / (self.pixel_threshold - self.pixel_center)


def calibrate(scores: Tensor | np.ndarray, maps: Tensor | np.ndarray, *, rule: str = DEFAULT_RULE,
              false_alarm_rate: float = 0.01, mad_factor: float = 3.0,
              labels: Tensor | np.ndarray | None = None) -> Thresholds:
    """Learn thresholds from held-out images: scores (N,), maps (N, H, W), and for ``f1`` labels (N,) 0/1.

    ``t3sigma``, ``mu3sigma``, ``mad`` and ``quantile`` use the images labelled good (all of them when
    ``labels`` is None);
    ``mad`` puts the threshold ``mad_factor`` robust standard deviations above their median.
    """
    if rule not in RULES:
        raise CalibrationError(f"unknown calibration rule {rule!r}; choose from {', '.join(RULES)}")
    if rule == "f1" and labels is None:
        raise CalibrationError("rule 'f1' needs labels (0 good, 1 defective) for the scores")
    scores, maxima = as_array(scores), map_maxima(maps)
    good = np.ones(len(scores), dtype=bool) if labels is None else as_array(labels) == 0
    if labels is not None and len(good) != len(scores):
        raise CalibrationError(f"got {len(good)} labels for {len(scores)} scores")
    if rule == "t3sigma":
        image, pixel = t_sigma_threshold(scores[good]), t_sigma_threshold(maxima[good])
        how = f"t3sigma: mean + 3 sd widened for {int(good.sum())} good images (t prediction bound)"
    elif rule == "mu3sigma":
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
