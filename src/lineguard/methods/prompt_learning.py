"""Prompt learning for any backbone: AnomalyCLIP's idea where there is no text tower.

AnomalyCLIP learns, on labelled images of some categories, a normal and an abnormal text embedding that
patch features of *any* category can be compared with. At inference those are just two vectors in the
feature space, so a backbone without a text tower (every CNN here, DINOv2) can learn the two vectors
directly: the same glocal loss on the same labelled data (``lineguard train-prompts --method prompts``), the
same zero-shot scoring (``prompts=FOLDER``, no normal images). There is no DPAM (no attention to change): the
patch features are the aggregated backbone features every method uses (``features/extractor.py``), one
layer, and the global feature is their mean over the grid.

Letters: B images, D feature width, h × w feature grid.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from lineguard.features.extractor import BackboneFeatures
from lineguard.methods.base import register
from lineguard.prompts.detector import PromptDetector

INIT_STD = 0.02  # AnomalyCLIP's initialisation of learnable prompt vectors


class LearnedEmbeddings(nn.Module):
    """The two learnable embeddings, normal (row 0) and abnormal (row 1): (2, D)."""

    def __init__(self, dim: int):
        super().__init__()
        self.embeddings = nn.Parameter(torch.randn(2, dim) * INIT_STD)


@register
class PromptLearning(BackboneFeatures, PromptDetector):
    """Parameters:

    - ``backbone``, ``levels``, ``patch_size``, ``weights``: the patch features the embeddings live in (as every
      backbone method; levels None: the backbone's defaults).
    - ``image_size``: working resolution; the prompts may be used at another size than they were learned at.
    - ``prompts``: the folder of learned prompts (``lineguard train-prompts --method prompts``).
    - ``sigma``: Gaussian blur of the maps in pixels (AnomalyCLIP's 4).
    - ``device``, ``batch_size``: where and how many images at a time.
    """

    name = "prompts"

    def __init__(self, *, backbone: str = "effnet-lite0", levels: list[int] | None = None, image_size: int = 256,
                 patch_size: int = 3, prompts: str | None = None, sigma: float = 4.0, weights: str | None = None,
                 device: str = "cpu", batch_size: int = 16):
        self.backbone = backbone
        self.levels = levels
        self.image_size = image_size
        self.patch_size = patch_size
        self.prompts = prompts
        self.sigma = sigma
        self.weights = weights
        self.device = device
        self.batch_size = batch_size

    def encode(self, images: Tensor) -> tuple[Tensor, Tensor]:
        patches = self.extractor(images).clone()  # -> (B, D, h, w); clone: out of inference mode for autograd
        return patches.mean(dim=(2, 3)), patches[:, None]  # -> (B, D), (B, 1, D, h, w)

    def new_learner(self) -> nn.Module:
        return LearnedEmbeddings(sum(level.channels for level in self.extractor.backbone.levels))

    def embeddings(self, learner: nn.Module) -> Tensor:
        return learner.embeddings

    def signature(self) -> dict[str, Any]:
        return {"backbone": self.backbone, "levels": self.levels, "patch_size": self.patch_size}
