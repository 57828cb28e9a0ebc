"""Thresholds against hand-worked values and brute force; the detector's calibration state."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import lineguard
from lineguard.methods.base import NotCalibratedError, Prediction
from lineguard.scoring.threshold import (
    CalibrationError,
    Thresholds,
    calibrate,
    f1_threshold,
    mu_sigma_threshold,
    quantile_threshold,
    robust_threshold,
)


def test_mu_sigma_by_hand():
    # mean 5, squared deviations 9+1+1+9 = 20, sample variance 20/3
    assert mu_sigma_threshold(torch.tensor([2.0, 4.0, 6.0, 8.0])) == pytest.approx(5 + 3 * math.sqrt(20 / 3))


def test_robust_threshold_by_hand_ignores_a_far_outlier():
    # median 3, absolute deviations 2, 1, 0, 1, 97 -> MAD 1
    assert robust_threshold(np.array([1.0, 2.0, 3.0, 4.0, 100.0])) == pytest.approx(3 + 3 * 1.4826)
    assert robust_threshold([1.0, 2.0, 3.0, 4.0, 1e6], factor=2) == pytest.approx(3 + 2 * 1.4826)


def test_robust_threshold_of_normal_scores_is_about_mean_plus_three_sd():
    scores = np.random.default_rng(0).normal(10.0, 2.0, size=20_000)
    assert robust_threshold(scores) == pytest.approx(16.0, abs=0.1)


def test_quantile_by_hand():
    scores = np.arange(101, dtype=float)  # 0, 1, ..., 100: the q-quantile is 100 q
    assert quantile_threshold(scores, 0.1) == pytest.approx(90.0)
    assert quantile_threshold(scores, 0.01) == pytest.approx(99.0)
    # between order statistics: 4 scores, 0.75 quantile at position 0.75 * 3 = 2.25 -> 3 + 0.25 * (10 - 3)
    assert quantile_threshold(np.array([1.0, 2.0, 3.0, 10.0]), 0.25) == pytest.approx(4.75)


def test_quantile_rejects_about_the_target_share_of_good_scores():
    scores = np.random.default_rng(0).normal(size=10_000)
    threshold = quantile_threshold(scores, 0.05)
    assert np.mean(scores >= threshold) == pytest.approx(0.05, abs=0.001)


def f1_at(labels: np.ndarray, scores: np.ndarray, threshold: float) -> float:
    tp = np.sum((scores >= threshold) & (labels == 1))
    return 2 * tp / (np.sum(scores >= threshold) + labels.sum())


def test_f1_threshold_matches_brute_force():
    rng = np.random.default_rng(1)
    for _ in range(20):
        labels = rng.integers(0, 2, 30)
        labels[:2] = [0, 1]
        scores = rng.normal(size=30) + labels * rng.uniform(0, 2)
        scores = np.round(scores, 1)  # ties, as real scores have

        best = max(f1_at(labels, scores, t) for t in np.unique(scores))
        assert f1_at(labels, scores, f1_threshold(labels, scores)) == pytest.approx(best)


@pytest.mark.parametrize(("call", "message"), [
    (lambda: mu_sigma_threshold([1.0]), "at least 2"),
    (lambda: mu_sigma_threshold([1.0, float("nan")]), "NaN"),
    (lambda: robust_threshold([]), "at least 1"),
    (lambda: robust_threshold([1.0, 2.0], factor=0), "mad_factor must be positive"),
    (lambda: calibrate(torch.ones(3), torch.ones(3, 2, 2), rule="mad", mad_factor=-1), "mad_factor must be positive"),
    (lambda: quantile_threshold([1.0, 2.0], 0.0), "false_alarm_rate"),
    (lambda: quantile_threshold(np.ones((2, 2)), 0.1), r"\(N,\)"),
    (lambda: calibrate(torch.ones(3), torch.ones(3, 2, 2), rule="max"), "unknown calibration rule"),
    (lambda: calibrate(torch.ones(3), torch.ones(3, 2, 2), rule="f1"), "needs labels"),
    (lambda: calibrate(torch.ones(3), torch.ones(3, 2, 2)), "not above the typical good score"),
])
def test_bad_input_is_a_clear_error(call, message):
    with pytest.raises(CalibrationError, match=message):
        call()


def test_calibrate_uses_good_images_and_map_maxima():
    scores = torch.tensor([1.0, 2.0, 3.0, 9.0])
    maps = torch.zeros(4, 3, 3)
    maps[:, 1, 1] = torch.tensor([10.0, 20.0, 30.0, 90.0])  # per-image maxima
    labels = torch.tensor([0, 0, 0, 1])
    t = calibrate(scores, maps, rule="mu3sigma", labels=labels)  # the defective image is left out
    assert t.image_threshold == pytest.approx(2 + 3 * 1.0) and t.image_center == 2.0
    assert t.pixel_threshold == pytest.approx(20 + 3 * 10.0) and t.pixel_center == 20.0
    mad = calibrate(scores, maps, rule="mad")  # all four: median 2.5, MAD 1
    assert mad.image_threshold == pytest.approx(2.5 + 3 * 1.4826) and mad.image_center == 2.5
    assert mad.pixel_threshold == pytest.approx(25 + 3 * 14.826) and "robust" in mad.calibration
    f1 = calibrate(scores, maps, rule="f1", labels=labels)
    assert f1.image_threshold == 9.0 and f1.pixel_threshold == 90.0
    assert "F1" in f1.calibration


def test_normalised_scale_puts_threshold_at_one():
    t = Thresholds(image_threshold=5.0, pixel_threshold=3.0, image_center=1.0, pixel_center=2.0)
    assert torch.allclose(t.normalize_scores(torch.tensor([1.0, 5.0, 9.0])), torch.tensor([0.0, 1.0, 2.0]))
    assert torch.allclose(t.normalize_maps(torch.tensor([[[2.0, 3.0], [4.0, 2.5]]])),
                          torch.tensor([[[0.0, 1.0], [2.0, 0.5]]]))
    with pytest.raises(CalibrationError, match="not above"):
        Thresholds(image_threshold=1.0, pixel_threshold=3.0, image_center=1.0)


def test_detector_thresholds_are_saved_and_do_not_make_it_fitted(parts, tmp_path):
    support, test, labels, _ = parts
    detector = lineguard.create("knn", image_size=128)
    detector.set_thresholds(Thresholds(image_threshold=2.0, pixel_threshold=2.0))
    assert not detector.is_fitted  # thresholds alone are not a fitted model
    with pytest.raises(NotCalibratedError):
        lineguard.create("knn").normalize(Prediction(torch.ones(1), torch.ones(1, 2, 2)))

    detector.fit(support[:8])
    detector.calibrate(detector.predict(support[8:]), rule="quantile", false_alarm_rate=0.25)
    assert detector.is_fitted and "quantile" in detector.thresholds.calibration
    prediction = detector.predict(test)
    normalized = detector.normalize(prediction)
    assert torch.equal(normalized.scores >= 1.0, prediction.scores >= detector.thresholds.image_threshold)
    assert normalized.scores[labels == 1].min() >= 1.0  # every planted defect is rejected

    detector.save(tmp_path / "m")
    reloaded = lineguard.load(tmp_path / "m")
    assert reloaded.thresholds == detector.thresholds
    assert torch.equal(reloaded.normalize(prediction).scores, normalized.scores)
