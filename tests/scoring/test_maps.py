import pytest
import torch

from lineguard.scoring.image import max_score, top_k_mean
from lineguard.scoring.maps import anomaly_maps, gaussian_blur, gaussian_kernel1d, upsample


def test_kernel_sums_to_one_with_4_sigma_radius():
    k = gaussian_kernel1d(4.0)
    assert k.numel() == 2 * 16 + 1
    assert k.sum().item() == pytest.approx(1.0)
    assert k.argmax().item() == 16


def test_blur_keeps_mass_and_constant_maps():
    impulse = torch.zeros(1, 64, 64)
    impulse[0, 32, 32] = 1
    blurred = gaussian_blur(impulse, 2.0)
    assert blurred.sum().item() == pytest.approx(1.0, abs=1e-5)
    assert blurred[0, 32, 32] == blurred.max()
    assert torch.allclose(gaussian_blur(torch.full((2, 10, 10), 3.0), 4.0), torch.full((2, 10, 10), 3.0))


def test_anomaly_map_peak_follows_the_hot_patch():
    grid = torch.zeros(1, 8, 8)
    grid[0, 2, 5] = 1
    maps = anomaly_maps(grid, (64, 64))
    y, x = divmod(maps[0].argmax().item(), 64)
    assert 16 <= y < 24 and 40 <= x < 48  # inside patch (2, 5) of an 8-pixel grid


@pytest.mark.parametrize(("grid", "size", "sigma"), [((8, 8), (64, 64), 4.0), ((32, 16), (256, 128), 4.0),
                                                     ((5, 7), (40, 56), 0.0), ((4, 4), (12, 12), 4.0)])
def test_anomaly_maps_equal_upsampling_then_blurring(grid, size, sigma):
    scores = torch.rand(3, *grid, generator=torch.Generator().manual_seed(0))
    expected = gaussian_blur(upsample(scores, size), sigma)  # the two steps, pixel by pixel
    assert torch.allclose(anomaly_maps(scores, size, sigma), expected, atol=1e-5)


def test_image_scores():
    s = torch.tensor([[[1.0, 5.0], [3.0, 2.0]]])
    assert max_score(s).tolist() == [5.0]
    assert top_k_mean(s, 2).tolist() == [4.0]
    assert top_k_mean(s, 10).tolist() == [2.75]
