"""The whole CLIP model (image and text towers) for the zero-shot methods, with its tokenizer.

A named CLIP backbone (``clip-vit-l14-336``, ``clip-vit-b16-plus-240``, …) resolves its weights as every
backbone does: explicit file -> lineguard cache -> Hugging Face cache -> hub -> ``WeightsNotFoundError``
saying how to provide them (``backbones/weights.py``). ``config`` builds any open_clip CLIP from its model
config (the dict open_clip's JSON files hold: ``embed_dim``, ``vision_cfg``, ``text_cfg``), for architectures
without a preset and for the tiny random models of the tests; such a model has no published weights, so it
takes an explicit file or ``weights="random"``.

Letters: B images, T texts, L context length (tokens), E joint embedding width.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lineguard.backbones.registry import available_backbones, backbone_recipe
from lineguard.backbones.vit import OpenClipVit, open_clip_model
from lineguard.backbones.weights import (
    RANDOM_WEIGHTS,
    LoadedWeights,
    WeightsNotFoundError,
    load_weights_file,
    materialize,
)
from lineguard.errors import ParameterError
from lineguard.extras import require

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)  # the image statistics every CLIP here was trained with
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


class NotAClipError(ParameterError):
    """A backbone name that names no CLIP model (the zero-shot methods need both towers)."""


@dataclass
class Clip:
    """A frozen open_clip CLIP model (``model.visual`` the image tower; ``token_embedding``, ``transformer``,
    ``ln_final``, ``text_projection`` the text tower) with the tokenizer and pixel statistics it expects."""

    model: nn.Module
    tokenizer: Callable[[list[str]], Tensor]  # T texts -> (T, L) token ids
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def device(self) -> torch.device:
        return self.model.token_embedding.weight.device

    @property
    def patch_size(self) -> int:
        return self.model.visual.patch_size[0]

    def normalize(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) in [0, 1] -> the model's input statistics."""
        mean = torch.tensor(self.mean, device=images.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=images.device).view(1, 3, 1, 1)
        return (images - mean) / std

    def tokenize(self, texts: list[str]) -> Tensor:
        return self.tokenizer(texts).to(self.device)

    @torch.no_grad()
    def encode_texts(self, texts: list[str]) -> Tensor:
        """T texts -> (T, E) text embeddings, unnormalised (open_clip's ``encode_text``)."""
        return self.model.encode_text(self.tokenize(texts))


def clip_backbones() -> list[str]:
    return [name for name in available_backbones() if isinstance(backbone_recipe(name), OpenClipVit)]


def _named_clip(backbone: str, weights: str | Path | None) -> tuple[nn.Module, Callable, Mapping[str, Any]]:
    open_clip = require("open_clip", f"the CLIP backbone {backbone}")
    recipe = backbone_recipe(backbone)
    if not isinstance(recipe, OpenClipVit):
        raise NotAClipError(f"backbone {backbone!r} has no text tower; the zero-shot text methods take a CLIP "
                            f"backbone: {', '.join(clip_backbones())} (or clip_config with weights)")
    model, pretrained = recipe.build_clip(name=backbone, weights=weights)
    return model, open_clip.get_tokenizer(recipe.arch), pretrained


def _configured_clip(config: Mapping[str, Any], weights: str | Path | None) -> tuple[nn.Module, Callable]:
    open_clip = require("open_clip", "a CLIP built from clip_config")
    if weights is None:
        raise WeightsNotFoundError("a CLIP built from clip_config has no published weights: pass weights=FILE "
                                   "(a .safetensors or .pth state dict of that model) or weights='random'")
    loaded = None if weights == RANDOM_WEIGHTS else LoadedWeights(load_weights_file(weights), str(weights))
    model = materialize(partial(open_clip_model, config), loaded)
    context = int(config.get("text_cfg", {}).get("context_length", 77))
    return model, open_clip.SimpleTokenizer(context_length=context)


def load_clip(backbone: str, *, config: Mapping[str, Any] | None = None, weights: str | Path | None = None,
              device: str | torch.device = "cpu") -> Clip:
    """The frozen CLIP named ``backbone`` (or built from ``config``), in eval mode on ``device``."""
    if config is not None:
        model, tokenizer = _configured_clip(config, weights)
        mean, std = OPENAI_MEAN, OPENAI_STD
    else:
        model, tokenizer, pretrained = _named_clip(backbone, weights)
        mean, std = tuple(pretrained["mean"]), tuple(pretrained["std"])
    model = model.eval().requires_grad_(False).to(device)
    return Clip(model, tokenizer, mean, std)


CONFIG_KEYS = ("embed_dim", "vision_cfg", "text_cfg")  # what every open_clip model config holds


class ClipParameters:
    """Mixin for detectors with parameters ``backbone, clip_config, weights, device``: their CLIP model,
    loaded on first use so that constructing or reloading a detector stays cheap."""

    name: str
    backbone: str
    clip_config: dict | None
    weights: str | None
    device: str
    image_size: int

    def validate_params(self) -> None:
        """The detector's checks, and ``clip_config`` must be an open_clip model config."""
        super().validate_params()
        if self.clip_config is not None and not all(key in self.clip_config for key in CONFIG_KEYS):
            raise ParameterError(f"{self.name} parameter clip_config must be an open_clip model config (with "
                                 f"{', '.join(CONFIG_KEYS)}), got {self.clip_config!r}")

    def patch_grid(self) -> int:
        """Patches along a side at ``image_size``, which must be a multiple of the tower's patch size."""
        patch = self.clip.patch_size
        if self.image_size % patch:
            raise ParameterError(f"{self.name} parameter image_size must be a multiple of the patch size {patch}, "
                                 f"got {self.image_size}")
        return self.image_size // patch

    @property
    def clip(self) -> Clip:
        if getattr(self, "_clip", None) is None:
            self._clip = load_clip(self.backbone, config=self.clip_config, weights=self.weights,
                                   device=self.device)
        return self._clip
