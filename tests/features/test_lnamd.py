import pytest
import torch

from lineguard.features.lnamd import as_patch_rows, layer_normalise, lnamd


def test_layer_normalise_scales_each_image_as_a_whole():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 4, 5, generator=g) * torch.tensor([1.0, 10.0]).view(2, 1, 1, 1) + 7
    y = layer_normalise(x)
    flat = y.flatten(1)
    assert torch.allclose(flat.mean(1), torch.zeros(2), atol=1e-5)
    assert torch.allclose(flat.var(1, unbiased=False), torch.ones(2), atol=1e-3)
    # one image's normalisation does not depend on the other's values
    assert torch.allclose(layer_normalise(x[:1]), y[:1])


def test_views_are_unit_length_neighbourhood_means_of_normalised_maps():
    g = torch.Generator().manual_seed(1)
    level = torch.randn(1, 2, 4, 4, generator=g)
    r1, r3 = lnamd([level], radii=(1, 3))[0]
    ln = layer_normalise(level)
    assert torch.allclose(r1, ln / ln.norm(dim=1, keepdim=True), atol=1e-6)
    # brute force: each cell averages its 3 x 3 window, cells outside the map count as zeros
    padded = torch.nn.functional.pad(ln, (1, 1, 1, 1))
    mean = torch.stack([padded[..., y:y + 3, x:x + 3].sum((-2, -1)) / 9 for y in range(4) for x in range(4)], -1)
    mean = mean.view(1, 2, 4, 4)
    assert torch.allclose(r3, mean / mean.norm(dim=1, keepdim=True), atol=1e-6)
    assert torch.allclose(r3.norm(dim=1), torch.ones(1, 4, 4), atol=1e-6)


def test_levels_keep_their_own_grids_and_rows_are_image_major():
    views = lnamd([torch.rand(2, 3, 8, 8), torch.rand(2, 5, 4, 4)], radii=(1, 3, 5))
    assert [[tuple(v.shape) for v in level] for level in views] == [[(2, 3, 8, 8)] * 3, [(2, 5, 4, 4)] * 3]
    rows = as_patch_rows(views[1][0])
    assert rows.shape == (2, 16, 5)
    assert torch.equal(rows[1, 4 * 2 + 3], views[1][0][1, :, 2, 3])


def test_radii_must_be_given():
    with pytest.raises(ValueError, match="at least one"):
        lnamd([torch.rand(1, 2, 4, 4)], radii=())
