import pytest
import torch

from lineguard.scoring import batch
from lineguard.scoring.batch import (interval_mean, match_bank, mutual_patch_scores, nearest_images,
                                     nearest_in_each_image, rescore_by_similarity)


def features(n, patches, dim, seed=0):
    return torch.randn(n, patches, dim, generator=torch.Generator().manual_seed(seed))


def brute_nearest(z):
    """(N, L, D) -> (N, L, N) with loops over image pairs and torch.cdist."""
    n, patches, _ = z.shape
    out = torch.full((n, patches, n), float("inf"))
    for i in range(n):
        for j in range(n):
            if i != j:
                out[i, :, j] = torch.cdist(z[i].double(), z[j].double()).amin(1).float()
    return out


@pytest.mark.parametrize("block", [1, 64, 1 << 20])  # one pair per block, mixed blocks, everything at once
def test_nearest_in_each_image_matches_brute_force(monkeypatch, block):
    monkeypatch.setattr(batch, "_BLOCK_ENTRIES", block)
    z = features(7, 5, 3)
    assert torch.allclose(nearest_in_each_image(z), brute_nearest(z), atol=1e-5)


def test_interval_mean_by_hand():
    d = torch.tensor([[4.0, 1.0, 3.0, 2.0], [1.0, 1.0, 9.0, 9.0]])
    assert interval_mean(d, 0.5).tolist() == [1.5, 1.0]
    assert interval_mean(d, 0.1).tolist() == [1.0, 1.0]  # never fewer than one image
    assert interval_mean(d, 1.0).tolist() == [2.5, 5.0]
    with pytest.raises(ValueError, match="fraction"):
        interval_mean(d, 0.0)


@pytest.mark.parametrize("fraction", [0.3, 0.5, 1.0])
def test_mutual_scores_match_brute_force_top_fraction_average(fraction):
    z = features(11, 6, 4, seed=2)
    nearest = brute_nearest(z)
    expected = torch.empty(11, 6)
    k = max(1, int(10 * fraction))
    for i in range(11):
        for p in range(6):
            others = sorted(nearest[i, p, j].item() for j in range(11) if j != i)
            expected[i, p] = sum(others[:k]) / k
    assert torch.allclose(mutual_patch_scores(z, fraction=fraction), expected, atol=1e-5)


def test_mutual_scores_ignore_the_image_itself():
    # image 0 is unique; images 1-3 are copies: copies score 0, image 0 does not match itself
    z = features(4, 5, 3)
    z[2:] = z[1]
    scores = mutual_patch_scores(z, fraction=0.5)  # the closest one of the three other images
    assert torch.all(scores[1:] < 1e-3)
    assert torch.all(scores[0] > 0.1)
    with pytest.raises(ValueError, match="at least 2 images"):
        mutual_patch_scores(z[:1])


@pytest.mark.parametrize("block", [1, 1 << 20])
def test_match_bank_excludes_each_image_from_its_own_reference(monkeypatch, block):
    monkeypatch.setattr(batch, "_BLOCK_ENTRIES", block)
    g = torch.Generator().manual_seed(3)
    queries = torch.randn(5, 4, 3, generator=g)
    bank_images = torch.tensor([3, 0, -1, 3, 1, 4, 0, 7])  # -1 and 7: rows of no query image
    bank = torch.randn(len(bank_images), 3, generator=g)
    bank[1] = queries[0, 2]  # image 0's own patch is in the bank: it must not match it
    patch_dist, bank_dist = match_bank(queries, bank, bank_images)
    d = torch.cdist(queries.double(), bank.double()[None]).float()  # (N, L, M)
    for i in range(5):
        own = bank_images == i
        assert torch.allclose(patch_dist[i], d[i][:, ~own].amin(1), atol=1e-5)
        assert torch.allclose(bank_dist[~own, i], d[i][:, ~own].amin(0), atol=1e-5)
        assert torch.all(torch.isinf(bank_dist[own, i]))
    assert patch_dist[0, 2] > 0.01


@pytest.mark.parametrize("k", [1, 3, 20])  # 20: more than the other images there are
def test_nearest_images_matches_brute_force(k):
    g = torch.Generator().manual_seed(k)
    queries = torch.randn(6, 5, 4, generator=g)
    bank_images = torch.randint(-1, 9, (60,), generator=g)  # -1 and 6-8: rows of no query image
    bank = torch.randn(60, 4, generator=g)
    bank[bank_images == 2] = bank[0].clone()  # image 2 repeats one row: one image however many rows
    d = torch.cdist(queries.double(), bank.double()[None]).float()  # (N, L, M)
    expected = torch.empty(6, 5)
    for i in range(6):
        per_image = torch.stack([d[i][:, bank_images == j].amin(1) for j in bank_images.unique() if j != i], 1)
        expected[i] = per_image.topk(min(k, per_image.shape[1]), dim=1, largest=False).values.mean(1)
    assert torch.allclose(nearest_images(queries, bank, bank_images, k), expected, atol=1e-5)


def test_nearest_images_counts_images_not_rows():
    # image 1 holds three copies of the query's pattern, images 2 and 3 one near copy each: with k = 2 the
    # three copies count once
    query = torch.zeros(1, 1, 2)
    bank = torch.tensor([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [3.0, 0.0], [0.0, 5.0]])
    scores = nearest_images(query, bank, torch.tensor([1, 1, 1, 2, 3]), k=2)
    assert scores.item() == pytest.approx((0 + 3) / 2)
    assert torch.isinf(nearest_images(query, bank[:3], torch.tensor([0, 0, 0]), k=2)).all()  # only its own rows
    with pytest.raises(ValueError, match="k must be"):
        nearest_images(query, bank, torch.tensor([1, 1, 1, 2, 3]), k=0)


def test_match_bank_with_only_own_rows_gives_inf():
    patch_dist, _ = match_bank(torch.zeros(2, 3, 2), torch.ones(2, 2), torch.tensor([0, 0]))
    assert torch.all(torch.isinf(patch_dist[0])) and torch.allclose(patch_dist[1], torch.full((3,), 2**0.5))
    with pytest.raises(ValueError, match="one image id per row"):
        match_bank(torch.zeros(2, 3, 2), torch.ones(2, 2), torch.tensor([0]))


def test_rescore_by_similarity_by_hand():
    embeddings = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])  # similarities 0-1: 0.8, 1-2: 0.6, 0-2: 0
    scores = torch.tensor([2.0, 4.0, 3.0])  # min-max scaled: 0, 1, 0.5
    assert torch.allclose(rescore_by_similarity(scores, embeddings, [1]), torch.tensor([0.0, 1.0, 0.5]))
    # k = 2: itself (weight 1) and its closest other image (weight = similarity)
    expected = torch.tensor([(0 + 0.8 * 1) / 1.8, (1 + 0.8 * 0) / 1.8, (0.5 + 0.6 * 1) / 1.6])
    assert torch.allclose(rescore_by_similarity(scores, embeddings, [2]), expected)
    both = rescore_by_similarity(scores, embeddings, [1, 2])
    assert torch.allclose(both, (torch.tensor([0.0, 1.0, 0.5]) + expected) / 2)
    assert torch.equal(rescore_by_similarity(scores, embeddings, []), scores)
    assert torch.equal(rescore_by_similarity(torch.ones(3), embeddings, [1]), torch.zeros(3))
    with pytest.raises(ValueError, match="positive"):
        rescore_by_similarity(scores, embeddings, [0])
