import pytest
import torch

from lineguard.features.augment import (AugmentationError, Augmentations, adjust_brightness, adjust_contrast,
                                        grayscale, hflip, rotate, translate, vflip, zoom)

LUMA = (0.2989, 0.587, 0.114)  # ITU-R 601, as torchvision weighs the channels


def images(n: int = 2, size: int = 12, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_flips_are_torch_flip():
    x = images()
    assert torch.equal(hflip(x), torch.flip(x, dims=[-1]))
    assert torch.equal(vflip(x), torch.flip(x, dims=[-2]))


def test_grayscale_gives_equal_channels_of_luma():
    x = torch.tensor([0.2, 0.6, 1.0]).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    out = grayscale(x)
    assert out.shape == x.shape
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 1], out[:, 2])
    luma = LUMA[0] * 0.2 + LUMA[1] * 0.6 + LUMA[2] * 1.0
    assert out[0, 0, 0, 0].item() == pytest.approx(luma, abs=1e-6)


@pytest.mark.parametrize(("dx", "dy"), [(3, -2), (-4, 5), (0, 1), (0, 0)])
def test_translation_moves_content_by_the_given_pixels(dx, dy):
    x = images(size=16)
    out = translate(x, dx, dy)
    assert out.shape == x.shape
    h, w = x.shape[-2:]
    # out[y, x] = in[y - dy, x - dx] wherever the source pixel exists
    ys, xs = slice(max(dy, 0), h + min(dy, 0)), slice(max(dx, 0), w + min(dx, 0))
    src_ys, src_xs = slice(max(-dy, 0), h + min(-dy, 0)), slice(max(-dx, 0), w + min(-dx, 0))
    assert torch.equal(out[..., ys, xs], x[..., src_ys, src_xs])


def test_translation_fills_the_border_by_reflection():
    x = images(size=16)
    out = translate(x, 3, 0)
    assert torch.equal(out[..., 0], x[..., 3])  # padded columns mirror columns 3, 2, 1 around column 0
    assert torch.equal(out[..., 2], x[..., 1])


def test_translation_out_of_the_image_is_an_error():
    with pytest.raises(AugmentationError, match=r"shift \(16, 0\)"):
        translate(images(size=16), 16, 0)


def test_rotation_by_right_angles_matches_rot90():
    x = images(size=16)
    assert torch.allclose(rotate(x, 90.0), torch.rot90(x, 1, dims=(-2, -1)), atol=1e-6)
    assert torch.allclose(rotate(x, 180.0), torch.flip(x, dims=[-2, -1]), atol=1e-6)
    assert torch.allclose(rotate(x, 0.0), x)


def test_rotation_keeps_size_and_fills_corners_with_image_content():
    x = torch.full((1, 3, 32, 32), 0.5)
    out = rotate(x, 30.0)
    assert out.shape == x.shape
    assert torch.allclose(out, x, atol=1e-6)  # no black corners: reflection keeps a flat image flat


def test_brightness_by_hand():
    x = torch.tensor([0.1, 0.6, 0.7]).view(1, 3, 1, 1)
    assert torch.allclose(adjust_brightness(x, 0.5).flatten(), torch.tensor([0.05, 0.3, 0.35]))
    assert torch.allclose(adjust_brightness(x, 2.0).flatten(), torch.tensor([0.2, 1.0, 1.0]))  # clipped


def test_contrast_by_hand():
    # two grey pixels, 0.2 and 0.6: the mean grey level is 0.4 (times the luma weights' sum)
    x = torch.tensor([0.2, 0.6]).view(1, 1, 1, 2).expand(1, 3, 1, 2)
    mean = sum(LUMA) * 0.4
    out = adjust_contrast(x, 0.5)
    assert out[0, 0, 0].tolist() == pytest.approx([0.5 * 0.2 + 0.5 * mean, 0.5 * 0.6 + 0.5 * mean], abs=1e-6)
    out = adjust_contrast(x, 2.5)
    assert out[0, 0, 0].tolist() == pytest.approx([0.0, 2.5 * 0.6 - 1.5 * mean], abs=1e-6)  # low end clipped


ALL = dict(grayscale=True, hflip=True, vflip=True, rotation_views=2, max_angle=20.0, translation_views=3, max_shift=0.1,
           brightness_views=2, brightness_delta=0.3, contrast_views=1, contrast_delta=0.3)


