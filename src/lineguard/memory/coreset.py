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

Growing a coreset (an old memory bank of S rows joining N new patches) continues the greedy from the old
rows as centres already chosen, over the new rows alone (a centre's own distance never changes). Two things
spare most of the N × S and N × M products a plain continuation would take:

* each new row starts at its distance to the old row a nearest-neighbour index finds for it (``memory.knn``).
  With an exact backend that is its distance to the old bank and the picks are the plain greedy's; with IVF it
  is a true upper bound of it, found at a fraction of the cost, and the picks are greedy k-center on these
  bounds: every new row still ends within the last pick's bound of the grown bank, never farther than recorded;
* bounds are refreshed lazily. A row's bound only goes down as centres are added, so a round needs current
  values for its pool alone: the rows with the largest bounds are refreshed against the centres they have not
  seen until the top T + 1 are all current, every other row is then at most τ from the coreset however stale
  its bound, and the round picks what refreshing every row would. On Magnetic Tile's first growth step (195,000
  new patches, 19,500 picks) that is 44 % of the products of refreshing every row each round. A refit keeps
  refreshing every row each round, as it always did, so its picks stay bit for bit those of before.

Memory is O(N · P) for the projection plus O(N) bookkeeping and row-chunked temporaries; nothing N × N is
ever built. Squared distances are compared throughout (same order, no square roots); ties go to the lowest
row, as ``argmax`` would.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from lineguard.errors import ParameterError
from lineguard.memory.knn import Backend, NearestNeighbours
from lineguard.progress import track

_BLOCK = 1 << 23  # entries of one rows × centres distance block (32 MB): bounds the temporaries
_PICKED = -1.0  # squared distance given to rows already in the coreset: below every real one


def random_projection(parts: list[Tensor], dim: int, generator: torch.Generator,
                      chunk_size: int = 65536) -> list[Tensor]:
    """Each (N, D) of ``parts`` -> (N, dim) by one Gaussian random projection (identity when D ≤ dim), computed
    in row chunks."""
    d = parts[0].shape[1]
    if d <= dim:
        return [part.float().cpu().contiguous() for part in parts]
    matrix = torch.randn(d, dim, generator=generator) / dim ** 0.5  # (D, P)
    projected = [torch.empty(len(part), dim) for part in parts]
    for part, out in zip(parts, projected, strict=True):
        for start in range(0, len(part), chunk_size):
            out[start:start + chunk_size] = part[start:start + chunk_size].float().cpu() @ matrix
    return projected


