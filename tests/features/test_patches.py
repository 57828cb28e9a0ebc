import pytest
import torch

from lineguard.features.patches import (aggregate_neighbourhood, align_levels, flatten_patches, patch_features,
                                        reduce_channels)


def test_neighbourhood_mean_by_hand():
    x = torch.arange(9.0).view(1, 1, 3, 3)
    out = aggregate_neighbourhood(x, 3)
    assert out[0, 0, 1, 1] == pytest.approx(4.0)  # mean of 0..8
    assert out[0, 0, 0, 0] == pytest.approx((0 + 1 + 3 + 4) / 9)  # zero padding counts
    assert torch.equal(aggregate_neighbourhood(x, 1), x)


@pytest.mark.parametrize("radius", [0, 2, -1])
def test_bad_radius(radius):
    with pytest.raises(ValueError, match="odd"):
        aggregate_neighbourhood(torch.zeros(1, 1, 4, 4), radius)


def test_align_levels_to_finest_grid():
    fine, coarse = torch.randn(2, 4, 8, 8), torch.ones(2, 6, 4, 4)
    out = align_levels([fine, coarse])
    assert out.shape == (2, 10, 8, 8)
    assert torch.equal(out[:, :4], fine)
    assert torch.allclose(out[:, 4:], torch.ones(2, 6, 8, 8))


def test_reduce_channels_averages_adjacent_channels():
    x = torch.arange(4.0).view(1, 4, 1, 1).expand(1, 4, 2, 2)
    out = reduce_channels(x, 2)
    assert out.shape == (1, 2, 2, 2)
    assert out[0, :, 0, 0].tolist() == [0.5, 2.5]
    assert reduce_channels(x, 8) is x


def test_patch_features_and_flatten_order():
    maps = [torch.randn(2, 3, 8, 8), torch.randn(2, 5, 4, 4)]
    feats = patch_features(maps, patch_size=3, reduce_dim=4)
    assert feats.shape == (2, 4, 8, 8)
    flat = flatten_patches(feats)
    assert flat.shape == (128, 4)
    assert torch.equal(flat[64 + 8 * 2 + 3], feats[1, :, 2, 3])  # image 1, row 2, column 3
