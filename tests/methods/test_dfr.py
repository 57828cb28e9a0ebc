"""DFR: the 1 × 1 autoencoder's shape and locality, feature standardisation, max-of-map scores."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lineguard.features.patches import flatten_patches
from lineguard.methods.dfr import DFR, pointwise_autoencoder

TINY = {"image_size": 64, "latent": 4, "epochs": 2, "patch_batch_size": 64}


def test_autoencoder_widths_follow_dfr():
    convs = [m for m in pointwise_autoencoder(100, 10) if isinstance(m, nn.Conv2d)]
    widths = [(c.in_channels, c.out_channels) for c in convs]
    assert widths == [(100, 60), (60, 20), (20, 10), (10, 20), (20, 60), (60, 100)]
    assert all(c.kernel_size == (1, 1) for c in convs)


def test_each_location_is_reconstructed_on_its_own():
    torch.manual_seed(0)  # a random init can leave every ReLU on the changed path dead
    network = pointwise_autoencoder(8, 4).eval()
    x = torch.randn(1, 8, 5, 5)
    changed = x.clone()
    changed[0, :, 2, 3] += 5.0
    moved = (network(changed) - network(x)).abs().sum(dim=1)[0]  # (5, 5)
    assert moved[2, 3] > 0 and moved.sum() == moved[2, 3]


@pytest.fixture(scope="module")
def fitted():
    images = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    return DFR(**TINY).fit(images), images


def test_standardisation_uses_the_normal_patches(fitted):
    detector, images = fitted
    vectors = flatten_patches(detector.extractor(images))  # brute force: every normal patch feature
    assert torch.allclose(detector.mean_, vectors.mean(0), atol=1e-5)
    assert torch.allclose(detector.std_, vectors.std(0), atol=1e-5)
    standardized = flatten_patches(detector.standardized(detector.extractor(images)))
    assert torch.allclose(standardized.mean(0), torch.zeros(len(detector.mean_)), atol=1e-4)


def test_scores_are_the_largest_reconstruction_error(fitted):
    detector, images = fitted
    x = detector.standardized(detector.extractor(images[:2]))
    errors = (detector.network(x) - x).pow(2).mean(dim=1)  # (2, h, w)
    assert torch.allclose(detector.predict(images[:2]).scores, errors.flatten(1).amax(1))


def test_bad_latent_is_a_clear_error():
    with pytest.raises(ValueError, match="latent"):
        DFR(**{**TINY, "latent": 0}).fit(torch.rand(2, 3, 64, 64))
