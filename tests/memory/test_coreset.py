import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lineguard.memory.coreset import coreset_size, greedy_coreset, image_coresets
from lineguard.memory.knn import NearestNeighbours


def plain_greedy(features: torch.Tensor, starts: list[int], size: int,
                 initial: torch.Tensor | None = None) -> list[int]:
    """Textbook greedy k-center in float64: add the row farthest from all centres so far (``initial``: each
    row's distance to centres chosen before, none when None)."""
    x = features.double()
    min_d = torch.full((len(x),), float("inf"), dtype=torch.float64) if initial is None else initial.double()
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


@pytest.mark.parametrize("pool_size", [1, 5, 64, 10_000])
def test_rounds_keep_the_plain_greedy_picks_with_ties(pool_size):
    # integer grid points: many exactly equal distances, all exact in float32, so the lowest-row rule on ties
    # decides most picks, also when the pool's farthest row ties with the first row outside the pool
    grid = torch.cartesian_prod(torch.arange(20.0), torch.arange(20.0))
    picks = greedy_coreset(grid, 60, seed=3, projection_dim=2, n_starts=1, pool_size=pool_size, progress=False)
    assert picks.tolist() == plain_greedy(grid, picks[:1].tolist(), 60)


def test_pool_size_does_not_change_the_picks():
    # small integers: every distance is exact in float32 whatever order a matrix product sums in, so the
    # picks can be compared bit for bit (on real features, rounding decides near-ties either way)
    g = torch.Generator().manual_seed(6)
    features = torch.cat([torch.randint(0, 4, (3_000, 12), generator=g),
                          torch.randint(6, 10, (40, 12), generator=g)]).float()
    picks = [greedy_coreset(features, 300, seed=1, projection_dim=12, pool_size=t, progress=False)
             for t in (1, 37, 512, 100_000)]
    assert all(torch.equal(picks[0], other) for other in picks[1:])


