"""Image scores from patch scores.

Letters: B images, N patches per image.
"""

from __future__ import annotations

from torch import Tensor


def max_score(patch_scores: Tensor) -> Tensor:
    """(B, ...) -> (B,): the most anomalous patch decides, as a single defect is enough to reject a part."""
    return patch_scores.flatten(1).amax(dim=1)


def top_k_mean(patch_scores: Tensor, k: int) -> Tensor:
    """(B, ...) -> (B,): mean of the k highest patch scores ("max-N"); steadier than the max against one
    noisy patch while still driven by the defect when it covers at least k patches."""
    flat = patch_scores.flatten(1)
    return flat.topk(min(k, flat.shape[1]), dim=1).values.mean(dim=1)
