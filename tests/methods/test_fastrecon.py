import numpy as np
import pytest
import torch

import lineguard
from lineguard.methods.fastrecon import reconstruction_weights
from lineguard.metrics import image_auroc
from tests.conftest import SIZE


def test_weights_match_a_direct_numpy_solve_of_the_formula():
    rng = np.random.default_rng(0)
    q, s, mu = rng.normal(size=(2, 5, 8)), rng.normal(size=(3, 8)), rng.normal(size=(5, 8))
    lam = 2.0
    expected = (q @ s.T + lam * mu @ s.T) @ np.linalg.inv((1 + lam) * s @ s.T)  # (2, 5, 3)
    got = reconstruction_weights(torch.from_numpy(q), torch.from_numpy(s), torch.from_numpy(mu), lam, ridge=0.0)
    assert got.shape == (2, 5, 3)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-9, atol=1e-12)


def test_weights_minimise_the_regularised_reconstruction_error():
    # the normal equations of ‖Q − W S‖² + λ‖μ − W S‖²: (W S − Q) Sᵀ + λ (W S − μ) Sᵀ = 0
    rng = np.random.default_rng(1)
    q, s, mu = (torch.from_numpy(rng.normal(size=shape)) for shape in ((1, 6, 10), (4, 10), (6, 10)))
    w = reconstruction_weights(q, s, mu, 0.5, ridge=0.0)
    gradient = (w @ s - q) @ s.T + 0.5 * (w @ s - mu) @ s.T
    assert gradient.abs().max() < 1e-9


def test_a_singular_support_is_solved_thanks_to_the_ridge():
    s = torch.ones(3, 4, dtype=torch.float64)  # rank 1: S Sᵀ is singular
    w = reconstruction_weights(torch.ones(1, 2, 4, dtype=torch.float64), s, torch.ones(2, 4), 2.0, ridge=1e-6)
    assert torch.isfinite(w).all()
    assert torch.allclose(w @ s, torch.ones(1, 2, 4, dtype=torch.float64), atol=1e-5)


def test_query_equal_to_the_support_image_is_reconstructed_almost_exactly(parts):
    image = parts[0][:1]
    detector = lineguard.create("fastrecon", image_size=64, weights="random", coreset_ratio=1.0,
                                max_support=10_000, sigma=0.0).fit(image)
    maps = detector.predict(image).maps
    scale = detector.extractor(image).norm(dim=1).mean()  # typical patch feature norm
    assert maps.abs().max() < 1e-3 * scale


def test_support_is_a_small_coreset_and_mean_is_per_position(parts):
    support = parts[0][:3]
    detector = lineguard.create("fastrecon", image_size=64, weights="random", coreset_ratio=0.05,
                                max_support=7).fit(support)
    feats = detector.extractor(support)  # (3, D, 8, 8)
    assert detector.support_.shape == (7, feats.shape[1])  # max_support caps it
    assert torch.allclose(detector.mean_, feats.mean(0).flatten(1).T, atol=1e-6)


def test_support_spans_the_feature_space_when_the_ratio_alone_would_not(parts):
    support = parts[0][:3]  # 3 · 64 = 192 patches: 5 % would be 9 rows, far fewer than D
    detector = lineguard.create("fastrecon", image_size=64, weights="random", coreset_ratio=0.05).fit(support)
    dim = detector.support_.shape[1]
    assert detector.support_.shape[0] == min(dim, 192)


@pytest.mark.slow
@pytest.mark.parametrize("shots", [1, 4])
def test_finds_planted_defects_with_few_support_images(parts, shots):
    support, test, labels, _ = parts
    result = lineguard.create("fastrecon", image_size=SIZE).fit(support[:shots]).predict(test)
    assert image_auroc(labels, result.scores) >= 0.9


@pytest.mark.parametrize(("params", "message"), [
    (dict(lam=-1.0), "lam"), (dict(max_support=0), "max_support"), (dict(coreset_ratio=2.0), "coreset_ratio")])
def test_bad_parameters_fail_before_any_feature_is_extracted(params, message):
    with pytest.raises(ValueError, match=message):
        lineguard.create("fastrecon", backbone="no-such-backbone", **params).fit(torch.zeros(1, 3, 64, 64))
