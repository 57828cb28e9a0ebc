"""Convolutional autoencoder: shapes, the error map by hand, mean-of-map scores, the μ + 3σ threshold."""

from __future__ import annotations

import pytest
import torch

from lineguard.methods.autoencoder import Autoencoder, ConvAutoencoder, holdout_split, squared_error_maps

TINY = {"image_size": 32, "channels": [4, 8], "latent": 4, "epochs": 2, "batch_size": 4}


def test_network_keeps_the_image_shape_and_range():
    network = ConvAutoencoder([4, 8, 16], latent=2).eval()
    out = network(torch.rand(2, 3, 64, 48))
    assert out.shape == (2, 3, 64, 48) and 0 <= out.min() and out.max() <= 1
    assert network.encoder(torch.rand(1, 3, 64, 48)).shape == (1, 2, 8, 6)  # three halvings, 2 channels


def test_error_map_by_hand():
    images = torch.zeros(1, 3, 2, 2)
    reconstructions = images.clone()
    reconstructions[0, 0, 1, 0] = 0.3  # one channel of one pixel off by 0.3
    reconstructions[0, :, 0, 1] = 0.1  # all channels of another off by 0.1
    expected = torch.tensor([[[0.0, 0.01], [0.09 / 3, 0.0]]])
    assert torch.allclose(squared_error_maps(images, reconstructions), expected)


def test_score_is_the_mean_of_the_map():
    images = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    result = Autoencoder(**TINY, sigma=0).fit(images).predict(images[:3])
    assert result.maps.shape == (3, 32, 32)
    assert torch.allclose(result.scores, result.maps.mean(dim=(1, 2)))


def test_holdout_split_is_disjoint_and_seeded():
    held, kept = holdout_split(10, 0.25, seed=3)
    assert len(held) == 2 and len(kept) == 8  # round(2.5) = 2
    assert sorted(torch.cat([held, kept]).tolist()) == list(range(10))
    assert torch.equal(holdout_split(10, 0.25, seed=3)[0], held)


def test_default_threshold_is_mean_plus_three_sigma_of_held_out_images():
    images = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    detector = Autoencoder(**TINY, holdout=0.5).fit(images)
    held, _ = holdout_split(8, 0.5, seed=detector.seed)
    scores = detector.predict(images[held]).scores.double()
    expected = scores.mean() + 3 * scores.std()  # sample standard deviation
    assert detector.thresholds.image_threshold == pytest.approx(expected.item(), rel=1e-6)
    assert Autoencoder(**TINY, holdout=0.0).fit(images).thresholds is None  # nothing held out: no threshold


def test_bad_settings_are_clear_errors():
    images = torch.rand(4, 3, 32, 32)
    with pytest.raises(ValueError, match="multiple of 4"):
        Autoencoder(**{**TINY, "image_size": 30}).fit(images)
    with pytest.raises(ValueError, match="holdout"):
        Autoencoder(**TINY, holdout=1.0).fit(images)
