import math

import pytest
import torch

from lineguard.methods.spade import SPADE
from tests.conftest import SIZE


def hand_made() -> SPADE:
    """Three normal images with 2-d global features and two 3-d patches each, set by hand (no backbone)."""
    detector = SPADE(k_images=1)
    detector.global_features_ = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    detector.patch_features_ = torch.tensor([[[0.0, 0, 0], [1, 1, 1]],
                                             [[5.0, 5, 5], [6, 6, 6]],
                                             [[9.0, 9, 9], [9, 9, 8]]])  # (N=3, P=2, D=3)
    return detector


def test_patches_are_matched_only_against_the_nearest_images():
    detector = hand_made()
    global_feats = torch.tensor([[1.0, 0.0]])  # nearest normal image: 0 (distance 1), then 1 (distance 9)
    queries = torch.tensor([[[5.0, 5, 5], [0, 0, 0]]])  # (B=1, P=2, D=3); (5, 5, 5) is a patch of image 1
    patch_scores = detector.patch_distances(global_feats, queries)
    assert patch_scores[0].tolist() == pytest.approx([math.sqrt(48), 0.0])  # image 1 not searched: 4² · 3
    detector.k_images = 2
    assert detector.patch_distances(global_feats, queries)[0].tolist() == pytest.approx([0.0, 0.0])
    detector.global_features_[2] = torch.tensor([0.0, 1.0])  # now images 0 and 2 are the nearest two
    # (5, 5, 5) to (9, 9, 8) of image 2: √(4² + 4² + 3²)
    assert detector.patch_distances(global_feats, queries)[0].tolist() == pytest.approx([math.sqrt(41), 0.0])


def test_more_neighbours_than_images_uses_all_of_them():
    detector = hand_made()
    detector.k_images = 50
    patch_scores = detector.patch_distances(torch.zeros(1, 2), torch.tensor([[[9.0, 9, 8], [1, 1, 1]]]))
    assert patch_scores[0].tolist() == pytest.approx([0.0, 0.0])


def test_fit_keeps_every_normal_patch(parts):
    support = parts[0][:3]
    detector = SPADE(image_size=SIZE).fit(support)
    # Lite0 default levels: stride 8 (40 ch) and 16 (112 ch); the grid is 16 × 16 at 128 px
    assert detector.patch_features_.shape == (3, 16 * 16, 152)
    assert detector.global_features_.shape == (3, 112)
    levels = detector.extractor.levels_of(support)
    assert torch.allclose(detector.global_features_, levels[-1].mean(dim=(2, 3)))


def test_bad_k_images_raises_at_fit(parts):
    with pytest.raises(ValueError, match="k_images must be at least 1, got 0"):
        SPADE(image_size=SIZE, k_images=0).fit(parts[0][:1])
