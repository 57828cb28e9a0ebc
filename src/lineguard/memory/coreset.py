"""Approximate greedy k-center coreset: a small subset of patch features that covers all of them.

Letters: N features, D their dimension, P the projected dimension, M the coreset size, G groups touched.

Greedy k-center repeatedly adds the feature farthest from the coreset so far; the coreset then bounds the
distance of every feature to its nearest kept one (PatchCore's reason to use it: the memory bank keeps the
rare normal patterns a random subsample would lose). Three things make it cheap here:

* distances are measured after a random projection to P = 128 dimensions (Johnson–Lindenstrauss: pairwise
  distances survive up to a small factor), so one pass over the data reads 512 bytes per feature;
* features are kept grouped by their nearest centre, with each group's radius (its largest distance). A new
  centre ``c`` can only take features from a group whose centre ``a`` has ‖c − a‖ < 2 · radius(a), and within
  such a group only those with ‖c − a‖ < 2 d(x) (triangle inequality); every other group is never read.
  Late steps touch a few thousand features instead of all N, and no step scans all N;
* the per-step arithmetic is small, so the BLAS runs single-threaded (its thread start-up would cost more
  than the work).

The picks are exactly those of the plain greedy algorithm on the projected features (ties go to the lowest
row, as ``argmax`` would). Memory is O(N · P) for the projection plus O(N) bookkeeping; nothing N × N is
ever built, and distances are computed in chunks of rows.
"""

from __future__ import annotations

import numpy as np
import torch
from threadpoolctl import threadpool_limits
from torch import Tensor

from lineguard.progress import track

_CHUNK = 65_536  # rows measured at once: bounds the temporary arrays to tens of MB at P = 128


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
                   n_starts: int = 10, progress: bool = True) -> Tensor:
    """Indices (M,) of a greedy k-center coreset of ``size`` rows of ``features`` (N, D).

    ``n_starts`` random features seed the coreset (several starts keep the first picks from hinging on one
    random row); everything is deterministic given ``seed``. ``projection_dim`` ≥ D measures distances on
    the features themselves.
    """
    n = features.shape[0]
    if not 1 <= size <= n:
        raise ValueError(f"coreset size must be between 1 and {n}, got {size}")
    if projection_dim < 1 or n_starts < 1:
        raise ValueError(f"projection_dim and n_starts must be at least 1, got {projection_dim}, {n_starts}")
    n_starts = min(n_starts, size)
    generator = torch.Generator().manual_seed(seed)
    x = random_projection(features, projection_dim, generator).numpy()  # (N, P)
    starts = torch.randperm(n, generator=generator)[:n_starts].numpy()
    with threadpool_limits(1, user_api="blas"):
        cover = _Cover(x, size)
        for row in starts:
            cover.add(int(row))
        steps = range(n_starts, size)
        for _ in track(steps, "coreset") if progress else steps:
            cover.add(cover.farthest())
    return torch.from_numpy(cover.centres)


