import pytest
import torch

import lineguard
from lineguard.memory import knn
from lineguard.memory.knn import NearestNeighbours


def brute_force(queries, bank, k):
    d = torch.cdist(queries.double(), bank.double())
    top = d.topk(k, dim=1, largest=False)
    return top.values.float(), top.indices


@pytest.mark.parametrize("backend", ["torch", "faiss"])
@pytest.mark.parametrize("k", [1, 3])
def test_exact_backends_match_brute_force(backend, k):
    g = torch.Generator().manual_seed(0)
    bank, queries = torch.randn(500, 16, generator=g), torch.randn(77, 16, generator=g)
    index = NearestNeighbours(bank, backend=backend, chunk_size=32)
    dist, idx = index.search(queries, k=k)
    ref_dist, ref_idx = brute_force(queries, bank, k)
    assert torch.allclose(dist, ref_dist, atol=1e-4)
    assert torch.equal(idx, ref_idx)


def test_torch_search_keeps_each_distance_block_within_budget(monkeypatch):
    monkeypatch.setattr(knn, "_BLOCK", 2_000)  # 500 bank rows -> 4 query rows per block
    blocks, exact = [], knn.pairwise_sq_distances
    monkeypatch.setattr(knn, "pairwise_sq_distances", lambda q, b, n: blocks.append(len(q) * len(b)) or exact(q, b, n))
    g = torch.Generator().manual_seed(2)
    bank, queries = torch.randn(500, 16, generator=g), torch.randn(77, 16, generator=g)
    dist, idx = NearestNeighbours(bank, backend="torch").search(queries, k=2)
    assert len(blocks) == 20 and max(blocks) <= 2_000
    ref_dist, ref_idx = brute_force(queries, bank, 2)
    assert torch.allclose(dist, ref_dist, atol=1e-4) and torch.equal(idx, ref_idx)


def test_ivf_finds_exact_neighbour_of_bank_rows():
    g = torch.Generator().manual_seed(1)
    bank = torch.randn(2000, 8, generator=g)
    index = NearestNeighbours(bank, backend="faiss-ivf", ivf_lists=16, ivf_probe=16)
    dist, idx = index.search(bank[:50], k=1)
    assert torch.equal(idx[:, 0], torch.arange(50))
    assert dist.max() < 1e-3


def test_k_larger_than_bank_is_clipped():
    dist, idx = NearestNeighbours(torch.eye(3), backend="torch").search(torch.zeros(1, 3), k=10)
    assert dist.shape == (1, 3) and sorted(idx[0].tolist()) == [0, 1, 2]


def test_bad_shapes():
    with pytest.raises(ValueError, match="non-empty"):
        NearestNeighbours(torch.zeros(0, 4))
    with pytest.raises(ValueError, match=r"queries must be \(Q, 4\)"):
        NearestNeighbours(torch.zeros(3, 4)).search(torch.zeros(2, 5))


def test_detectors_check_their_search_backend():
    for name in ("knn", "patchcore"):
        with pytest.raises(ValueError, match=f"{name} parameter search must be one of 'auto', 'torch', 'faiss', "
                                             "'faiss-ivf', got 'flat'"):
            lineguard.create(name, search="flat").fit(torch.rand(1, 3, 64, 64))
