"""Approximate greedy k-center coreset: a small subset of patch features that covers all of them.

Letters: N features, D their dimension, P the projected dimension, M the coreset size.

Greedy k-center repeatedly adds the feature farthest from the coreset so far; the coreset then bounds the
distance of every feature to its nearest kept one (PatchCore's reason to use it: the memory bank keeps the
rare normal patterns a random subsample would lose). Two things make it cheap here:

* distances are measured after a random projection to P = 128 dimensions (Johnson–Lindenstrauss: pairwise
  distances survive up to a small factor), so one pass over the data reads 512 bytes per feature;
* the triangle inequality skips most of that pass: a feature whose current nearest centre ``a`` satisfies
  ‖c − a‖ ≥ 2 d(x) cannot move closer to a new centre ``c``, so only the other features are re-measured.
  The pick at each step is the same as the plain greedy algorithm's, and late steps touch few features.

Memory is O(N · P) for the projection plus O(N) bookkeeping; nothing N × N is ever built, and distances are
updated in chunks of rows.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from lineguard.progress import track

_CHUNK = 262_144  # rows re-measured at once: bounds the temporary arrays to a few MB


def random_projection(features: Tensor, dim: int, generator: torch.Generator, chunk_size: int = 65536) -> Tensor:
    """(N, D) -> (N, dim) Gaussian random projection (identity when D ≤ dim), computed in row chunks."""
    n, d = features.shape
    if d <= dim:
        return features.float().contiguous()
    matrix = torch.randn(d, dim, generator=generator) / dim ** 0.5  # (D, P)
    out = torch.empty(n, dim)
    for start in range(0, n, chunk_size):
        out[start:start + chunk_size] = features[start:start + chunk_size].float().cpu() @ matrix
    return out


def greedy_coreset(features: Tensor, size: int, *, seed: int = 0, projection_dim: int = 128,
                   n_starts: int = 10, progress: bool = True) -> Tensor:
    """Indices (M,) of a greedy k-center coreset of ``size`` rows of ``features`` (N, D).

    ``n_starts`` random features seed the coreset (several starts keep the first picks from hinging on one
    random row); everything is deterministic given ``seed``. The loop runs in NumPy: its per-step work is
    small vector operations, where torch's thread start-up would cost more than the arithmetic.
    """
    n = features.shape[0]
    if not 1 <= size <= n:
        raise ValueError(f"coreset size must be between 1 and {n}, got {size}")
    n_starts = min(n_starts, size)
    generator = torch.Generator().manual_seed(seed)
    x = random_projection(features, projection_dim, generator).numpy()  # (N, P)
    sq_norms = np.einsum("ij,ij->i", x, x)  # (N,)

    centres = np.empty(size, dtype=np.int64)
    centres[:n_starts] = torch.randperm(n, generator=generator)[:n_starts].numpy()
    centre_feats = np.empty((size, x.shape[1]), dtype=np.float32)  # (M, P)
    centre_sq = np.empty(size, dtype=np.float32)  # (M,)
    centre_feats[:n_starts], centre_sq[:n_starts] = x[centres[:n_starts]], sq_norms[centres[:n_starts]]
    min_d = np.full(n, np.inf, dtype=np.float32)  # distance of each feature to its nearest centre
    owner = np.zeros(n, dtype=np.int32)  # position of that centre in `centres`
    for m in range(n_starts):
        _update(x, sq_norms, np.arange(n), m, centre_feats[m], centre_sq[m], min_d, owner)

    steps = range(n_starts, size)
    for m in track(steps, "coreset") if progress else steps:
        pick = int(min_d.argmax())
        centres[m], centre_feats[m], centre_sq[m] = pick, x[pick], sq_norms[pick]
        c = centre_feats[m]
        # Half the distance from the new centre to every earlier one; rows whose owner is at least twice
        # their own distance away cannot get closer (triangle inequality) and are skipped.
        half = np.sqrt(np.maximum(centre_sq[:m] - 2 * (centre_feats[:m] @ c) + centre_sq[m], 0)) * 0.5  # (m,)
        candidates = np.flatnonzero(np.take(half, owner) < min_d)
        _update(x, sq_norms, candidates, m, c, centre_sq[m], min_d, owner)
    return torch.from_numpy(centres)


def _update(x: np.ndarray, sq_norms: np.ndarray, rows: np.ndarray, m: int, c: np.ndarray, c_sq: float,
            min_d: np.ndarray, owner: np.ndarray) -> None:
    """Re-measure ``rows`` against centre ``m`` (chunked) and move those that got closer to it."""
    for start in range(0, len(rows), _CHUNK):
        chunk = rows[start:start + _CHUNK]
        d = np.sqrt(np.maximum(sq_norms[chunk] - 2 * (x[chunk] @ c) + c_sq, 0))
        closer = d < min_d[chunk]
        moved = chunk[closer]
        min_d[moved] = d[closer]
        owner[moved] = m


def coreset_size(n: int, ratio: float) -> int:
    """Number of rows a ``ratio`` keeps of ``n`` (at least one)."""
    if not 0 < ratio <= 1:
        raise ValueError(f"coreset ratio must be in (0, 1], got {ratio}")
    return max(1, int(n * ratio))
