"""Ranking metrics on binary labels: AUROC, average precision, F1-max (image level, and the shared core).

Every metric here is exact and ranks each score class with one ``np.sort``: scikit-learn's
``roc_auc_score`` takes ~28 s on 40 M pixels (it argsorts), these take a few seconds, so the pixel
metrics (``pixel.py``) are the same functions applied to flattened masks and maps.

Conventions: a score ``>= threshold`` is called defective; equal scores form one step (a tie between
a positive and a negative counts 1/2 in AUROC, as in scikit-learn); label 1 / True is defective.
Letters: N scores, S distinct scores of the class being stepped through.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lineguard.errors import LineguardError


class MetricError(LineguardError, ValueError):
    """The inputs of a metric are unusable (shape mismatch, NaN scores, one class, non-binary labels)."""


def as_array(values, name: str) -> np.ndarray:
    """numpy array or torch tensor -> numpy array, without a copy where possible (torch is never imported here:
    a tensor is known by its ``detach``)."""
    if hasattr(values, "detach"):
        values = values.detach().cpu()
        if values.dtype.is_floating_point and values.element_size() == 2:  # numpy has no bfloat16
            values = values.float()
        return values.numpy()
    try:
        return np.asarray(values)
    except (TypeError, ValueError) as error:
        raise MetricError(f"{name} cannot be read as an array: {error}") from error


def check_scores(scores, name: str) -> np.ndarray:
    """Real-valued scores without NaN (infinities are fine: they still rank)."""
    scores = as_array(scores, name)
    if scores.dtype.kind not in "biuf":
        raise MetricError(f"{name} must be real numbers, got dtype {scores.dtype}")
    if scores.dtype.kind == "f" and np.isnan(scores).any():
        raise MetricError(f"{name} contain {int(np.isnan(scores).sum())} NaN value(s)")
    return scores


def check_binary(labels, name: str) -> np.ndarray:
    """Boolean, or numbers that are all 0 or 1 -> bool array (1 = defective)."""
    labels = as_array(labels, name)
    if labels.dtype == bool:
        return labels
    if not np.issubdtype(labels.dtype, np.number):
        raise MetricError(f"{name} must be boolean or 0/1, got dtype {labels.dtype}")
    is_one = labels == 1
    if not (is_one | (labels == 0)).all():
        odd = np.unique(labels[~(is_one | (labels == 0))])[:5]
        raise MetricError(f"{name} must be boolean or 0/1, got values such as {odd.tolist()}; binarize first")
    return is_one


def check_same_shape(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str, hint: str = "") -> None:
    if a.shape != b.shape:
        message = f"{name_a} shape {tuple(a.shape)} does not match {name_b} shape {tuple(b.shape)}"
        raise MetricError(message + (f"; {hint}" if hint else ""))


def descending_steps(
    stepping: np.ndarray, other: np.ndarray, other_weights: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Walk the distinct values v of ``stepping`` from high to low, counting ``other`` along the way.

    ``stepping`` and ``other`` are sorted ascending; ``other_weights`` (default 1 each) follow ``other``'s
    order. Returns, per distinct v: v, how many ``stepping`` scores are >= v, and the weight of
    ``other`` scores >= v and > v (the two ends of the step at v, where ties are one step).
    """
    # (S,) first index of each distinct value in `stepping`
    starts = np.flatnonzero(np.concatenate(([True], stepping[1:] != stepping[:-1])))[::-1]
    values = stepping[starts]
    stepping_at_or_above = stepping.size - starts
    first_at_or_above = np.searchsorted(other, values, side="left")  # sorted needles: a fast, hinted search
    # Only values that also occur in `other` need the second search.
    first_above = first_at_or_above.copy()
    inside = first_at_or_above < other.size
    tied = np.flatnonzero(inside)[other[first_at_or_above[inside]] == values[inside]]
    first_above[tied] = np.searchsorted(other, values[tied], side="right")
    if other_weights is None:
        return values, stepping_at_or_above, other.size - first_at_or_above, other.size - first_above
    # tail[i] = weight of other[i:]; tail[other.size] = 0
    tail = np.concatenate((np.cumsum(other_weights[::-1])[::-1], [0.0]))
    return values, stepping_at_or_above, tail[first_at_or_above], tail[first_above]