def test_expand_counts_and_order():
    x = images(n=3)
    augment = Augmentations(**ALL)
    out = augment.expand(x, torch.Generator().manual_seed(0))
    assert augment.views_per_image == 1 + 3 + 2 + 3 + 2 + 1
    assert out.shape == (3 * augment.views_per_image, 3, 12, 12)
    assert torch.equal(out[:3], x)
    assert torch.equal(out[3:6], grayscale(x))
    assert torch.equal(out[6:9], hflip(x))
    assert torch.equal(out[9:12], vflip(x))


def test_expand_is_deterministic_for_a_seed():
    x = images()
    augment = Augmentations(**ALL)
    first = augment.expand(x, torch.Generator().manual_seed(7))
    assert torch.equal(first, augment.expand(x, torch.Generator().manual_seed(7)))
    assert not torch.equal(first, augment.expand(x, torch.Generator().manual_seed(8)))


def test_switched_off_adds_nothing():
    x = images()
    augment = Augmentations()
    assert augment.views_per_image == 1
    assert torch.equal(augment.expand(x, torch.Generator().manual_seed(0)), x)


def test_random_translations_stay_within_max_shift():
    x = images(n=2, size=20)
    out = Augmentations(translation_views=4, max_shift=0.1).expand(x, torch.Generator().manual_seed(1))
    views = out[2:].view(4, 2, 3, 20, 20)
    shifts = [(dx, dy) for dx in range(-2, 3) for dy in range(-2, 3)]  # 0.1 × 20 px = 2 px
    for view in views:
        for i in range(2):
            assert any(torch.equal(view[i], translate(x[i:i + 1], dx, dy)[0]) for dx, dy in shifts)


def test_random_brightness_stays_within_its_range():
    x = images(n=4) * 0.5  # no pixel gets clipped at a factor ≤ 1.3
    out = Augmentations(brightness_views=3, brightness_delta=0.3).expand(x, torch.Generator().manual_seed(2))
    factors = (out[4:].view(3, 4, -1) / x.view(1, 4, -1))  # one factor per image and view
    assert torch.allclose(factors, factors[..., :1].expand_as(factors), atol=1e-5)
    assert factors.min() >= 0.7 - 1e-6 and factors.max() <= 1.3 + 1e-6
    assert factors[..., 0].std() > 0  # the copies differ


@pytest.mark.parametrize(("settings", "message"), [
    (dict(max_angle=-1.0), "max_angle"),
    (dict(max_angle=200.0), "max_angle"),
    (dict(max_shift=0.5), "max_shift"),
    (dict(brightness_delta=1.0), "brightness_delta"),
    (dict(contrast_delta=-0.1), "contrast_delta"),
    (dict(rotation_views=-1, max_angle=10.0), "rotation_views must be at least 0"),
    (dict(rotation_views=3), "max_angle=0"),
    (dict(translation_views=2), "max_shift=0"),
    (dict(zoom_views=1), "zoom_delta=0"),
    (dict(zoom_delta=0.6), "zoom_delta"),
])
def test_bad_settings_are_clear_errors(settings, message):
    with pytest.raises(AugmentationError, match=message):
        Augmentations(**settings)


def test_zoom_in_by_two_magnifies_the_centre():
    x = torch.arange(16.0).view(1, 1, 4, 4).expand(1, 3, 4, 4)
    zoomed = zoom(x, 2.0)  # 8 × 8 bilinear upsampling, centre 4 × 4 kept
    assert zoomed.shape == x.shape
    expected = torch.nn.functional.interpolate(x, size=(8, 8), mode="bilinear", align_corners=False)[..., 2:6, 2:6]
    assert torch.equal(zoomed, expected)


def test_zoom_out_shrinks_the_content_and_reflects_it_into_the_border():
    x = images(n=1, size=16)
    zoomed = zoom(x, 0.5)
    shrunk = torch.nn.functional.interpolate(x, size=(8, 8), mode="bilinear", antialias=True)
    assert zoomed.shape == x.shape
    assert torch.allclose(zoomed[..., 4:12, 4:12], shrunk)
    assert torch.equal(zoomed[..., 3, 4:12], shrunk[..., 1, :])  # reflected about the content's first row


def test_random_zooms_count_as_views():
    augment = Augmentations(zoom_views=3, zoom_delta=0.2)
    assert augment.views_per_image == 4
    assert augment.expand(images(), torch.Generator().manual_seed(0)).shape == (8, 3, 12, 12)
