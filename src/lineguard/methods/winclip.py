"""WinCLIP and WinCLIP+ (Jeong et al., CVPR 2023): zero- and few-shot detection with CLIP, no training.

Zero-shot (``winclip``): the compositional prompt ensemble gives a normal and an abnormal text embedding
for the class name (``prompts/ensemble.py``). The image embedding's abnormal probability (softmax of cosine
similarities / 0.07) is the image score, and each window scale (``prompts/windows.py``; 2 × 2 and 3 × 3
patches) gives a map of its windows' abnormal probabilities, harmonically aggregated onto patches; the
image score, as a constant map, and the scale maps are combined by their harmonic mean.

Few-shot (``winclip+``): K good reference images add visual association: a patch scores its smallest
cosine distance (1 − cos) / 2 to any reference patch (unprojected tokens of the whole image), a window its
smallest to any reference window of the same scale (harmonically aggregated); those maps are averaged, then
averaged with the zero-shot map; the image score is the mean of the zero-shot score and that map's maximum.

Computed as anomalib's WinCLIP (``benchmarks/peers/winclip_side_by_side.py`` checks the scores on the same weights).
Published (ViT-B/16+ at 240 px, LAION-400M weights, MVTec AD): zero-shot image AUROC 91.8, pixel AUROC 85.1.

Letters: B images, K references, N patches, C tower width, E joint width, W windows of a scale.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lineguard.backbones.vit import clip_embed
from lineguard.errors import ParameterError
from lineguard.features.extractor import fit_size
from lineguard.methods.base import Detector, ImageInput, NoImagesError, Prediction, as_batches, register
from lineguard.params import POSITIVE, Each
from lineguard.progress import track
from lineguard.prompts.clip import ClipParameters
from lineguard.prompts.ensemble import TEMPLATES, class_embeddings
from lineguard.prompts.glocal import class_logits
from lineguard.prompts.windows import (coverage, harmonic_aggregation, tower_embeddings, window_embeddings,
                                      window_patches)
from lineguard.scoring.maps import anomaly_maps
from lineguard.training import resolve_device


@register
class WinCLIP(ClipParameters, Detector):
    """Parameters:

    - ``backbone``: a CLIP backbone; the paper's ViT-B/16+ at 240 px (LAION-400M) by default.
    - ``clip_config``: an open_clip model config instead (architectures without a preset, tests); needs
      ``weights``.
    - ``weights``: CLIP weight file (whole model); None resolves the backbone's (cache, hub) or fails clearly.
    - ``class_name``: the object named in the prompts ("object" when the category is unknown).
    - ``templates``: prompt templates with one ``{}``; None: the 22 of the prompt ensemble.
    - ``scales``: window sides in patches (the paper's 2 and 3).
    - ``image_size``: input pixels, a multiple of the patch size (240 for ViT-B/16+).
    - ``sigma``: Gaussian blur of the maps in pixels (0: none, as WinCLIP; the windows already overlap).
    - ``device``, ``batch_size``: where and how many images at a time.
    """

    name = "winclip"
    uses_normal_images = False
    parameter_constraints = {"scales": [Each(POSITIVE)]}

    def __init__(self, *, backbone: str = "clip-vit-b16-plus-240", clip_config: dict | None = None,
                 weights: str | None = None, class_name: str = "object", templates: list[str] | None = None,
                 scales: list[int] | None = None, image_size: int = 240, sigma: float = 0.0, device: str = "cpu",
                 batch_size: int = 8):
        self.backbone = backbone
        self.clip_config = clip_config
        self.weights = weights
        self.class_name = class_name
        self.templates = templates
        self.scales = scales
        self.image_size = image_size
        self.sigma = sigma
        self.device = device
        self.batch_size = batch_size

    @property
    def window_scales(self) -> list[int]:
        return [2, 3] if self.scales is None else list(self.scales)

    def validate_params(self) -> None:
        super().validate_params()
        if self.templates is not None and (not self.templates or any("{}" not in t for t in self.templates)):
            raise ParameterError(f"{self.name} parameter templates must be texts with a {{}} for the object, got "
                                 f"{self.templates!r}")

    def grid(self) -> tuple[int, int]:
        return self.patch_grid(), self.patch_grid()

    def windows(self) -> list[tuple[Tensor, Tensor]]:
        """Per scale: (W, k²) window patches and (N, W) coverage, on the device (made once)."""
        if getattr(self, "_windows", None) is None:
            grid = self.grid()
            device = resolve_device(self.device)
            found = [window_patches(grid, k).to(device) for k in self.window_scales]
            self._windows = [(w, coverage(w, grid[0] * grid[1])) for w in found]
        return self._windows

    def _fit(self, images: ImageInput) -> None:
        """Zero-shot: nothing to learn (``winclip+`` takes reference images)."""

    def text_embeddings(self) -> Tensor:
        if getattr(self, "_text", None) is None:
            templates = TEMPLATES if self.templates is None else self.templates
            self._text = class_embeddings(self.clip, self.class_name, templates)  # (2, E)
        return self._text

    @torch.no_grad()
    def encode(self, images: Tensor) -> tuple[Tensor, Tensor, list[Tensor]]:
        """(B, 3, S, S) in [0, 1] on the device -> image (B, E), patch tokens (B, N, C), windows [(B, W, E)]."""
        visual = self.clip.model.visual
        tokens, _ = clip_embed(visual, self.clip.normalize(fit_size(images, self.image_size)))  # (B, 1 + N, C)
        image, patches = tower_embeddings(visual, tokens)
        return image, patches, [window_embeddings(visual, tokens, w) for w, _ in self.windows()]

    def zero_shot(self, image: Tensor, windows: list[Tensor]) -> tuple[Tensor, Tensor]:
        """-> (B,) image probabilities of "abnormal" and the (B, N) zero-shot map."""
        texts = self.text_embeddings()
        image_scores = class_logits(image, texts).softmax(-1)[:, 1]
        maps = [image_scores[:, None].expand(-1, self.grid()[0] * self.grid()[1])]
        for embedded, (_, covered) in zip(windows, self.windows(), strict=True):
            maps.append(harmonic_aggregation(class_logits(embedded, texts).softmax(-1)[..., 1], covered))
        return image_scores, len(maps) / (1 / torch.stack(maps)).sum(dim=0)

    def scores(self, image: Tensor, patches: Tensor, windows: list[Tensor]) -> tuple[Tensor, Tensor]:
        """Image scores (B,) and patch maps (B, N) of encoded images."""
        return self.zero_shot(image, windows)

    @torch.no_grad()
    def _predict(self, images: ImageInput) -> Prediction:
        device = resolve_device(self.device)
        size = (self.image_size, self.image_size)
        scores, maps = [], []
        for batch in track(as_batches(images, self.batch_size), f"{self.name}: scoring"):
            image_scores, patch_maps = self.scores(*self.encode(batch.float().to(device)))
            maps.append(anomaly_maps(patch_maps.view(-1, *self.grid()), size, self.sigma).cpu())
            scores.append(image_scores.cpu())
        if not scores:
            raise NoImagesError(f"{self.name}: predict needs at least one image")
        return Prediction(torch.cat(scores), torch.cat(maps))


def nearest_cosine_distance(embedded: Tensor, references: Tensor) -> Tensor:
    """(B, M, D) embeddings, (R, D) references -> (B, M): min over references of (1 − cos) / 2."""
    cosine = F.normalize(embedded, dim=-1) @ F.normalize(references, dim=-1).T  # (B, M, R)
    return (1 - cosine).amin(dim=-1) / 2


@register
class WinCLIPPlus(WinCLIP):
    """WinCLIP with K good reference images (few-shot); the parameters are WinCLIP's."""

    name = "winclip+"
    uses_normal_images = True

    def _fit(self, images: ImageInput) -> None:
        """Keep the reference images' patch tokens and window embeddings (K of each, flattened)."""
        device = resolve_device(self.device)
        encoded = [self.encode(batch.float().to(device)) for batch in as_batches(images, self.batch_size)]
        if not encoded:
            raise NoImagesError(f"{self.name}: fit needs at least one reference image")
        self.reference_patches_ = torch.cat([p.flatten(0, 1) for _, p, _ in encoded]).cpu()  # (K·N, C)
        self.reference_windows_ = {str(k): torch.cat([w[i].flatten(0, 1) for _, _, w in encoded]).cpu()
                                   for i, k in enumerate(self.window_scales)}  # scale -> (K·W, E)

    def scores(self, image: Tensor, patches: Tensor, windows: list[Tensor]) -> tuple[Tensor, Tensor]:
        image_scores, zero_map = self.zero_shot(image, windows)
        device = patches.device
        few = [nearest_cosine_distance(patches, self.reference_patches_.to(device))]
        for k, embedded, (_, covered) in zip(self.window_scales, windows, self.windows(), strict=True):
            distances = nearest_cosine_distance(embedded, self.reference_windows_[str(k)].to(device))
            few.append(harmonic_aggregation(distances, covered))
        few_map = torch.stack(few).mean(dim=0)  # (B, N)
        return (image_scores + few_map.amax(dim=1)) / 2, (zero_map + few_map) / 2
