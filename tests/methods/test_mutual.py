"""Mutual scoring on synthetic parts: defects found with no normal set, no self-matching, subsets."""

import numpy as np
import pytest
import torch

import lineguard
from lineguard.methods.mutual import Mutual
from lineguard.synthetic import make_batch, make_image
from tests.conftest import SIZE, to_tensor
from tests.methods.test_testbatch import near_defect


def test_planted_defects_are_found_without_normal_images():
    items = make_batch(10, 2, kind="part", size=SIZE, seed=31)
    detector = lineguard.create("mutual", image_size=SIZE)
    result = detector.fit().predict(to_tensor(items))
    assert set(result.scores.topk(2).indices.tolist()) == {10, 11}
    for i in (10, 11):
        assert near_defect(torch.from_numpy(items[i].mask), result.maps[i])


def test_an_image_is_never_scored_against_itself():
    rng = np.random.default_rng(1)
    part, texture = make_image(rng, kind="part", size=SIZE), make_image(rng, kind="texture", size=SIZE)
    # 0.3 of the 3 other images rounds down to the single closest one, a twin for each copy
    result = Mutual(image_size=SIZE, rescore_k=[], sigma=0).predict(to_tensor([texture] + [part] * 3))
    assert result.maps[0].min() > 0.05
    assert result.maps[1:].max() < 0.01
    # image score = max of the patch grid; the unblurred map interpolates between grid cells
    assert torch.all(result.scores >= result.maps.flatten(1).amax(1) - 1e-6)


def test_subsets_interleave_and_must_cover_the_batch():
    subsets = Mutual(max_subset_size=4).subsets(10)
    assert [s.tolist() for s in subsets] == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    assert [s.tolist() for s in Mutual().subsets(3)] == [[0, 1, 2]]
    levels = [torch.rand(4, 3, 2, 2)]
    with pytest.raises(ValueError, match="exactly once"):
        Mutual().predict_levels(levels, [torch.tensor([0, 1]), torch.tensor([1, 2, 3])])
    with pytest.raises(ValueError, match="max_subset_size"):
        Mutual(max_subset_size=1).predict_levels(levels)


def test_subsets_score_images_only_against_their_own_subset():
    g = torch.Generator().manual_seed(0)
    levels = [torch.randn(6, 4, 3, 3, generator=g), torch.randn(6, 5, 2, 2, generator=g)]
    levels = [torch.cat([lv[:3], lv[:3]]) for lv in levels]  # images 3-5 repeat 0-2
    detector = Mutual(rescore_k=[], sigma=0, fraction=0.5)
    apart = detector.predict_levels(levels, [torch.tensor([0, 1, 2]), torch.tensor([3, 4, 5])])
    together = detector.predict_levels(levels, [torch.tensor([0, 3]), torch.tensor([1, 4]),
                                                torch.tensor([2, 5])])
    assert apart.scores.min() > 0.1  # no twin within a subset
    assert together.scores.max() < 1e-2  # each image's twin shares its subset
