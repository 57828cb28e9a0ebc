"""Test-batch detection: defects found with no normal set, on parts at any pose, never by self-matching."""

import numpy as np
import pytest
import torch

import lineguard
from lineguard.errors import ParameterError
from lineguard.metrics.image import image_auroc
from lineguard.methods.testbatch import BatchLookAlikes
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
    detector = lineguard.create("testbatch", image_size=SIZE)
    assert not detector.uses_normal_images
    result = detector.fit().predict(images)
    assert result.maps.shape == (17, SIZE, SIZE)
    assert set(result.scores.topk(3).indices.tolist()) == {14, 15, 16}
    for i in (14, 15, 16):
        assert near_defect(masks[i], result.maps[i]), f"image {i} peaks off its defect"


def test_an_image_is_never_scored_against_its_own_patches():
    # five near-identical parts and one unique texture image; every patch is in the reference (ratio 1) and
    # every other image is a look-alike, so self-matching would give the unique image a score of 0
    rng = np.random.default_rng(0)
    part = make_image(rng, kind="part", size=SIZE)
    texture = make_image(rng, kind="texture", size=SIZE)
    images = to_tensor([texture] + [part] * 5)
    torch.manual_seed(0)
    images[1:] = (images[1:] + 0.002 * torch.randn_like(images[1:])).clamp(0, 1)
    # raw image scores: measured from its own mean, an image uniformly unlike the rest would score about 0
    detector = BatchLookAlikes(image_size=SIZE, reference_ratio=1.0, match_images=1, above_own_mean=False)
    result = detector.predict(images)
    assert result.maps[0].min() > 0.05
    assert result.maps[1:].max() < result.maps[0].min() / 5  # copies find their twins in the other images
    assert result.scores.argmax() == 0


def test_an_image_unlike_all_others_ranks_below_the_defects_measured_from_its_own_baseline(line_batch):
    # a good image whose look no other image shares (here another product) has every patch far from its
    # look-alikes: its raw score tops the batch, while above its own mean it is about zero
    images, _ = line_batch
    odd = to_tensor([make_image(np.random.default_rng(0), kind="texture", size=SIZE)])
    batch = torch.cat([odd, images])  # 0 odd, 1–14 good, 15–17 defective
    raw = BatchLookAlikes(image_size=SIZE, above_own_mean=False).predict(batch).scores
    assert raw.argmax() == 0
    scores = BatchLookAlikes(image_size=SIZE).predict(batch).scores
    assert set(scores.topk(3).indices.tolist()) == {15, 16, 17}
    assert scores[0] < scores[1:15].median()


@pytest.fixture(scope="module")
def posed_batch():
    """Parts lying at any rotation and position, as on a tray: 60 good, then two of each posed defect."""
    items = make_batch(POSED_GOOD, 6, kind="posed", size=POSED_SIZE, seed=4)
    return to_tensor(items), torch.from_numpy(np.stack([it.mask for it in items]))


POSED_SIZE = 256  # the posed defects cover 0.1–0.4 % of an image: one to four cells of the backbone here
POSED_GOOD = 60


@pytest.mark.slow
def test_defects_on_parts_at_any_pose_rank_high_and_maps_peak_on_them(posed_batch):
    # a normal patch of thread recurs only in the images that show the part turned the same way; in a batch
    # of 66 few images share a pose, so a defect ranks high rather than always first (the benchmark's batches
    # of 200 rank them at AUROC 0.997–0.999)
    images, masks = posed_batch
    result = BatchLookAlikes(image_size=POSED_SIZE).predict(images)
    assert image_auroc(torch.tensor([0] * POSED_GOOD + [1] * 6), result.scores) >= 0.9
    for i in range(POSED_GOOD, len(images)):
        assert near_defect(masks[i], result.maps[i]), f"image {i} peaks off its defect"


def test_fit_takes_no_images_and_bad_parameters_are_named(line_batch):
    images, _ = line_batch
    with pytest.raises(ParameterError, match="uses no normal images"):
        BatchLookAlikes().fit(images[:2])
    for bad in ({"look_alikes": 0}, {"match_images": 0}, {"cells": 0}, {"top_k": 0}, {"reference_ratio": 0},
                {"reference_ratio": 1.5}):
        with pytest.raises(ParameterError, match=next(iter(bad))):
            BatchLookAlikes(**bad).predict_levels([torch.rand(3, 4, 2, 2)])
    with pytest.raises(ParameterError, match="at least 2 images"):
        BatchLookAlikes().predict_levels([torch.rand(1, 4, 2, 2)])