def small_integers(n: int, dim: int, seed: int) -> torch.Tensor:
    """Two blobs of small integer points: every squared distance is exact in float32, whatever order a matrix
    product sums in, so picks can be compared bit for bit."""
    g = torch.Generator().manual_seed(seed)
    return torch.cat([torch.randint(0, 6, (n, dim), generator=g), torch.randint(8, 12, (n // 50, dim), generator=g)]
                     )[torch.randperm(n + n // 50, generator=g)].float()


@pytest.mark.parametrize("search", ["torch", "faiss"])
@pytest.mark.parametrize("pool_size", [1, 37, 100_000])
def test_growing_with_an_exact_search_continues_the_plain_greedy_from_the_old_bank(search, pool_size):
    if search == "faiss":
        pytest.importorskip("faiss")
    features = small_integers(3_000, 12, seed=1)
    old, new = features[:1_500], features[1_500:]
    bank = old[greedy_coreset(old, 150, projection_dim=12, progress=False)]
    picks = greedy_coreset(new, 160, projection_dim=12, pool_size=pool_size, centres=bank, search=search,
                           progress=False)
    merged = plain_greedy(torch.cat([bank, new]), list(range(len(bank))), len(bank) + 160)
    assert picks.tolist() == [i - len(bank) for i in merged[len(bank):]]


def test_growing_with_an_approximate_search_is_greedy_on_certified_bounds():
    # IVF (51 lists, 8 probed) misses some rows' nearest old centre: each row starts at its distance to the one
    # found, at least its true distance; the picks are the plain greedy's from those distances, and every new
    # row ends within the largest of them (what the greedy saw) of the grown bank
    pytest.importorskip("faiss")
    features = small_integers(6_000, 16, seed=2)
    old, new = features[:4_000], features[4_000:]
    bank = old[greedy_coreset(old, 2_000, projection_dim=16, progress=False)]
    _, found = NearestNeighbours(bank, backend="faiss-ivf").search(new, k=1)
    initial = (new.double() - bank[found[:, 0]].double()).norm(dim=1)
    exact = torch.cdist(new.double(), bank.double()).min(dim=1).values
    assert (initial >= exact).all() and (initial > exact).sum() >= 10
    picks = greedy_coreset(new, 100, projection_dim=16, pool_size=64, centres=bank, search="faiss-ivf",
                           progress=False)
    assert picks.tolist() == plain_greedy(new, [], 100, initial=initial)
    bound = torch.minimum(initial, torch.cdist(new.double(), new[picks].double()).min(dim=1).values).max()
    assert cover_radius(torch.cat([bank, new]), torch.cat([torch.arange(len(bank)), len(bank) + picks])) <= bound


def test_progress_bar_does_not_change_the_picks(monkeypatch):
    features = clusters([500, 100], dim=8, seed=3)
    quiet = greedy_coreset(features, 50, pool_size=16, progress=False)
    monkeypatch.setenv("LINEGUARD_PROGRESS", "1")
    assert torch.equal(greedy_coreset(features, 50, pool_size=16, progress=True), quiet)


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
    duplicated = features.repeat(2, 1)  # every row twice: distance 0 to its twin, yet each is kept once
    assert sorted(greedy_coreset(duplicated, 50, pool_size=8, progress=False).tolist()) == list(range(50))
    assert greedy_coreset(features, 1, progress=False).shape == (1,)


def test_bad_sizes_and_ratios():
    features = torch.zeros(10, 3)
    for size in (0, 11):
        with pytest.raises(ValueError, match="between 1 and 10, got"):
            greedy_coreset(features, size, progress=False)
    with pytest.raises(ValueError, match="projection_dim"):
        greedy_coreset(features, 2, projection_dim=0, progress=False)
    with pytest.raises(ValueError, match="pool_size"):
        greedy_coreset(features, 2, pool_size=0, progress=False)
    with pytest.raises(ValueError, match=r"centres must be \(S, 3\) with S ≥ 1, got \(4, 2\)"):
        greedy_coreset(features, 2, centres=torch.zeros(4, 2), progress=False)
    for ratio in (0, -0.1, 1.5):
        with pytest.raises(ValueError, match=r"ratio must be in \(0, 1\]"):
            coreset_size(100, ratio)
    assert coreset_size(1000, 0.1) == 100 and coreset_size(5, 0.01) == 1


# Runs in its own process: the peak resident set there is the coreset's own (torch's allocations are invisible
# to tracemalloc). 100 well-separated blobs of 10,000 rows, filled in place so nothing larger than the
# features (512 MB) exists before the coreset starts; the identity "projection" shares them.
_PEAK_SCRIPT = """
import torch
from lineguard.memory.coreset import greedy_coreset
def status_mb(key):  # this process's own (not the forked parent's, as ru_maxrss may be)
    line = next(line for line in open("/proc/self/status") if line.startswith(key))
    return int(line.split()[1]) / 1024
g = torch.Generator().manual_seed(5)
features = torch.randn(1_000_000, 128, generator=g).mul_(0.05)
features.view(100, 10_000, 128).add_(torch.randn(100, 1, 128, generator=g))
resident = status_mb("VmRSS:")
greedy_coreset(features, 1_000, projection_dim=128, progress=False)
print(status_mb("VmHWM:") - resident)
"""


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the resident set from /proc")
def test_memory_is_linear_in_n():
    extra_mb = float(subprocess.run([sys.executable, "-c", _PEAK_SCRIPT], check=True, capture_output=True,
                                    text=True).stdout)
    # row-chunked distance blocks (32 MB) and O(N) bookkeeping (a few vectors of 4–8 MB); an N × N distance
    # matrix would be 4 TB and one more copy of the features 512 MB
    assert extra_mb < 256


def test_image_coresets_are_each_images_own_greedy_k_center():
    g = torch.Generator().manual_seed(5)
    features = torch.randn(3, 40, 6, generator=g)
    picks = image_coresets(features, 7, images_per_block=2)  # blocks of 2 images: one image left for the last
    assert picks.shape == (3, 7)
    for image, chosen in zip(features, picks, strict=True):
        d = torch.cdist(image.double(), image.double())
        expected = [int((image - image.mean(0)).norm(dim=1).argmax())]  # farthest from the mean first
        nearest = d[expected[0]].clone()
        for _ in range(6):
            nearest[expected] = -1
            expected.append(int(nearest.argmax()))
            nearest = torch.minimum(nearest, d[expected[-1]])
        assert chosen.tolist() == expected
    with pytest.raises(ValueError, match="between 1 and 40"):
        image_coresets(features, 41)
