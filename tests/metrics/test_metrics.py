"""Metrics against brute-force references written here, hand-worked values, and every input error."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch
from scipy import ndimage
from sklearn.metrics import average_precision_score

from lineguard.metrics import (
    MetricError,
    aupro,
    evaluate,
    f1_max,
    image_ap,
    image_auroc,
    pixel_ap,
    pixel_auroc,
)

# ---------------------------------------------------------------- brute-force references


def auroc_by_pairs(labels, scores) -> float:
    """Fraction of (defective, good) pairs ordered correctly, a tie counting 1/2."""
    positive, negative = scores[labels == 1], scores[labels == 0]
    wins = (positive[:, None] > negative[None, :]).sum() + 0.5 * (positive[:, None] == negative[None, :]).sum()
    return wins / (positive.size * negative.size)


def ap_by_thresholds(labels, scores) -> float:
    """Sum over every distinct threshold t (high to low) of recall gain x precision at t."""
    total, last_recall = 0.0, 0.0
    for t in np.unique(scores)[::-1]:
        called = scores >= t
        true_positives = np.sum(called & (labels == 1))
        recall = true_positives / np.sum(labels == 1)
        total += (recall - last_recall) * true_positives / np.sum(called)
        last_recall = recall
    return total


def f1_by_thresholds(labels, scores) -> tuple[float, float]:
    """Best F1 over every distinct threshold; the highest threshold wins among equals."""
    best = (-1.0, None)
    for t in np.unique(scores)[::-1]:
        called = scores >= t
        true_positives = np.sum(called & (labels == 1))
        f1 = 2 * true_positives / (np.sum(called) + np.sum(labels == 1))
        if f1 > best[0] + 1e-12:
            best = (f1, t)
    return best


def aupro_by_thresholds(masks, maps, limit) -> float:
    """PRO and FPR computed directly at every distinct threshold, trapezoids cut at ``limit``."""
    regions = []
    for mask, heat in zip(masks, maps, strict=True):
        labeled, count = ndimage.label(mask, structure=np.ones((3, 3)))
        regions += [heat[labeled == k] for k in range(1, count + 1)]
    normal = maps[~masks]
    fpr, pro = [0.0], [0.0]
    for t in np.unique(maps)[::-1]:
        fpr.append(np.mean(normal >= t))
        pro.append(np.mean([np.mean(region >= t) for region in regions]))
    fpr, pro = np.array(fpr), np.array(pro)
    cut = int(np.argmax(fpr >= limit))
    pro_limit = np.interp(limit, fpr[cut - 1 : cut + 1], pro[cut - 1 : cut + 1])
    x, y = np.append(fpr[:cut], limit), np.append(pro[:cut], pro_limit)
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2) / limit)


def random_case(seed: int, n: int, tied: bool):
    """Labels with both classes and scores; ``tied`` draws scores from 5 values so ties are common."""
    rng = np.random.default_rng(seed)
    labels = rng.random(n) < 0.4
    labels[:2] = [True, False]
    scores = rng.integers(0, 5, n).astype(np.float32) if tied else rng.normal(size=n) + labels
    return labels.astype(np.int64), scores


def random_maps(seed: int, tied: bool, shape=(3, 7, 7)):
    """Masks with scattered and diagonal-touching defect pixels, maps correlated with them."""
    rng = np.random.default_rng(seed)
    masks = rng.random(shape) < 0.25
    masks[0, 0, 0], masks[0, 0, 1] = True, False
    maps = rng.integers(0, 6, shape) + 2 * masks if tied else rng.random(shape) + 0.5 * masks
    return masks, maps.astype(np.float32)


# ---------------------------------------------------------------- image metrics


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("seed", range(5))
def test_image_metrics_match_brute_force(seed, tied):
    labels, scores = random_case(seed, 40, tied)
    assert image_auroc(labels, scores) == pytest.approx(auroc_by_pairs(labels, scores), abs=1e-12)
    assert image_ap(labels, scores) == pytest.approx(ap_by_thresholds(labels, scores), abs=1e-12)
    assert image_ap(labels, scores) == pytest.approx(average_precision_score(labels, scores), abs=1e-12)
    best, threshold = f1_max(labels, scores)
    expected_best, expected_threshold = f1_by_thresholds(labels, scores)
    assert best == pytest.approx(expected_best, abs=1e-12)
    assert threshold == expected_threshold


def test_image_metrics_hand_worked():
    # Good 0.1, 0.4; defective 0.4, 0.8. Pairs: 0.4>0.1 (1), 0.4=0.4 (1/2), 0.8 beats both (2) -> 7/8.
    # Thresholds 0.8: TP 1, FP 0 (P 1, R 1/2); 0.4: TP 2, FP 1 (P 2/3, R 1) -> AP = 1/2 + 1/2 * 2/3 = 5/6.
    # F1 = 2TP / (TP + FP + 2): 0.8 -> 2/3, 0.4 -> 4/5, 0.1 -> 4/6; best 4/5 at 0.4.
    labels, scores = [0, 1, 0, 1], [0.1, 0.4, 0.4, 0.8]
    assert image_auroc(labels, scores) == pytest.approx(7 / 8)
    assert image_ap(labels, scores) == pytest.approx(5 / 6)
    assert f1_max(labels, scores) == pytest.approx((4 / 5, 0.4))


def test_perfect_and_inverted_image_scores():
    labels = np.array([0, 0, 1, 1, 1])
    scores = np.array([0.1, 0.2, 0.5, 0.7, 0.9])
    assert image_auroc(labels, scores) == 1.0
    assert image_auroc(labels, -scores) == 0.0
    assert image_ap(labels, scores) == 1.0
    assert f1_max(labels, scores) == (1.0, 0.5)  # the lowest defect score separates perfectly


# ---------------------------------------------------------------- pixel metrics


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("seed", range(4))
def test_pixel_metrics_match_brute_force(seed, tied):
    masks, maps = random_maps(seed, tied)
    labels, scores = masks.ravel(), maps.ravel()
    assert pixel_auroc(masks, maps) == pytest.approx(auroc_by_pairs(labels, scores), abs=1e-12)
    assert pixel_ap(masks, maps) == pytest.approx(average_precision_score(labels, scores), abs=1e-12)


def test_perfect_and_inverted_pixel_maps():
    masks = np.zeros((2, 5, 5), dtype=bool)
    masks[0, 1:3, 1:3] = True
    masks[1, 4, 0] = True
    maps = masks + np.linspace(0, 0.5, 50).reshape(2, 5, 5)
    assert pixel_auroc(masks, maps) == 1.0
    assert pixel_auroc(masks, -maps) == 0.0
    assert pixel_ap(masks, maps) == 1.0
    assert aupro(masks, maps) == pytest.approx(1.0)
    assert aupro(masks, -maps) == 0.0


# ---------------------------------------------------------------- AUPRO


def test_aupro_hand_worked():
    # Regions (8-connected): A = {(0,0), (1,1)} (touching diagonally), B = {(3,3)}; 13 normal pixels.
    # A pixel adds 1/(2*2) = 1/4 to PRO, the B pixel 1/(1*2) = 1/2; a normal pixel adds 1/13 to FPR.
    mask = np.zeros((4, 4), dtype=bool)
    mask[0, 0] = mask[1, 1] = mask[3, 3] = True
    heat = np.full((4, 4), 0.1)  # 9 normal pixels at 0.1
    heat[0, 0], heat[1, 1], heat[3, 3] = 0.9, 0.5, 0.7  # A, A, B
    heat[0, 3], heat[1, 3], heat[2, 0], heat[3, 0] = 0.8, 0.7, 0.6, 0.5  # normal
    # threshold  PRO   FPR      segment from the previous point and its area
    # 0.9        1/4   0        vertical from (0, 0): 0
    # 0.8        1/4   1/13     1/13 * 1/4                    = 1/52
    # 0.7        3/4   2/13     1/13 * (1/4 + 3/4) / 2        = 1/26   (B ties a normal pixel)
    # 0.6        3/4   3/13     1/13 * 3/4                    = 3/52
    # 0.5        1     4/13     cut at FPR 3/10 = 3.9/13: width 9/130, PRO there 3/4 + 1/4 * 9/10 = 39/40,
    #                           area 9/130 * (3/4 + 39/40) / 2 = 621/10400   (A's second pixel ties a normal one)
    area = Fraction(1, 52) + Fraction(1, 26) + Fraction(3, 52) + Fraction(621, 10400)
    expected = area / Fraction(3, 10)
    assert expected == Fraction(607, 1040)
    assert aupro(mask[None], heat[None], fpr_limit=0.3) == pytest.approx(float(expected), abs=1e-12)
    # With 4-connectivity A would be two regions of 1/3 each and the value would differ.
    assert aupro(mask[None], heat[None]) == pytest.approx(aupro_by_thresholds(mask[None], heat[None], 0.3))


@pytest.mark.parametrize("limit", [0.05, 0.3, 1.0])
@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("seed", range(4))
def test_aupro_matches_brute_force(seed, tied, limit):
    masks, maps = random_maps(seed, tied)
    masks[2] = False  # a good image: only normal pixels
    assert aupro(masks, maps, fpr_limit=limit) == pytest.approx(aupro_by_thresholds(masks, maps, limit), abs=1e-12)


def test_aupro_random_maps_follow_the_diagonal():
    # Scores independent of the masks: PRO(t) ~ FPR(t), so the normalised area is ~ limit / 2.
    rng = np.random.default_rng(0)
    masks = np.zeros((20, 32, 32), dtype=bool)
    masks[:, 8:24, 8:24] = True
    assert aupro(masks, rng.random(masks.shape), fpr_limit=0.3) == pytest.approx(0.15, abs=0.01)


def test_none_masks_are_defect_free_images():
    masks, maps = random_maps(1, tied=False)
    with_none = [masks[0], None, masks[2]]
    masks[1] = False
    assert aupro(with_none, maps) == aupro(masks, maps)
    assert pixel_auroc(with_none, maps) == pixel_auroc(masks, maps)


# ---------------------------------------------------------------- inputs: torch, numpy, evaluate


def test_torch_and_numpy_inputs_agree():
    labels, scores = random_case(3, 3, tied=False)
    masks, maps = random_maps(3, tied=False)
    from_numpy = evaluate(labels, scores, masks, maps)
    from_torch = evaluate(
        torch.from_numpy(labels),
        torch.from_numpy(scores).requires_grad_(),
        torch.from_numpy(masks).to(torch.uint8),
        torch.from_numpy(maps),
    )
    assert from_torch == pytest.approx(from_numpy, abs=1e-12)
    half = torch.from_numpy(maps).to(torch.bfloat16)
    assert pixel_auroc(torch.from_numpy(masks), half) == pixel_auroc(masks, half.float().numpy())


def test_evaluate_returns_every_metric():
    labels, scores = random_case(4, 3, tied=False)
    masks, maps = random_maps(4, tied=False)
    assert evaluate(labels, scores) == {
        "image_auroc": image_auroc(labels, scores),
        "image_ap": image_ap(labels, scores),
        "image_f1_max": f1_max(labels, scores)[0],
    }
    result = evaluate(labels, scores, masks=list(masks), maps=maps)
    assert result["pixel_auroc"] == pixel_auroc(masks, maps)
    assert result["pixel_ap"] == pixel_ap(masks, maps)
    assert result["aupro"] == aupro(masks, maps)


# ---------------------------------------------------------------- errors


def test_metric_error_is_a_value_error():
    assert issubclass(MetricError, ValueError)


@pytest.mark.parametrize("metric", [image_auroc, image_ap, f1_max])
def test_image_input_errors(metric):
    with pytest.raises(MetricError, match=r"labels shape \(3,\) does not match scores shape \(4,\)"):
        metric([0, 1, 1], [0.1, 0.2, 0.3, 0.4])
    with pytest.raises(MetricError, match="NaN"):
        metric([0, 1, 1], [0.1, np.nan, 0.3])
    with pytest.raises(MetricError, match="only one class"):
        metric([1, 1, 1], [0.1, 0.2, 0.3])
    with pytest.raises(MetricError, match="only one class"):
        metric(torch.zeros(3), torch.rand(3))
    with pytest.raises(MetricError, match=r"0/1.*\[2\]"):
        metric([0, 1, 2], [0.1, 0.2, 0.3])
    with pytest.raises(MetricError, match="one-dimensional"):
        metric([[0, 1]], [[0.1, 0.2]])
    with pytest.raises(MetricError, match="real numbers"):
        metric([0, 1], ["a", "b"])
    with pytest.raises(MetricError, match="empty"):
        metric([], [])


@pytest.mark.parametrize("metric", [pixel_auroc, pixel_ap, aupro])
def test_pixel_input_errors(metric):
    masks, maps = random_maps(0, tied=False)
    with pytest.raises(MetricError, match=r"masks shape \(3, 7, 7\) does not match maps shape \(3, 4, 4\)"):
        metric(masks, maps[:, :4, :4])
    with pytest.raises(MetricError, match=r"masks\[1\] shape \(4, 4\).*resize"):
        metric([masks[0], masks[1, :4, :4], None], maps)
    with pytest.raises(MetricError, match="got 2 masks for 3 maps"):
        metric([masks[0], None], maps)
    with pytest.raises(MetricError, match=r"binarize"):
        metric(masks.astype(np.uint8) * 255, maps)
    with pytest.raises(MetricError, match="NaN"):
        metric(masks, np.where(masks, np.nan, maps))
    with pytest.raises(MetricError, match=r"\(N, H, W\)"):
        metric(masks[0], maps[0])
    with pytest.raises(MetricError):
        metric(np.zeros_like(masks), maps)  # no defect pixel at all
    with pytest.raises(MetricError):
        metric(np.ones_like(masks), maps)  # no normal pixel at all


def test_aupro_specific_errors():
    masks, maps = random_maps(0, tied=False)
    with pytest.raises(MetricError, match="no defect"):
        aupro(np.zeros_like(masks), maps)
    with pytest.raises(MetricError, match="normal pixels"):
        aupro(np.ones_like(masks), maps)
    for limit in (0.0, 1.5, float("nan")):
        with pytest.raises(MetricError, match="fpr_limit"):
            aupro(masks, maps, fpr_limit=limit)


def test_evaluate_errors():
    labels, scores = random_case(0, 3, tied=False)
    masks, maps = random_maps(0, tied=False)
    with pytest.raises(MetricError, match="without maps"):
        evaluate(labels, scores, masks=masks)
    with pytest.raises(MetricError, match="got 3 maps for 4 labels"):
        evaluate([0, 1, 0, 1], [0.1, 0.2, 0.3, 0.4], masks, maps)


def test_roc_curve_by_hand_and_its_area_is_the_auroc():
    from lineguard.metrics import roc_curve

    fpr, tpr = roc_curve([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    corners = sorted(set(zip(fpr.tolist(), tpr.tolist(), strict=True)))
    assert corners == [(0.0, 0.0), (0.0, 0.5), (0.5, 0.5), (0.5, 1.0), (1.0, 1.0)]
    rng = np.random.default_rng(0)
    labels, scores = rng.integers(0, 2, 200), rng.integers(0, 20, 200).astype(float)  # many ties
    fpr, tpr = roc_curve(labels, scores)
    assert np.trapezoid(tpr, fpr) == pytest.approx(image_auroc(labels, scores))
