import tracemalloc

import pytest
import torch

from lineguard.memory.coreset import coreset_size, greedy_coreset


def plain_greedy(features: torch.Tensor, starts: list[int], size: int) -> list[int]:
    """Textbook greedy k-center in float64: add the row farthest from all centres so far."""
    x = features.double()
    min_d = torch.full((len(x),), float("inf"), dtype=torch.float64)
    centres = []
    for m in range(size):
        pick = starts[m] if m < len(starts) else int(min_d.argmax())
        centres.append(pick)
        min_d = torch.minimum(min_d, (x - x[pick]).norm(dim=1))
    return centres


def cover_radius(features: torch.Tensor, subset: torch.Tensor) -> float:
    """Largest distance of any row to its nearest row of ``subset``."""
    return torch.cdist(features.double(), features[subset].double()).min(dim=1).values.max().item()


def clusters(n_per: list[int], dim: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(len(n_per), dim, generator=g) * 10
    return torch.cat([c + torch.randn(k, dim, generator=g) for c, k in zip(centres, n_per, strict=True)])


@pytest.mark.parametrize("n_starts", [1, 3])
def test_same_picks_as_plain_greedy_without_projection(n_starts):
    features = torch.randn(400, 8, generator=torch.Generator().manual_seed(0))
    picks = greedy_coreset(features, 60, seed=5, projection_dim=8, n_starts=n_starts, progress=False)
    assert picks.tolist() == plain_greedy(features, picks[:n_starts].tolist(), 60)


def test_deterministic_for_a_seed():
    features = clusters([300, 200, 5], dim=32, seed=1)
    a = greedy_coreset(features, 40, seed=7, projection_dim=16, progress=False)
    b = greedy_coreset(features, 40, seed=7, projection_dim=16, progress=False)
    c = greedy_coreset(features, 40, seed=8, projection_dim=16, progress=False)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert len(a.unique()) == 40 and a.min() >= 0 and a.max() < len(features)


@pytest.mark.parametrize("projection_dim", [64, 16])
def test_covers_better_than_random_subsets(projection_dim):
    # clusters of 4-d latent points embedded in 64 dimensions (features have a low intrinsic dimension), one
    # cluster of only 4 rows that a random subset of 30 usually misses
    g = torch.Generator().manual_seed(2)
    features = clusters([400, 300, 200, 4], dim=4, seed=2) @ torch.randn(4, 64, generator=g)
    picks = greedy_coreset(features, 30, seed=0, projection_dim=projection_dim, progress=False)
    for _ in range(5):
        random_subset = torch.randperm(len(features), generator=g)[:30]
        assert cover_radius(features, picks) < cover_radius(features, random_subset)


def test_whole_set_and_single_row():
    features = torch.randn(25, 4, generator=torch.Generator().manual_seed(4))
    assert sorted(greedy_coreset(features, 25, progress=False).tolist()) == list(range(25))
    assert greedy_coreset(features, 1, progress=False).shape == (1,)


def test_bad_sizes_and_ratios():
    features = torch.zeros(10, 3)
    for size in (0, 11):
        with pytest.raises(ValueError, match="between 1 and 10, got"):
            greedy_coreset(features, size, progress=False)
    with pytest.raises(ValueError, match="projection_dim"):
        greedy_coreset(features, 2, projection_dim=0, progress=False)
    for ratio in (0, -0.1, 1.5):
        with pytest.raises(ValueError, match=r"ratio must be in \(0, 1\]"):
            coreset_size(100, ratio)
    assert coreset_size(1000, 0.1) == 100 and coreset_size(5, 0.01) == 1


@pytest.mark.slow
def test_memory_is_linear_in_n():
    g = torch.Generator().manual_seed(5)
    centres = torch.randn(100, 64, generator=g)  # 100 well-separated blobs of 2,000 rows
    features = centres.repeat_interleave(2_000, dim=0) + 0.05 * torch.randn(200_000, 64, generator=g)
    tracemalloc.start()
    try:
        greedy_coreset(features, 200, projection_dim=128, progress=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # NumPy buffers only (the identity "projection" shares the input): row-chunk copies and O(N)
    # bookkeeping; an N × N distance matrix would be 160 GB.
    assert peak < features.numel() * 4
