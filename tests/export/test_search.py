"""The graph's bank search and quantile give what the PyTorch search and torch.quantile give."""

from __future__ import annotations

import pytest
import torch

from lineguard.export.graphs import quantile
from lineguard.export.search import BLOCK_ENTRIES_PER_IMAGE, BlockedBank, block_rows
from lineguard.memory.knn import NearestNeighbours


@pytest.fixture(scope="module")
def data():
    generator = torch.Generator().manual_seed(0)
    bank = torch.randn(1000, 16, generator=generator)  # 15 blocks of 64 rows and one of 40
    queries = torch.randn(50, 16, generator=generator)
    return bank, queries


def test_blocked_search_finds_the_exact_nearest_rows(data):
    bank, queries = data
    blocked = BlockedBank(bank, 64)
    assert len(blocked.blocks()) == 16 and blocked.blocks()[-1][1].shape == (40, 16)
    expected, order = NearestNeighbours(bank, backend="torch").search(queries, k=100)
    torch.testing.assert_close(blocked.nearest(queries), expected[:, 0], rtol=1e-5, atol=1e-5)
    for k in (1, 5, 100):  # one block holds fewer than 100 rows: the running best spans blocks
        distances, indices = blocked.topk(queries, k)
        assert torch.equal(indices, order[:, :k])
        torch.testing.assert_close(distances, expected[:, :k], rtol=1e-5, atol=1e-5)
    assert blocked.topk(queries, 5000)[1].shape == (50, 1000)  # k above the bank size: the whole bank, sorted
    assert torch.equal(blocked.rows_at(torch.tensor([0, 63, 64, 999, 512])), bank[[0, 63, 64, 999, 512]])


def test_block_rows_bound_the_temporary_per_image():
    assert block_rows(1024, 1_000_000) * 1024 == BLOCK_ENTRIES_PER_IMAGE  # 1,024 rows at 256 px (32 × 32)
    assert block_rows(1024, 300) == 300  # a small bank is one block
    assert block_rows(BLOCK_ENTRIES_PER_IMAGE * 2, 10) == 1
    with pytest.raises(ValueError, match=r"non-empty \(M, D\)"):
        BlockedBank(torch.empty(0, 4), 8)


@pytest.mark.parametrize("q", [0.0, 0.25, 0.3, 0.5, 0.9, 0.999])
def test_quantile_from_a_sort_is_torch_quantile(q):
    values = torch.randn(3, 1000, generator=torch.Generator().manual_seed(1))
    if q in (0.0, 0.25, 0.5):  # few-shot's baseline quantile is 0.25
        assert torch.equal(quantile(values, q), values.quantile(q, dim=1))
    torch.testing.assert_close(quantile(values, q), values.quantile(q, dim=1), rtol=0, atol=1e-5)
