import math

import pytest
import torch

from lineguard.scoring.image import above_baseline, reweight


def test_reweight_by_hand():
    # s* = 1 to m*, and 2, 3 to its two bank neighbours: w = 1 − e¹ / (e¹ + e² + e³)
    out = reweight(torch.tensor([1.0]), torch.tensor([[1.0, 2.0, 3.0]]))
    expected = (1 - math.e / (math.e + math.e ** 2 + math.e ** 3)) * 1.0
    assert out.item() == pytest.approx(expected, rel=1e-6)


def test_equidistant_neighbours_give_weight_one_minus_one_over_b():
    star = torch.tensor([2.0, 5.0])
    out = reweight(star, star[:, None].expand(2, 4).clone())
    assert torch.allclose(out, star * (1 - 1 / 4))


def test_reweight_is_stable_for_large_distances():
    out = reweight(torch.tensor([1000.0]), torch.tensor([[1000.0, 1001.0]]))
    expected = (1 - 1 / (1 + math.e)) * 1000.0
    assert torch.isfinite(out).all() and out.item() == pytest.approx(expected, rel=1e-4)


def test_reweight_shape_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match=r"\(B, b\) for B = 2"):
        reweight(torch.ones(2), torch.ones(3, 4))


def test_above_baseline_cancels_a_shift_of_the_whole_image_but_keeps_a_local_one():
    patches = torch.tensor([[1.0, 1.0, 1.0, 1.0, 4.0],   # a defect on a familiar look
                            [3.0, 3.0, 3.0, 3.0, 3.0],   # an unfamiliar look, no defect: every patch far
                            [3.0, 3.0, 3.0, 3.0, 6.0]])  # the same look with the same defect
    assert above_baseline(patches.amax(1), patches, 0.25).tolist() == [3.0, 0.0, 3.0]
    quartile = above_baseline(torch.zeros(1), torch.arange(5.0)[None], 0.25)  # torch's linear quantile
    assert quartile.item() == -1.0
