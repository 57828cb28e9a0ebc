"""Image scores from patch scores.

Letters: B images, N patches per image, D feature dimension, M memory-bank size, b re-weighting neighbours.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from lineguard.errors import ParameterError

if TYPE_CHECKING:
    from lineguard.memory.knn import NearestNeighbours


def max_score(patch_scores: Tensor) -> Tensor:
    """(B, ...) -> (B,): the most anomalous patch decides, as a single defect is enough to reject a part."""
    return patch_scores.flatten(1).amax(dim=1)


def top_k_mean(patch_scores: Tensor, k: int) -> Tensor:
    """(B, ...) -> (B,): mean of the k highest patch scores ("max-N"); steadier than the max against one
    noisy patch while still driven by the defect when it covers at least k patches."""
    flat = patch_scores.flatten(1)
    return flat.topk(min(k, flat.shape[1]), dim=1).values.mean(dim=1)


def reweight(star_distances: Tensor, neighbour_distances: Tensor) -> Tensor:
    """PatchCore's image score (eq. 7): the largest patch distance s* = ‖m_test* − m*‖, scaled down when its
    nearest bank patch m* sits in a dense part of the bank, where a distance of s* is less surprising.

    (B,), (B, b) -> (B,). ``neighbour_distances`` are ‖m_test* − m‖ for the b nearest bank neighbours
    N_b(m*) of m*, m* itself included; w = 1 − exp(s*) / Σ_m exp(‖m_test* − m‖) is formed as a softmax
    (via logsumexp), so large distances cannot overflow.
    """
    if neighbour_distances.ndim != 2 or neighbour_distances.shape[0] != star_distances.shape[0]:
        raise ValueError(f"neighbour distances must be (B, b) for B = {star_distances.shape[0]} scores, "
                         f"got {tuple(neighbour_distances.shape)}")
    weights = 1 - torch.exp(star_distances - torch.logsumexp(neighbour_distances, dim=1))
    return weights * star_distances


def reweighted_max(queries: Tensor, patch_scores: Tensor, nearest: Tensor, bank: Tensor,
                   index: NearestNeighbours, b: int) -> Tensor:
    """PatchCore's image score of a batch: its top patch's distance to the bank, :func:`reweight`-ed.

    (B, N, D) query patches, (B, N) their scores, (B, N) index of each one's nearest bank row, (M, D) bank and
    an index over it -> (B,). m_test* is the top-scoring patch, m* its nearest bank row, N_b(m*) the b bank
    rows nearest to m* (m* itself among them). b = 1 gives the plain maximum (the formula would give 0).
    """
    if b == 1:
        return max_score(patch_scores)
    rows = torch.arange(len(queries))
    top = patch_scores.argmax(dim=1)  # (B,)
    m_test_star, m_star = queries[rows, top], bank[nearest[rows, top]]  # (B, D) each
    _, neighbours = index.search(m_star, k=b)  # (B, b)
    neighbour_distances = (m_test_star[:, None] - bank[neighbours]).norm(dim=-1)  # (B, b)
    return reweight((m_test_star - m_star).norm(dim=-1), neighbour_distances)


def check_baseline_quantile(quantile: float | None) -> None:
    """Raise unless ``quantile`` is None (no baseline) or in [0, 1): what :func:`above_baseline` accepts."""
    if quantile is not None and not 0 <= quantile < 1:
        raise ParameterError(f"baseline_quantile must be in [0, 1) or None, got {quantile}")


def above_baseline(image_scores: Tensor, patch_scores: Tensor, quantile: float) -> Tensor:
    """(B,), (B, N) -> (B,): each image score less the image's ``quantile`` of its own patch scores.

    A bank built from a few images misses some normal looks (a lighting, a texture grain); an image showing
    one has all its patches far from the bank, a defective image only its defect. Measuring from the image's
    own baseline cancels the first and keeps the second, as long as the defect covers less than
    1 − ``quantile`` of the image. Only the image score moves: maps keep the absolute distance, which is what
    pixel metrics and region thresholds compare across images (shifting them too cost 0.045 pixel AUROC on
    Magnetic Tile).
    """
    rows = max(1, 2**24 // patch_scores.shape[1])  # torch.quantile refuses inputs over 2**24 elements
    return image_scores - torch.cat([chunk.quantile(quantile, dim=1) for chunk in patch_scores.split(rows)])
