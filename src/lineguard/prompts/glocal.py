"""Two-class similarity to a normal and an abnormal embedding, AnomalyCLIP's glocal loss, and the zero-shot
scores made from both.

A normal and an abnormal embedding (text embeddings on CLIP, learned vectors on any other backbone) turn
every feature vector into a probability of "abnormal": the softmax of its cosine similarities to the two,
divided by CLIP's temperature. The glocal loss trains the embeddings on labelled images with masks (Zhou et
al., 2024): *global*, the cross-entropy of the image embedding's two classes against the image's label;
*local*, for each chosen layer, the focal loss (γ = 2, Lin et al.) of the two-class map upsampled to the mask,
plus the Dice loss of the abnormal map against the mask and of the normal map against its complement; the
layers' local losses are summed.

Letters: B images, L layers, D embedding width, h × w feature grid, S × S image (mask) size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lineguard.scoring.maps import anomaly_maps

TEMPERATURE = 0.07  # CLIP's: logits are cosine similarities × 1 / 0.07
FOCAL_GAMMA = 2.0  # Lin et al.'s default, as AnomalyCLIP trains
DICE_SMOOTH = 1.0  # keeps the Dice loss defined on all-normal images (AnomalyCLIP's value)
MIN_PROBABILITY = 1e-6  # floor under log p in the focal loss


def class_logits(features: Tensor, embeddings: Tensor, temperature: float = TEMPERATURE) -> Tensor:
    """(..., D) features, (2, D) normal / abnormal embeddings -> (..., 2) cosine similarities / temperature."""
    return F.normalize(features, dim=-1) @ F.normalize(embeddings, dim=-1).T / temperature


def patch_probabilities(patches: Tensor, embeddings: Tensor, temperature: float = TEMPERATURE) -> Tensor:
    """(B, L, D, h, w) patch features -> (B, L, 2, h, w) normal / abnormal probabilities."""
    return class_logits(patches.movedim(2, -1), embeddings, temperature).softmax(-1).movedim(-1, 2)


def focal_loss(probabilities: Tensor, masks: Tensor, gamma: float = FOCAL_GAMMA) -> Tensor:
    """(B, 2, S, S) probabilities, (B, S, S) bool masks -> mean over pixels of −(1 − p_t)^γ log p_t, where
    p_t is the probability of the pixel's true class."""
    p_true = torch.where(masks, probabilities[:, 1], probabilities[:, 0]).clamp_min(MIN_PROBABILITY)
    return (-(1 - p_true).pow(gamma) * p_true.log()).mean()


def dice_loss(probabilities: Tensor, targets: Tensor) -> Tensor:
    """(B, S, S) probabilities, (B, S, S) targets in {0, 1} -> mean over images of
    1 − (2 Σ p t + 1) / (Σ p + Σ t + 1)."""
    p, t = probabilities.flatten(1), targets.flatten(1).to(probabilities)
    return (1 - (2 * (p * t).sum(1) + DICE_SMOOTH) / (p.sum(1) + t.sum(1) + DICE_SMOOTH)).mean()


def glocal_loss(image_logits: Tensor, labels: Tensor, patch_probs: Tensor, masks: Tensor,
                local_weight: float = 1.0) -> Tensor:
    """The glocal loss of a batch.

    (B, 2) image logits, (B,) labels 0 / 1, (B, L, 2, h, w) patch probabilities, (B, S, S) bool masks
    -> scalar: cross-entropy + local_weight · Σ_layers (focal + Dice(abnormal, mask) + Dice(normal, 1 − mask)).
    """
    batch, layers, _, h, w = patch_probs.shape
    size = tuple(masks.shape[-2:])
    up = F.interpolate(patch_probs.reshape(batch * layers, 2, h, w), size=size, mode="bilinear",
                       align_corners=False).view(batch, layers, 2, *size)  # -> (B, L, 2, S, S)
    local = sum(focal_loss(up[:, i], masks) + dice_loss(up[:, i, 1], masks) + dice_loss(up[:, i, 0], ~masks)
                for i in range(layers))
    return F.cross_entropy(image_logits, labels.long()) + local_weight * local


def zero_shot_scores(image_abnormal: Tensor, patch_abnormal: Tensor, size: tuple[int, int],
                     sigma: float) -> tuple[Tensor, Tensor]:
    """(B,) image and (B, L, h, w) patch probabilities of "abnormal" -> (B,) scores and (B, S, S) maps.

    The map is the layers' average, upsampled and blurred (σ = 4 px in the paper); the image score is the
    mean of the global probability and the map's maximum, so a small defect the global embedding misses
    still raises it."""
    maps = anomaly_maps(patch_abnormal.mean(dim=1), size, sigma)
    return (image_abnormal + maps.flatten(1).amax(dim=1)) / 2, maps
