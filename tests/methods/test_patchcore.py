import math

import pytest
import torch

from lineguard.features.patches import flatten_patches
from lineguard.memory.coreset import coreset_size
from lineguard.memory.knn import NearestNeighbours
from lineguard.methods.patchcore import PatchCore
from lineguard.scoring.image import reweight, reweighted_max
from tests.conftest import SIZE

# bank m0 = (0, 0), m1 = (1, 0), m2 = (0, 3); one image with patches q0 = (0, 1) and q1 = (0.5, 0).
# q0 scores 1 (nearest m0) and q1 0.5, so m_test* = q0, m* = m0, and N_b(m0) = m0, m1, m2 in that order.
BANK = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 3.0]])
QUERIES = torch.tensor([[[0.0, 1.0], [0.5, 0.0]]])  # (B=1, N=2, D=2)


def image_score(b: int) -> float:
    index = NearestNeighbours(BANK, backend="torch")
    dist, nearest = index.search(QUERIES[0], k=1)
    return reweighted_max(QUERIES, dist.view(1, 2), nearest.view(1, 2), BANK, index, b).item()


def test_reweighting_against_hand_computed_values():
    # distances of q0 to N_b(m0): 1 (m0), √2 (m1), 2 (m2); w = 1 − e^s* / Σ e^d, s* = 1
    assert image_score(2) == pytest.approx(1 - math.e / (math.e + math.exp(math.sqrt(2))), rel=1e-6)
    three = math.e + math.exp(math.sqrt(2)) + math.exp(2)
    assert image_score(3) == pytest.approx(1 - math.e / three, rel=1e-6)
    assert image_score(1) == pytest.approx(1.0)  # b = 1: the plain maximum


def test_reweighting_is_stable_for_large_distances():
    score = reweight(torch.tensor([1000.0]), torch.tensor([[1000.0, 1001.0]]))
    assert score.item() == pytest.approx(1000 * (1 - 1 / (1 + math.e)), rel=1e-4)  # float32 at 1000
    with pytest.raises(ValueError, match=r"\(B, b\)"):
        reweight(torch.tensor([1.0, 2.0]), torch.tensor([[1.0]]))


@pytest.fixture(scope="module")
def fitted(parts):
    support, test, _, _ = parts
    detector = PatchCore(image_size=SIZE, coreset_ratio=0.25).fit(support)
    return detector, detector.predict(test)


def test_bank_is_a_coreset_of_the_normal_patches(fitted, parts):
    detector, _ = fitted
    patches = flatten_patches(detector.extractor(parts[0]))  # (12 · 16 · 16, D)
    assert detector.memory_bank_.shape == (coreset_size(len(patches), 0.25), patches.shape[1])
    distances = torch.cdist(detector.memory_bank_.double(), patches.double(),
                            compute_mode="donot_use_mm_for_euclid_dist")  # exact, no ‖a‖² − 2ab + ‖b‖²
    assert distances.min(dim=1).values.max() < 1e-5  # every bank row is one of the normal patches


def test_reweighted_scores_lie_within_one_b_th_below_the_plain_maximum(fitted, parts):
    # every other neighbour of m* is at least s* away from m_test* (m* is its nearest), so w ∈ [1 − 1/b, 1)
    detector, result = fitted
    plain = PatchCore(**{**detector.get_params(), "reweight_neighbours": 1})
    plain.memory_bank_ = detector.memory_bank_
    maximum = plain.predict(parts[1]).scores
    assert torch.all(result.scores >= (1 - 1 / 9) * maximum)
    assert torch.all(result.scores <= maximum * (1 + 1e-4))  # s* is recomputed exactly, the search is not


def test_exact_backends_agree(fitted, parts):
    detector, result = fitted
    other = PatchCore(**{**detector.get_params(), "search": "torch"})
    other.memory_bank_ = detector.memory_bank_
    again = other.predict(parts[1])
    assert torch.allclose(again.scores, result.scores, rtol=1e-4)
    assert torch.allclose(again.maps, result.maps, rtol=1e-3, atol=1e-3)


def test_channel_reduction(parts):
    detector = PatchCore(image_size=SIZE, reduce_dim=32, coreset_ratio=0.05).fit(parts[0][:4])
    assert detector.memory_bank_.shape[1] == 32
    assert detector.predict(parts[1][:2]).maps.shape == (2, SIZE, SIZE)


@pytest.mark.parametrize(("param", "value", "message"), [
    ("coreset_ratio", 0.0, "ratio"), ("coreset_ratio", 1.5, "ratio"),
    ("reweight_neighbours", 0, "parameter reweight_neighbours must be at least 1"),
    ("reduce_dim", 0, "reduce_dim"), ("projection_dim", 0, "projection_dim"),
    ("search", "annoy", "search must be"),
])
def test_bad_params_raise_at_fit(parts, param, value, message):
    detector = PatchCore(image_size=SIZE, **{param: value})  # constructing never fails
    with pytest.raises(ValueError, match=message):
        detector.fit(parts[0][:2])
