"""Approximate greedy k-center coreset: a small subset of patch features that covers all of them.

Letters: N features, D their dimension, P the projected dimension, M the coreset size, T the pool size,
b the centres one round adds.

Greedy k-center repeatedly adds the feature farthest from the coreset so far; the coreset then bounds the
distance of every feature to its nearest kept one (PatchCore's reason to use it: the memory bank keeps the
rare normal patterns a random subsample would lose). Done one centre at a time, every step reads all N
features for one matrix-vector product; that is memory-bound and, over M steps, hours for a few hundred
thousand patches of a texture. Two things make it cheap here:

* distances are measured after a random projection to P = 128 dimensions (Johnson–Lindenstrauss: pairwise
  distances survive up to a small factor), so one pass over the data reads 512 bytes per feature;
* centres are found in rounds. A round takes the T features farthest from the coreset (the pool) and runs
  greedy inside it, keeping the pool's distances exact as centres are added. Every feature outside the pool
  is at most τ (the (T + 1)-th largest distance) from the coreset and can only get closer, so while the
  pool's farthest feature is farther than τ it is also the farthest of all N: the round's picks are exactly
  the plain algorithm's. When it is not, the round ends and all N distances are updated against the round's
  b new centres at once, as one matrix product (compute-bound, multi-threaded) instead of b passes.

Memory is O(N · P) for the projection plus O(N) bookkeeping and row-chunked temporaries; nothing N × N is
ever built. Squared distances are compared throughout (same order, no square roots); ties go to the lowest
row, as ``argmax`` would.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from lineguard.errors import ParameterError
from lineguard.progress import track

_BLOCK = 1 << 23  # entries of one rows × centres distance block (32 MB): bounds the temporaries
_PICKED = -1.0  # squared distance given to rows already in the coreset: below every real one


def random_projection(features: Tensor, dim: int, generator: torch.Generator,
                      chunk_size: int = 65536) -> Tensor:
    """(N, D) -> (N, dim) Gaussian random projection (identity when D ≤ dim), computed in row chunks."""
    n, d = features.shape
    if d <= dim:
        return features.float().cpu().contiguous()
    matrix = torch.randn(d, dim, generator=generator) / dim ** 0.5  # (D, P)
    out = torch.empty(n, dim)
    for start in range(0, n, chunk_size):
        out[start:start + chunk_size] = features[start:start + chunk_size].float().cpu() @ matrix
    return out


def greedy_coreset(features: Tensor, size: int, *, seed: int = 0, projection_dim: int = 128,
                   n_starts: int = 10, pool_size: int = 4096, progress: bool = True) -> Tensor:
    """Indices (M,) of a greedy k-center coreset of ``size`` rows of ``features`` (N, D).

    ``n_starts`` random features seed the coreset (several starts keep the first picks from hinging on one
    random row); everything is deterministic given ``seed``. ``projection_dim`` ≥ D measures distances on
    the features themselves. ``pool_size`` only trades the length of a round against its bookkeeping; the
    picks do not depend on it.
    """
    n = features.shape[0]
    if not 1 <= size <= n:
        raise ParameterError(f"coreset size must be between 1 and {n}, got {size}")
    if projection_dim < 1 or n_starts < 1 or pool_size < 1:
        raise ParameterError(f"projection_dim, n_starts and pool_size must be at least 1, "
                             f"got {projection_dim}, {n_starts}, {pool_size}")
    generator = torch.Generator().manual_seed(seed)
    cover = _Cover(random_projection(features, projection_dim, generator))
    starts = torch.randperm(n, generator=generator)[:min(n_starts, size)]
    cover.add(starts)
    picks = [starts]
    rounds = _rounds(cover, size - len(starts), pool_size)
    for new in track(rounds, "coreset", total=size - len(starts), steps=len) if progress else rounds:
        picks.append(new)
    return torch.cat(picks)


def _rounds(cover: _Cover, remaining: int, pool_size: int) -> Iterator[Tensor]:
    """Yield the centres of each round (one tensor per round) until ``remaining`` are picked."""
    while remaining > 0:
        new = cover.pool_greedy(remaining, pool_size)
        cover.add(new)
        remaining -= len(new)
        yield new


class _Cover:
    """Each row's squared distance to its nearest centre so far (``_PICKED`` for the centres themselves)."""

    def __init__(self, x: Tensor):
        self.x = x  # (N, P)
        self.sq_norms = torch.einsum("ij,ij->i", x, x)  # (N,)
        self.min_d2 = torch.full((len(x),), float("inf"))  # (N,)

    def pool_greedy(self, limit: int, pool_size: int) -> Tensor:
        """Up to ``limit`` next greedy picks, found among the ``pool_size`` rows farthest from the coreset."""
        n = len(self.x)
        if pool_size < n:
            top = torch.topk(self.min_d2, pool_size + 1)
            tau, pool = top.values[-1].item(), top.indices[:-1].sort().values  # sorted: argmax → lowest row
        else:
            tau, pool = _PICKED, torch.arange(n)
        pool_d2, pool_x, pool_sq = self.min_d2[pool].clone(), self.x[pool], self.sq_norms[pool]  # (T,), (T, P)
        picks = []
        while len(picks) < limit:
            j = int(pool_d2.argmax())
            if pool_d2[j].item() <= tau:  # a row outside the pool may now be as far: end the round
                break
            picks.append(j)
            d2 = (pool_sq - 2 * (pool_x @ pool_x[j]) + pool_sq[j]).clamp_(min=0)
            torch.minimum(pool_d2, d2, out=pool_d2)
            pool_d2[j] = _PICKED
        if not picks:  # the pool's farthest ties with τ: the plain algorithm's pick, the lowest such row
            return self.min_d2.argmax().view(1)
        return pool[picks]

    def add(self, centres: Tensor) -> None:
        """Lower every row's distance to account for ``centres`` (b,), in blocks of rows × centres."""
        c, c_sq = self.x[centres], self.sq_norms[centres]  # (b, P), (b,)
        rows = max(1, _BLOCK // len(centres))
        for begin in range(0, len(self.x), rows):
            end = begin + rows
            d2 = torch.addmm(c_sq, self.x[begin:end], c.T, alpha=-2).amin(dim=1)  # (rows,) minus ‖x‖²
            d2 = (d2 + self.sq_norms[begin:end]).clamp_(min=0)
            torch.minimum(self.min_d2[begin:end], d2, out=self.min_d2[begin:end])
        self.min_d2[centres] = _PICKED


def coreset_size(n: int, ratio: float) -> int:
    """Number of rows a ``ratio`` keeps of ``n`` (at least one)."""
    if not 0 < ratio <= 1:
        raise ParameterError(f"coreset ratio must be in (0, 1], got {ratio}")
    return max(1, int(n * ratio))


def image_coresets(features: Tensor, size: int, images_per_block: int = 16) -> Tensor:
    """(N, L, D) rows grouped by image -> (N, size) indices: a greedy k-center coreset inside each image.

    A batch scored against itself compares each patch with the patches of a few other images; most of an
    image's patches repeat one another (a plain background, a uniform surface), so its k-center coreset serves
    as that image's reference at a fraction of the rows, within its covering radius of the exact distances.
    Exact distances (no projection): each image's (L, L) Gram matrix is one batched product, after which every
    pick is a row gather. The first pick is the row farthest from the image's mean, so nothing is random.
    """
    n, patches, _ = features.shape
    if not 1 <= size <= patches:
        raise ParameterError(f"an image coreset keeps between 1 and {patches} rows, got {size}")
    picks = torch.empty(n, size, dtype=torch.long, device=features.device)
    for begin in range(0, n, images_per_block):
        x = features[begin:begin + images_per_block].float()  # (B, L, D)
        gram = x @ x.transpose(1, 2)  # (B, L, L)
        sq = gram.diagonal(dim1=1, dim2=2)  # (B, L)
        block = torch.arange(len(x), device=x.device)
        min_d2 = torch.full_like(sq, float("inf"))
        pick = (sq - 2 * (x @ x.mean(1, keepdim=True).transpose(1, 2))[..., 0]).argmax(1)  # farthest from the mean
        for step in range(size):
            picks[begin + block, step] = pick
            d2 = sq + sq[block, pick][:, None] - 2 * gram[block, pick]  # (B, L) to the new centre
            torch.minimum(min_d2, d2, out=min_d2)
            min_d2[block, pick] = _PICKED
            pick = min_d2.argmax(1)
    return picks
