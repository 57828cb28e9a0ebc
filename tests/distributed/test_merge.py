"""The distributed fit's merge of per-shard coresets, on plain feature rows (no cluster needed)."""

from __future__ import annotations

import torch

from lineguard.distributed.fit import OVERSAMPLE, merge_banks
from lineguard.memory.coreset import coreset_size, greedy_coreset
from lineguard.methods import create


def nearest(rows: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
    """(N,) distance of each row to its nearest bank row (exact differences, not the Gram-matrix shortcut)."""
    return torch.cdist(rows, bank, compute_mode="donot_use_mm_for_euclid_dist").amin(dim=1)


def covering_radius(rows: torch.Tensor, bank: torch.Tensor) -> float:
    """The k-center objective: the largest distance of a row to its nearest bank row."""
    return nearest(rows, bank).max().item()


def clustered_rows(n: int = 1500, d: int = 8, seed: int = 0) -> torch.Tensor:
    """Rows around 12 centres of different spreads, plus a few far, rare ones (what a coreset must keep)."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(12, d, generator=generator) * 6
    spread = torch.rand(12, 1, generator=generator) + 0.2
    which = torch.randint(0, 12, (n,), generator=generator)
    rows = centres[which] + torch.randn(n, d, generator=generator) * spread[which]
    rows[:5] = torch.randn(5, d, generator=generator) * 30  # rare patterns
    return rows


def test_merged_coreset_has_the_local_size_and_covers_within_four_times_the_local_radius():
    rows, ratio, workers = clustered_rows(), 0.05, 2
    detector = create("patchcore", coreset_ratio=ratio, projection_dim=64)  # D = 8 <= 64: exact distances
    local = rows[greedy_coreset(rows, coreset_size(len(rows), ratio), projection_dim=64, progress=False)]
    shards = [rows[i::workers] for i in range(workers)]
    banks = [s[greedy_coreset(s, coreset_size(len(s), OVERSAMPLE * ratio), projection_dim=64, progress=False)]
             for s in shards]
    merged = merge_banks(banks, len(rows), detector)

    assert merged.shape == local.shape
    assert (nearest(merged, rows) == 0).all()  # every bank row is a feature row
    # each shard keeps M = ratio·N centres (2 shards × 2 × ratio × N/2): the composable coreset's 4 × bound
    assert covering_radius(rows, merged) <= 4 * covering_radius(rows, local)
    # and it keeps the rare rows a random subset of the same size would lose
    assert covering_radius(rows[:5], merged) == 0
    random_subset = rows[torch.randperm(len(rows), generator=torch.Generator().manual_seed(1))[:len(merged)]]
    assert covering_radius(rows, merged) < covering_radius(rows, random_subset)


def test_a_plain_bank_is_the_union_of_the_shards():
    rows = clustered_rows(300)
    merged = merge_banks([rows[0::2], rows[1::2]], len(rows), create("knn"))
    assert sorted(map(tuple, merged.tolist())) == sorted(map(tuple, rows.tolist()))
