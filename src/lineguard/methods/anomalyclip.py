"""AnomalyCLIP (Zhou et al., ICLR 2024): zero-shot anomaly detection from object-agnostic text prompts.

A part is judged with no image of its own category: CLIP compares every patch with a normal and an
abnormal text embedding whose prompts were learned, once, on labelled images of other categories
(``lineguard train-prompts --method anomalyclip --data DIR …``). The prompts never name the object
(``prompts/learner.py``), the image tower runs with diagonally prominent attention so patch tokens stay
local (``prompts/dpam.py``), and the glocal loss trains them on image labels and defect masks
(``prompts/glocal.py``). Scoring as the paper: per layer the softmax of the patches' similarities to the two
embeddings (temperature 0.07), maps averaged over layers, upsampled and blurred (σ = 4); the image score
is the mean of the global abnormal probability and the map's maximum.

Published (ViT-L/14 at 336 px, 518 px input, trained on MVTec AD test data to evaluate on others and on
VisA to evaluate on MVTec AD): image AUROC MVTec AD 91.5, VisA 82.1; pixel AUROC 91.1, 95.5. Those need
OpenAI's CLIP weights, which this environment does not have (see README).

Letters: B images, L layers, E joint width, h × w patch grid.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from lineguard.backbones.vit import evenly_spaced
from lineguard.errors import ParameterError
from lineguard.methods.base import register
from lineguard.params import NON_NEGATIVE, POSITIVE, Each
from lineguard.prompts.clip import ClipParameters
from lineguard.prompts.detector import PromptDetector
from lineguard.prompts.dpam import dpam_encode
from lineguard.prompts.learner import ObjectAgnosticPrompts


@register
class AnomalyCLIP(ClipParameters, PromptDetector):
    """Parameters:

    - ``backbone``: a CLIP backbone (``lineguard backbones``); the paper's ViT-L/14 at 336 px by default.
    - ``clip_config``: an open_clip model config instead (architectures without a preset, tests); needs
      ``weights``.
    - ``weights``: CLIP weight file (whole model); None resolves the backbone's (cache, hub) or fails clearly.
    - ``prompts``: the folder of learned prompts (``lineguard train-prompts --method anomalyclip``).
    - ``image_size``: input pixels, a multiple of the patch size (the paper's 518 for ViT-L/14).
    - ``layers``: blocks (from 0) whose patch tokens make maps; None: four evenly spaced ending at the last
      (6, 12, 18, 24 of ViT-L counted from 1, as the paper).
    - ``dpam_from``: first block with DPAM; None: the first of ``layers`` (the paper's 6 … 24).
    - ``n_ctx``, ``deep_depth``, ``deep_length``: learned words per prompt (12), text blocks refined
      (9, i.e. blocks 1 … 8) and deep tokens per block (4), the paper's.
    - ``sigma``: Gaussian blur of the maps in pixels (4).
    - ``device``, ``batch_size``: where and how many images at a time.
    """

    name = "anomalyclip"
    parameter_constraints = {"layers": [Each(NON_NEGATIVE)], "dpam_from": [NON_NEGATIVE], "n_ctx": [POSITIVE],
                             "deep_depth": [POSITIVE], "deep_length": [POSITIVE]}

    def __init__(self, *, backbone: str = "clip-vit-l14-336", clip_config: dict | None = None,
                 weights: str | None = None, prompts: str | None = None, image_size: int = 518,
                 layers: list[int] | None = None, dpam_from: int | None = None, n_ctx: int = 12,
                 deep_depth: int = 9, deep_length: int = 4, sigma: float = 4.0, device: str = "cpu",
                 batch_size: int = 8):
        self.backbone = backbone
        self.clip_config = clip_config
        self.weights = weights
        self.prompts = prompts
        self.image_size = image_size
        self.layers = layers
        self.dpam_from = dpam_from
        self.n_ctx = n_ctx
        self.deep_depth = deep_depth
        self.deep_length = deep_length
        self.sigma = sigma
        self.device = device
        self.batch_size = batch_size

    def validate_params(self) -> None:
        super().validate_params()
        if self.deep_length > self.n_ctx:
            raise ParameterError(f"{self.name} parameter deep_length must be at most n_ctx ({self.n_ctx}): the deep "
                                 f"tokens replace learned words, never the object's; got {self.deep_length}")

    def chosen_layers(self) -> tuple[int, ...]:
        depth = len(self.clip.model.visual.transformer.resblocks)
        spaced = tuple(sorted({i for i in evenly_spaced(depth) if i >= 0}))  # fewer than four on shallow towers
        layers = spaced if self.layers is None else tuple(self.layers)
        if not layers or any(not 0 <= i < depth for i in layers):
            raise ParameterError(f"{self.name} parameter layers must be block indices in 0 … {depth - 1}, got "
                                 f"{list(layers)}")
        return layers

    def first_dpam_block(self) -> int:
        return min(self.chosen_layers()) if self.dpam_from is None else self.dpam_from

    def encode(self, images: Tensor) -> tuple[Tensor, Tensor]:
        self.patch_grid()  # image_size fits the patches
        return dpam_encode(self.clip.model.visual, self.clip.normalize(images), self.chosen_layers(),
                           self.first_dpam_block())

    def new_learner(self) -> nn.Module:
        text_blocks = len(self.clip.model.transformer.resblocks)
        if not 1 <= self.deep_depth <= text_blocks:
            raise ParameterError(f"{self.name} parameter deep_depth must be at most the text encoder's "
                                 f"{text_blocks} blocks, got {self.deep_depth}")
        return ObjectAgnosticPrompts(self.clip.model.token_embedding.embedding_dim, self.n_ctx,
                                     self.deep_depth, self.deep_length)

    def embeddings(self, learner: nn.Module) -> Tensor:
        return learner(self.clip)

    def signature(self) -> dict[str, Any]:
        return {"backbone": None if self.clip_config else self.backbone, "clip_config": self.clip_config,
                "layers": list(self.chosen_layers()), "dpam_from": self.first_dpam_block(), "n_ctx": self.n_ctx,
                "deep_depth": self.deep_depth, "deep_length": self.deep_length}
