"""Test-batch coreset learning: defects found with no normal set, no self-matching, the learning rules."""

import numpy as np
import pytest
import torch

import lineguard
from lineguard.methods.testbatch import BatchCoreset, recurrence_radius, spread_sample
from lineguard.synthetic import make_batch, make_image
from tests.conftest import SIZE, to_tensor


def near_defect(mask: torch.Tensor, anomaly_map: torch.Tensor) -> bool:
    """The map's peak lies on the defect or within 8 px of it."""
    y, x = divmod(anomaly_map.argmax().item(), anomaly_map.shape[-1])
    near = torch.nn.functional.max_pool2d(mask[None, None].float(), 17, 1, 8)[0, 0]
    return bool(near[y, x] > 0)


@pytest.fixture(scope="module")
def line_batch():
    """A batch from a line with no labels given: 14 good parts and 3 with planted defects (last)."""
    items = make_batch(14, 3, kind="part", size=SIZE, seed=21)
    return to_tensor(items), torch.from_numpy(np.stack([it.mask for it in items]))


def test_planted_defects_are_found_without_normal_images(line_batch):
    images, masks = line_batch
    detector = lineguard.create("testbatch", image_size=SIZE, sample_size=6)
    assert not detector.uses_normal_images
    result = detector.fit().predict(images)
    assert result.maps.shape == (17, SIZE, SIZE)
    assert set(result.scores.topk(3).indices.tolist()) == {14, 15, 16}
    for i in (14, 15, 16):
        assert near_defect(masks[i], result.maps[i]), f"image {i} peaks off its defect"
    assert detector.history and all(r.size > 0 for r in detector.history)


def test_an_image_is_never_scored_against_its_own_patches():
    # five near-identical parts (faint pixel noise keeps their patches distinct, so k-center keeps them all)
    # and one unique texture image; every patch is in the reference (ratio 1, all images sampled, no rounds),
    # so self-matching would give the unique image a score of 0
    rng = np.random.default_rng(0)
    part = make_image(rng, kind="part", size=SIZE)
    texture = make_image(rng, kind="texture", size=SIZE)
    images = to_tensor([texture] + [part] * 5)
    torch.manual_seed(0)
    images[1:] = (images[1:] + 0.002 * torch.randn_like(images[1:])).clamp(0, 1)
    detector = BatchCoreset(image_size=SIZE, sample_size=6, coreset_ratio=1.0, rounds=0, k_images=1,
                            rescore_k=[], sigma=0)
    result = detector.predict(images)
    assert result.maps[0].min() > 0.05
    assert result.maps[1:].max() < result.maps[0].min() / 5  # copies find their twins in the other images
    assert result.scores.argmax() == 0


def synthetic_rows(n=20, patches=9, dim=6, seed=0):
    """Features of n images: patches 0-5 and 8 common patterns, patch 6 holds pattern C in half of the images
    and B in the other half (4 and 17 among them), both normal; patch 7 common; small noise everywhere."""
    g = torch.Generator().manual_seed(seed)
    patterns = torch.nn.functional.normalize(torch.randn(12, dim, generator=g), dim=1)
    rows = patterns[torch.tensor([0, 1, 2, 3, 4, 5, 8, 6, 7])].repeat(n, 1, 1)  # (N, L, D)
    rows[[0, 1, 3, 5, 7, 9, 11, 13, 15, 19], 6] = patterns[9]
    return rows + 0.01 * torch.randn(n, patches, dim, generator=g), patterns


