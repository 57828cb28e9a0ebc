import numpy as np
import pytest
import torch
from sklearn.covariance import ledoit_wolf as sklearn_ledoit_wolf

from lineguard.methods import padim
from lineguard.methods.padim import (PaDiM, ledoit_wolf, mahalanobis, padim_levels, sample_covariance,
                                    stack_levels)
from tests.conftest import SIZE


def test_ledoit_wolf_matches_scikit_learn():
    x = torch.randn(3, 7, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)  # 3 groups
    ours = ledoit_wolf(x)
    for group, cov in zip(x.numpy(), ours.numpy(), strict=True):
        reference, _ = sklearn_ledoit_wolf(group)
        np.testing.assert_allclose(cov, reference, rtol=1e-10, atol=1e-12)


def test_ledoit_wolf_of_one_sample_is_zero():
    one_sample = torch.ones(2, 1, 3, dtype=torch.float64)
    assert torch.equal(ledoit_wolf(one_sample), torch.zeros(2, 3, 3, dtype=torch.float64))


def test_sample_covariance_matches_numpy():
    x = torch.randn(2, 6, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    for group, cov in zip(x.numpy(), sample_covariance(x).numpy(), strict=True):
        np.testing.assert_allclose(cov, np.cov(group, rowvar=False), rtol=1e-12)
    assert torch.equal(sample_covariance(torch.ones(1, 1, 2)), torch.zeros(1, 2, 2))  # one sample


def test_deeper_levels_are_repeated_onto_the_finest_grid():
    fine = torch.arange(16.0).view(1, 1, 4, 4)
    coarse = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    stacked = stack_levels([fine, coarse])
    assert stacked.shape == (1, 2, 4, 4)
    assert torch.equal(stacked[0, 0], fine[0, 0])
    repeated = torch.tensor([[1.0, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]])
    assert torch.equal(stacked[0, 1], repeated)


def test_mahalanobis_matches_numpy():
    rng = np.random.default_rng(1)
    b, d, p = 2, 3, 4
    feats, means = rng.normal(size=(b, d, p)), rng.normal(size=(p, d))
    factors = rng.normal(size=(p, d, d))
    covariances = factors @ factors.transpose(0, 2, 1) + np.eye(d)
    precisions = np.linalg.inv(covariances)
    ours = mahalanobis(torch.from_numpy(feats), torch.from_numpy(means), torch.from_numpy(precisions))
    for i in range(b):
        for j in range(p):
            diff = feats[i, :, j] - means[j]
            assert ours[i, j].item() == pytest.approx(np.sqrt(diff @ precisions[j] @ diff), rel=1e-10)


def test_default_levels_are_strides_4_8_16():
    assert padim_levels("effnet-lite0") == (1, 2, 3)
    assert padim_levels("convnext_tiny") == (0, 1, 2)
    assert padim_levels("clip-vit-b16") is None  # no such strides: the backbone's own defaults
    assert PaDiM(levels=[2, 3]).feature_levels() == [2, 3]


@pytest.fixture(scope="module")
def fitted(parts):
    return PaDiM(image_size=SIZE, n_features=40, seed=3).fit(parts[0])


def test_state_shapes_and_seeded_channels(fitted):
    # Lite0 levels 1–3 have 24 + 40 + 112 channels; the grid is the stride-4 level's, 32 × 32 at 128 px
    assert fitted.mean_.shape == (32 * 32, 40) and fitted.precision_.shape == (32 * 32, 40, 40)
    assert fitted.precision_.dtype == torch.float32
    channels = fitted.channels_
    assert torch.equal(channels, channels.unique()) and channels.max() < 176
    expected = torch.randperm(176, generator=torch.Generator().manual_seed(3))[:40].sort().values
    assert torch.equal(channels, expected)


def test_precision_inverts_the_shrunk_covariance(fitted, parts):
    # at one position, rebuild the covariance from the features and compare with the stored precision
    feats = stack_levels(fitted.extractor.levels_of(parts[0])).flatten(2)[:, fitted.channels_]  # (12, 40, P)
    x = feats[:, :, 100].double()[None]  # (1, 12, 40)
    covariance = sample_covariance(x)[0] + fitted.eps * torch.eye(40, dtype=torch.float64)
    identity = covariance @ fitted.precision_[100].double()
    assert torch.allclose(identity, torch.eye(40, dtype=torch.float64), atol=1e-3)
    assert torch.allclose(fitted.mean_[100], x[0].mean(0).float(), atol=1e-5)


@pytest.mark.parametrize("shrinkage", ["none", "ledoit-wolf"])
def test_a_single_image_gives_scaled_euclidean_distances(parts, shrinkage):
    detector = PaDiM(image_size=SIZE, n_features=20, shrinkage=shrinkage).fit(parts[0][:1])
    feats = stack_levels(detector.extractor.levels_of(parts[1][:2])).flatten(2)[:, detector.channels_]
    # one image: the covariance is eps · I, so the distance is the Euclidean one over √eps
    expected = (feats - detector.mean_.T).norm(dim=1) / detector.eps ** 0.5  # (2, P)
    assert torch.allclose(mahalanobis(feats, detector.mean_, detector.precision_), expected, rtol=1e-3)


def test_too_many_channels_is_a_clear_error(parts, monkeypatch):
    monkeypatch.setattr(padim, "_MAX_PRECISION_BYTES", 1e6)
    with pytest.raises(ValueError, match="GB of precision matrices: set n_features"):
        PaDiM(image_size=SIZE).fit(parts[0][:1])


@pytest.mark.parametrize(("param", "value", "message"), [
    ("n_features", 0, "n_features must be at least 1"), ("n_features", 500, "only 176 channels"),
    ("eps", -1.0, "eps"), ("shrinkage", "oas", "shrinkage must be one of"),
])
def test_bad_params_raise_at_fit(parts, param, value, message):
    with pytest.raises(ValueError, match=message):
        PaDiM(image_size=SIZE, **{param: value}).fit(parts[0][:2])
