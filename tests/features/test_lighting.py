import torch

from lineguard.features.lighting import lighting, match_lighting


def test_lighting_is_each_images_mean_and_standard_deviation():
    images = torch.zeros(2, 3, 2, 2)
    images[0, :, 0] = 1.0  # half the pixels white: mean 0.5, standard deviation sqrt(12 · 0.25 / 11)
    images[1] = 0.3
    expected = torch.tensor([[0.5, (12 * 0.25 / 11) ** 0.5], [0.3, 0.0]])
    assert torch.allclose(lighting(images), expected)


def test_matched_images_take_the_reference_lighting_and_keep_their_colour_differences():
    g = torch.Generator().manual_seed(0)
    images = 0.2 + 0.3 * torch.rand(3, 3, 16, 16, generator=g)
    images[:, 0] += 0.1  # a red cast
    reference = torch.tensor([0.45, 0.05])
    matched = match_lighting(images, reference)
    assert torch.allclose(lighting(matched), reference.expand(3, 2), atol=1e-5)
    gain = reference[1] / lighting(images)[:, 1]  # one gain for all three channels
    cast = images[:, 0].mean((1, 2)) - images[:, 1].mean((1, 2))
    assert torch.allclose(matched[:, 0].mean((1, 2)) - matched[:, 1].mean((1, 2)), cast * gain, atol=1e-5)


def test_flat_images_and_clipping():
    flat = torch.full((1, 3, 4, 4), 0.7)
    assert torch.allclose(match_lighting(flat, torch.tensor([0.4, 0.2])), torch.full_like(flat, 0.4))
    spread = torch.tensor([0.0, 1.0]).repeat(24).view(1, 3, 4, 4)
    matched = match_lighting(spread, torch.tensor([0.9, 0.5]))
    assert matched.min() >= 0 and matched.max() == 1.0  # 0.9 + 0.5 · 1.02 clipped