def test_rounds_add_normal_variation_the_first_sample_missed():
    rows, _ = synthetic_rows()
    rows[5, 7] = torch.nn.functional.normalize(torch.randn(6, generator=torch.Generator().manual_seed(9)), dim=0)
    # two sampled images (4 and 17 with this seed), all their patches kept: both hold B at patch 6, none C
    # (support 0.2: with two sampled images each B copy in the reference has one twin, and the noise alone may
    # push one past the 30 % bound)
    params = dict(sample_size=2, coreset_ratio=1.0, exclusion_fraction=0.05, support_fraction=0.2,
                  grow_quantile=0.9, tolerance=0.0, k_images=1)
    before = BatchCoreset(rounds=0, **params).learn(0, [rows], torch.Generator().manual_seed(0))[0]
    assert before[:, 6].max() > 0.5  # precondition: the pattern the sample lacked scores like a defect
    learner = BatchCoreset(rounds=3, **params)
    after = learner.learn(0, [rows], torch.Generator().manual_seed(0))[0]
    normal = torch.ones_like(after, dtype=torch.bool)
    normal[5, 7] = False
    assert after[normal].max() < 0.1
    assert after[5, 7] > 0.5  # the defect is far from every other image and stays out
    assert sum(r.added for r in learner.history) >= 2  # C from two images: each C image matches another


def test_a_defect_recurring_in_two_images_stays_out_of_the_reference():
    rows, patterns = synthetic_rows()
    rows[3, 7] = rows[12, 7] = patterns[11]  # the same defect in two images: each would match the other
    for rounds in (0, 3):
        learner = BatchCoreset(sample_size=20, coreset_ratio=1.0, exclusion_fraction=0.02, rounds=rounds, k_images=1)
        scores = learner.learn(0, [rows], torch.Generator().manual_seed(0))[0]
        assert scores[3, 7] > 0.5 and scores[12, 7] > 0.5, rounds
        normal = torch.ones_like(scores, dtype=torch.bool)
        normal[3, 7] = normal[12, 7] = False
        assert scores[normal].max() < 0.1, rounds


def test_recurrence_radius_is_the_distance_that_reaches_the_fraction_of_other_images():
    inf = float("inf")
    d = torch.tensor([[0.1, 0.2, 0.9, inf], [0.9, 0.9, 0.1, inf], [0.3, 0.1, 0.2, 0.4]])
    # needs ceil(fraction * others) images: 2 of 3, 2 of 3 and 2 of 4 (the own image, +inf, is no other)
    assert torch.allclose(recurrence_radius(d, 0.5), torch.tensor([0.2, 0.9, 0.2]))
    assert torch.allclose(recurrence_radius(d, 0.01), torch.tensor([0.1, 0.1, 0.1]))  # at least one image


def test_spread_sample_takes_one_image_per_stratum():
    picks = spread_sample(100, 10, torch.Generator().manual_seed(0))
    assert torch.equal(picks // 10, torch.arange(10))
    assert torch.equal(spread_sample(5, 5, torch.Generator()), torch.arange(5))


def test_fit_takes_no_images_and_bad_parameters_are_named(line_batch):
    images, _ = line_batch
    with pytest.raises(ValueError, match="uses no normal images"):
        BatchCoreset().fit(images[:2])
    with pytest.raises(ValueError, match="sample_size"):
        BatchCoreset(sample_size=1).predict_levels([torch.rand(3, 4, 2, 2)])
    with pytest.raises(ValueError, match="support_fraction"):
        BatchCoreset(support_fraction=0).predict_levels([torch.rand(3, 4, 2, 2)])
    with pytest.raises(ValueError, match="at least 2 images"):
        BatchCoreset().predict_levels([torch.rand(1, 4, 2, 2)])
    with pytest.raises(ValueError, match="baseline_quantile"):
        BatchCoreset(baseline_quantile=1.0).predict_levels([torch.rand(3, 4, 2, 2)])


def test_baseline_moves_each_image_score_down_by_its_own_low_quantile(line_batch):
    images, _ = line_batch
    plain, relative = (BatchCoreset(image_size=SIZE, sample_size=6, rescore_k=[], baseline_quantile=q)
                       for q in (None, 0.1))
    levels = plain.extractor.levels_of(images)
    drop = plain.predict_levels(levels).scores - relative.predict_levels(levels).scores
    assert (drop > 0).all()  # patch scores are distances, so every image has a positive baseline
    assert drop.std() > 0  # and it is each image's own