def greedy_coreset(features: Tensor, size: int, *, seed: int = 0, projection_dim: int = 128,
                   n_starts: int = 10, pool_size: int = 4096, progress: bool = True,
                   centres: Tensor | None = None, search: Backend = "auto") -> Tensor:
    """Indices (M,) of a greedy k-center coreset of ``size`` rows of ``features`` (N, D).

    ``n_starts`` random features seed the coreset (several starts keep the first picks from hinging on one
    random row); everything is deterministic given ``seed``. ``centres`` (S, D) instead are rows chosen already
    (an old memory bank joining new patches; the same ``seed`` projects them as the fit that chose them did):
    the greedy continues from them, with each row's first distance found by a :class:`NearestNeighbours` index
    of the given ``search`` backend (see the module docstring), and picks ``size`` rows of ``features``.
    ``projection_dim`` ≥ D measures distances on the features themselves. ``pool_size`` only trades the length
    of a round against its bookkeeping; the picks do not depend on it.
    """
    n = features.shape[0]
    if not 1 <= size <= n:
        raise ParameterError(f"coreset size must be between 1 and {n}, got {size}")
    if projection_dim < 1 or n_starts < 1 or pool_size < 1:
        raise ParameterError(f"projection_dim, n_starts and pool_size must be at least 1, "
                             f"got {projection_dim}, {n_starts}, {pool_size}")
    if centres is not None and (centres.ndim != 2 or centres.shape[1] != features.shape[1] or not len(centres)):
        raise ParameterError(f"centres must be (S, {features.shape[1]}) with S ≥ 1, got {tuple(centres.shape)}")
    generator = torch.Generator().manual_seed(seed)
    if centres is None:
        (x,) = random_projection([features], projection_dim, generator)
        cover = _Cover(x, capacity=size, lazy=False)
        picks = [torch.randperm(n, generator=generator)[:min(n_starts, size)]]
        cover.add(picks[0])
    else:
        old, x = random_projection([centres, features], projection_dim, generator)
        cover = _Cover(x, capacity=len(old) + size, lazy=True)
        cover.start_from(old, search)
        picks = []
    remaining = size - sum(map(len, picks))
    rounds = _rounds(cover, remaining, pool_size)
    for new in track(rounds, "coreset", total=remaining, steps=len) if progress else rounds:
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
    """Each row's squared distance to its nearest centre so far, or (``lazy``) an upper bound of it, and
    ``_PICKED`` for the centres' own rows; ``seen``: how many of the centres, in the order added, each row's
    bound accounts for. A cover that is not lazy keeps every row current as centres are added."""

    def __init__(self, x: Tensor, capacity: int, lazy: bool):
        self.x = x  # (N, P)
        self.sq_norms = torch.einsum("ij,ij->i", x, x)  # (N,)
        self.min_d2 = torch.full((len(x),), float("inf"))  # (N,)
        self.seen = torch.zeros(len(x), dtype=torch.long)  # (N,)
        self.centres = torch.empty(capacity, x.shape[1])  # (C, P): the first ``count`` rows are the centres
        self.centre_sq = torch.empty(capacity)  # (C,)
        self.count = 0
        self.lazy = lazy

    def start_from(self, old: Tensor, search: Backend, chunk_size: int = 65536) -> None:
        """Take ``old`` (S, P) as the first centres; each row's bound is its distance to the one of them that
        ``search`` finds nearest (exact, or an upper bound of its distance to all of them)."""
        self._append(old, torch.einsum("ij,ij->i", old, old))
        index = NearestNeighbours(old, backend=search)
        if index.backend == "torch":  # exact: the same distances as refreshing every row, without its top-k
            self.refresh()
            return
        _, nearest = index.search(self.x, k=1)  # (N, 1)
        for start in range(0, len(self.x), chunk_size):
            rows = slice(start, start + chunk_size)
            found = nearest[rows, 0]
            dot = torch.einsum("ij,ij->i", self.x[rows], old[found])
            self.min_d2[rows] = (self.sq_norms[rows] - 2 * dot + self.centre_sq[found]).clamp_(min=0)
        self.seen.fill_(self.count)

    def pool_greedy(self, limit: int, pool_size: int) -> Tensor:
        """Up to ``limit`` next greedy picks, found among the ``pool_size`` rows farthest from the coreset."""
        n = len(self.x)
        if pool_size < n:
            top = self._current_top(pool_size + 1)
            tau, pool = top.values[-1].item(), top.indices[:-1].sort().values  # sorted: argmax → lowest row
        else:
            self.refresh()
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
            self.refresh(torch.nonzero(self.min_d2 >= tau).view(-1))  # every row that may tie, made current
            return self.min_d2.argmax().view(1)
        return pool[picks]

    def _current_top(self, k: int) -> torch.return_types.topk:
        """The ``k`` largest bounds, refreshing the stale ones among them until all k are current: every other
        row is then at most the k-th from the coreset, however stale its bound."""
        while True:
            top = torch.topk(self.min_d2, k)
            stale = top.indices[self.seen[top.indices] < self.count]
            if not len(stale):
                return top
            self.refresh(stale)

    def add(self, rows: Tensor) -> None:
        """Make ``rows`` (b,) centres; a cover that is not lazy lowers every row's distance for them at once."""
        self._append(self.x[rows], self.sq_norms[rows])
        self.min_d2[rows] = _PICKED
        if not self.lazy:
            self.refresh()

    def refresh(self, rows: Tensor | None = None) -> None:
        """Lower the bounds of ``rows`` (all when None) for the centres they have not seen, in blocks of
        rows × centres."""
        if rows is not None:
            rows = rows[self.seen[rows] < self.count]
        seen = self.seen if rows is None else self.seen[rows]
        first = int(seen.min()) if len(seen) else self.count
        if first == self.count:
            return
        c, c_sq = self.centres[first:self.count], self.centre_sq[first:self.count]  # (b, P), (b,)
        step = max(1, _BLOCK // len(c))
        for begin in range(0, len(self.x) if rows is None else len(rows), step):
            block = slice(begin, begin + step) if rows is None else rows[begin:begin + step]
            d2 = torch.addmm(c_sq, self.x[block], c.T, alpha=-2).amin(dim=1)  # (rows,) minus ‖x‖²
            d2 = (d2 + self.sq_norms[block]).clamp_(min=0)
            self.min_d2[block] = torch.minimum(self.min_d2[block], d2)
        self.seen[slice(None) if rows is None else rows] = self.count

    def _append(self, x: Tensor, sq_norms: Tensor) -> None:
        self.centres[self.count:self.count + len(x)] = x
        self.centre_sq[self.count:self.count + len(x)] = sq_norms
        self.count += len(x)


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