class _Cover:
    """The greedy state: each row's distance to its nearest centre, rows grouped by that centre.

    Group ``a`` is ``members[start[a] : start[a] + count[a]]``; ``radius[a]`` is its largest distance. A
    group only ever loses rows (to newer centres), and is rewritten in place when it does; a new centre's
    group is appended at ``tail``. When the buffer is full, all groups are rebuilt from ``owner``.
    """

    def __init__(self, x: np.ndarray, size: int):
        n, p = x.shape
        self.x = x  # (N, P)
        self.sq_norms = np.einsum("ij,ij->i", x, x)  # (N,)
        self.centres = np.empty(size, dtype=np.int64)  # (M,)
        self.centre_feats = np.empty((size, p), dtype=np.float32)  # (M, P)
        self.centre_sq = np.empty(size, dtype=np.float32)  # (M,)
        self.m = 0  # centres so far
        self.min_d = np.full(n, np.inf, dtype=np.float32)  # (N,) distance to the nearest centre
        self.owner = np.zeros(n, dtype=np.int32)  # (N,) that centre's position in `centres`
        self.members = np.empty(2 * n, dtype=np.int64)
        self.start = np.zeros(size, dtype=np.int64)
        self.count = np.zeros(size, dtype=np.int64)
        self.radius = np.zeros(size, dtype=np.float32)
        self.tail = 0

    def farthest(self) -> int:
        """The row farthest from its nearest centre (the lowest such row on ties)."""
        largest = self.radius[:self.m].max()
        rows, _ = self._gather(np.flatnonzero(self.radius[:self.m] == largest))
        return int(rows[self.min_d[rows] == largest].min())

    def add(self, row: int) -> None:
        """Make ``row`` the next centre and move every row that is now closer to it into its group."""
        m = self.m
        c, c_sq = self.x[row], self.sq_norms[row]
        self.centres[m], self.centre_feats[m], self.centre_sq[m] = row, c, c_sq
        if m == 0:
            moved = np.arange(len(self.x))
            distances = self._distances(moved, c, c_sq)
        else:
            moved, distances = self._take_from_groups(m, c, c_sq)
        self.min_d[moved], self.owner[moved] = distances, m
        self.m += 1
        self._append_group(m, moved)

    def _take_from_groups(self, m: int, c: np.ndarray, c_sq: float) -> tuple[np.ndarray, np.ndarray]:
        """Rows (and their new distances) that centre ``m`` takes from the earlier groups; those groups
        are rewritten without them."""
        centre_sq, centre_feats = self.centre_sq[:m], self.centre_feats[:m]
        half = 0.5 * np.sqrt(np.maximum(centre_sq - 2 * (centre_feats @ c) + c_sq, 0))  # (m,)
        groups = np.flatnonzero(half < self.radius[:m])  # (G,) the only groups that can lose rows
        rows, group_of = self._gather(groups)
        candidates = np.flatnonzero(half[groups][group_of] < self.min_d[rows])
        distances = self._distances(rows[candidates], c, c_sq)
        closer = distances < self.min_d[rows[candidates]]
        keep = np.ones(len(rows), dtype=bool)
        keep[candidates[closer]] = False
        self._rewrite(groups, rows[keep], group_of[keep])
        return rows[candidates[closer]], distances[closer]

    def _gather(self, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rows of ``groups`` concatenated, and for each the position of its group in ``groups``."""
        lengths = self.count[groups]
        firsts = np.cumsum(lengths) - lengths
        positions = np.repeat(self.start[groups] - firsts, lengths) + np.arange(lengths.sum())
        return self.members[positions], np.repeat(np.arange(len(groups)), lengths)

    def _rewrite(self, groups: np.ndarray, rows: np.ndarray, group_of: np.ndarray) -> None:
        """Store ``rows`` (grouped, in order) as the whole content of ``groups``; update counts and radii."""
        counts = np.bincount(group_of, minlength=len(groups))
        firsts = np.cumsum(counts) - counts
        rank = np.arange(len(rows)) - np.repeat(firsts, counts)
        self.members[self.start[groups][group_of] + rank] = rows
        self.count[groups] = counts
        radius = np.zeros(len(groups), dtype=np.float32)
        filled = counts > 0
        if filled.any():
            radius[filled] = np.maximum.reduceat(self.min_d[rows], firsts[filled])
        self.radius[groups] = radius

    def _append_group(self, m: int, rows: np.ndarray) -> None:
        self.radius[m] = self.min_d[rows].max() if len(rows) else 0.0
        if self.tail + len(rows) > len(self.members):  # compact: every group rebuilt from `owner`
            n = len(self.owner)
            self.members[:n] = np.argsort(self.owner, kind="stable")
            self.count[:self.m] = np.bincount(self.owner, minlength=self.m)
            self.start[:self.m] = np.cumsum(self.count[:self.m]) - self.count[:self.m]
            self.tail = n
            return
        self.members[self.tail:self.tail + len(rows)] = rows
        self.start[m], self.count[m] = self.tail, len(rows)
        self.tail += len(rows)

    def _distances(self, rows: np.ndarray, c: np.ndarray, c_sq: float) -> np.ndarray:
        """Euclidean distances of ``rows`` to the centre ``c``, in chunks of rows."""
        n = len(self.x)
        if 4 * len(rows) > n:  # many rows: measure every row in order, on views (no gathered copies)
            everything = np.empty(n, dtype=np.float32)
            for begin in range(0, n, _CHUNK):
                everything[begin:begin + _CHUNK] = self._measure(slice(begin, begin + _CHUNK), c, c_sq)
            return everything[rows]
        out = np.empty(len(rows), dtype=np.float32)
        for begin in range(0, len(rows), _CHUNK):
            out[begin:begin + _CHUNK] = self._measure(rows[begin:begin + _CHUNK], c, c_sq)
        return out

    def _measure(self, rows: np.ndarray | slice, c: np.ndarray, c_sq: float) -> np.ndarray:
        """Distances of one chunk of rows (indices, or a slice: a view) to ``c``."""
        return np.sqrt(np.maximum(self.sq_norms[rows] - 2 * (self.x[rows] @ c) + c_sq, 0))


def coreset_size(n: int, ratio: float) -> int:
    """Number of rows a ``ratio`` keeps of ``n`` (at least one)."""
    if not 0 < ratio <= 1:
        raise ValueError(f"coreset ratio must be in (0, 1], got {ratio}")
    return max(1, int(n * ratio))