@dataclass(frozen=True)
class Ranking:
    """Counts at each distinct positive score v, highest first: enough for AUROC, AP and F1-max.

    ``tp``: positives >= v; ``fp``: negatives >= v; ``fp_above``: negatives > v (all (S,) int64).
    """

    values: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    fp_above: np.ndarray
    n_positive: int
    n_negative: int

    @classmethod
    def of(cls, labels: np.ndarray, scores: np.ndarray, what: str) -> Ranking:
        """labels (N,) bool, scores (N,) checked; ``what`` names them in the one-class error."""
        if labels.size == 0:
            raise MetricError(f"{what} are empty")
        n_positive = int(np.count_nonzero(labels))
        if n_positive in (0, labels.size):
            only = "defective (1)" if n_positive else "good (0)"
            raise MetricError(f"{what} contain only one class: all {labels.size} are {only}; need both")
        positive = np.sort(scores[labels])
        negative = np.sort(scores[~labels])
        values, tp, fp, fp_above = descending_steps(positive, negative)
        return cls(values, tp, fp, fp_above, n_positive, labels.size - n_positive)

    def auroc(self) -> float:
        """P(positive scores higher than negative) + 1/2 P(tie), i.e. the Mann-Whitney U, in exact integers."""
        count = np.diff(self.tp, prepend=0)  # positives equal to each value
        negatives_below_twice = 2 * self.n_negative - self.fp - self.fp_above  # #(<v) + #(<=v)
        return float(np.dot(count, negatives_below_twice) / (2 * self.n_positive * self.n_negative))

    def average_precision(self) -> float:
        """Sum over thresholds of (recall gain) x precision, without interpolation (scikit-learn's AP)."""
        count = np.diff(self.tp, prepend=0)
        return float(np.sum(count * (self.tp / (self.tp + self.fp))) / self.n_positive)

    def f1_max(self) -> tuple[float, float]:
        """Best F1 = 2TP / (TP + FP + P) and the highest threshold reaching it.

        The best threshold is always some positive's score: between two positive scores, raising the
        threshold only removes false positives.
        """
        f1 = 2 * self.tp / (self.tp + self.fp + self.n_positive)
        best = int(np.argmax(f1))
        return float(f1[best]), float(self.values[best])


def image_ranking(labels, scores) -> Ranking:
    """Checked labels (N,) and scores (N,) -> their ranking, shared by the image metrics."""
    labels = check_binary(labels, "labels")
    scores = check_scores(scores, "scores")
    if labels.ndim != 1:
        raise MetricError(f"labels must be one-dimensional (N,), got shape {tuple(labels.shape)}")
    check_same_shape(labels, scores, "labels", "scores")
    return Ranking.of(labels, scores, "labels")


def roc_curve(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    """labels (N,) 0/1, scores (N,) -> the ROC curve as (false-positive rates, true-positive rates), from (0, 0)
    to (1, 1): a corner at each distinct positive score, ties as diagonal steps; its area is the AUROC."""
    ranking = image_ranking(labels, scores)
    tp_before = np.concatenate(([0], ranking.tp[:-1]))  # positives above each value, before reaching it
    fp = np.concatenate(([0], np.stack([ranking.fp_above, ranking.fp], 1).ravel(), [ranking.n_negative]))
    tp = np.concatenate(([0], np.stack([tp_before, ranking.tp], 1).ravel(), [ranking.n_positive]))
    return fp / ranking.n_negative, tp / ranking.n_positive


def image_auroc(labels, scores) -> float:
    """labels (N,) 0/1, scores (N,) -> area under the ROC curve (1 = every defect scored above every good)."""
    return image_ranking(labels, scores).auroc()


def image_ap(labels, scores) -> float:
    """labels (N,) 0/1, scores (N,) -> average precision; unlike AUROC it reflects how rare defects are."""
    return image_ranking(labels, scores).average_precision()


def f1_max(labels, scores) -> tuple[float, float]:
    """labels (N,) 0/1, scores (N,) -> (best F1, threshold); ``score >= threshold`` means defective."""
    return image_ranking(labels, scores).f1_max()
