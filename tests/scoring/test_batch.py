import pytest
import torch

from lineguard.scoring import batch
from lineguard.scoring.batch import (interval_mean, look_alikes, match_bank, mutual_patch_scores,
                                     nearest_in_each_image, nearest_in_look_alikes, rescore_by_similarity)


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


def test_look_alikes_are_the_images_of_the_same_kind_wherever_the_pattern_lies():
    # three kinds of image in shuffled order: a common background with the kind's pattern in 3 of 16 cells, at
    # random places; an image's look-alikes are the others of its kind, never itself
    g = torch.Generator().manual_seed(0)
    background, patterns = torch.randn(8, generator=g), torch.randn(3, 8, generator=g)
    kinds = torch.tensor([0, 1, 2] * 4)[torch.randperm(12, generator=g)]
    level = background[None, :, None, None] + 0.05 * torch.randn(12, 8, 4, 4, generator=g)
    for i, kind in enumerate(kinds.tolist()):
        for cell in torch.randperm(16, generator=g)[:3].tolist():
            level[i, :, cell // 4, cell % 4] = patterns[kind]
    neighbours = look_alikes(level, 3, cells=4)
    assert neighbours.shape == (12, 3)
    for i in range(12):
        assert i not in neighbours[i].tolist()
        assert torch.all(kinds[neighbours[i]] == kinds[i])
    assert look_alikes(level[:3], 8, cells=2).shape == (3, 2)  # at most the other images
    with pytest.raises(ValueError, match="at least 2 images"):
        look_alikes(level[:1], 3, cells=2)


def test_nearest_in_look_alikes_matches_brute_force():
    g = torch.Generator().manual_seed(1)
    queries = torch.randn(6, 5, 4, generator=g)
    neighbours = torch.stack([(a + 1 + torch.randperm(5, generator=g)[:3]) % 6 for a in range(6)])  # never a
    kept = torch.stack([torch.randperm(5, generator=g)[:2] for _ in range(6)])
    expected = torch.empty(6, 5, 3)
    for a in range(6):
        for j, b in enumerate(neighbours[a].tolist()):
            expected[a, :, j] = torch.cdist(queries[a].double(), queries[b, kept[b]].double()).amin(1).float()
    assert torch.allclose(nearest_in_look_alikes(queries, neighbours, kept), expected, atol=1e-5)
    every_row = torch.cdist(queries[0].double(), queries[neighbours[0, 0]].double()).amin(1).float()
    assert torch.allclose(nearest_in_look_alikes(queries, neighbours)[0, :, 0], every_row, atol=1e-5)


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
