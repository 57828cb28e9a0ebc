"""CSE: the ranking loss by hand, the identity start of the embedder, a reference that ignores the training-set
size, and scores that are distances to the nearest centroid."""

from __future__ import annotations

import math

import pytest
import torch

from lineguard.methods.cse import CSE, ranking_loss, selection_embedder

TINY = {"image_size": 64, "clusters": 4, "epochs": 1, "batch_size": 4, "pairs": 16, "bank_patches": 32,
        "kmeans_samples": 500}


def test_ranking_loss_by_hand_and_blind_to_scale():
    normal, defect = torch.tensor([1.0, math.e]), torch.tensor([math.e])
    # pairs: (1, e) -> softplus(−1); (e, e) -> softplus(0) = log 2
    expected = (math.log1p(math.exp(-1)) + math.log(2)) / 2
    assert ranking_loss(normal, defect, temperature=1.0).item() == pytest.approx(expected)
    assert ranking_loss(10 * normal, 10 * defect, temperature=1.0).item() == pytest.approx(expected)
    assert ranking_loss(normal, defect, temperature=0.5).item() == pytest.approx(
        (math.log1p(math.exp(-2)) + math.log(2)) / 2)


def test_embedder_starts_as_standardisation():
    x = torch.randn(3, 5, 4, 4) * torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0]).view(1, 5, 1, 1) + 7
    mean = x.mean(dim=(0, 2, 3), keepdim=True)
    var = x.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
    standardized = (x - mean) / (var + 1e-5).sqrt()
    assert torch.allclose(selection_embedder(5, 5).train()(x), standardized, atol=1e-5)
    assert torch.allclose(selection_embedder(5, 2).train()(x), standardized[:, :2], atol=1e-5)  # selects


@pytest.fixture(scope="module")
def images():
    return torch.rand(8, 3, 64, 64, generator=torch.Generator().manual_seed(0))


def test_reference_size_does_not_depend_on_the_training_set(images):
    small = CSE(**TINY).fit(images[:4])
    large = CSE(**TINY).fit(images)
    shapes = lambda d: {k: tuple(v.shape) for k, v in d.learned_attributes().items() if torch.is_tensor(v)}  # noqa: E731
    assert shapes(small) == shapes(large) == {"centroids_": (4, 152)}  # Lite0 stride 8 + 16 levels: D = 152
    assert {k: v.shape for k, v in small.network_.items()} == {k: v.shape for k, v in large.network_.items()}


def test_scores_are_distances_to_the_nearest_centroid(images):
    detector = CSE(**TINY).fit(images[:4])
    embeddings = detector._embed(images[4:6])  # (2, E, h, w)
    n, e, h, w = embeddings.shape
    flat = embeddings.permute(0, 2, 3, 1).reshape(-1, e)
    brute = torch.tensor([min((z - c).norm().item() for c in detector.centroids_) for z in flat]).view(n, h, w)
    assert torch.allclose(detector.predict(images[4:6]).scores, brute.flatten(1).amax(1), atol=1e-4)


@pytest.mark.parametrize(("setting", "message"), [({"dim": 0}, "dim"), ({"temperature": 0.0}, "temperature"),
                                                  ({"batch_size": 1}, "batch_size"),
                                                  ({"clusters": 10_000}, "clusters need at least")])
def test_bad_settings_are_clear_errors(images, setting, message):
    with pytest.raises(ValueError, match=message):
        CSE(**{**TINY, **setting}).fit(images[:2])
