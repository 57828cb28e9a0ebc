"""Vision transformers: the tokens of chosen blocks as (B, C, H / p, W / p) grids.

Class and register tokens are dropped, and every chosen block's tokens pass the model's final LayerNorm, as
DINOv2's `get_intermediate_layers(norm=True)` returns them. Positional embeddings are interpolated to the
input's grid, so any size works whose height and width are multiples of the patch size p; other sizes raise
`ImageSizeError` (resize first: silently cropping would shift the grid against the image).

Letters: B images, C width, N = (H / p)(W / p) patch tokens, p patch size.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache, partial
from pathlib import Path

import torch
from torch import Tensor, nn

from lineguard.backbones.registry import Backbone, Level, register_backbone
from lineguard.backbones.weights import (
    StateDict,
    WeightSources,
    materialize,
    resolve_weights,
    timm_weight_sources,
)
from lineguard.extras import require


def evenly_spaced(depth: int, count: int = 4) -> tuple[int, ...]:
    """`count` block indices spread over `depth` blocks, ending at the last (12 -> 2, 5, 8, 11)."""
    return tuple(depth * k // count - 1 for k in range(1, count + 1))


class TokenGrids(Backbone):
    """A transformer whose chosen blocks' tokens come back as feature grids."""

    def __init__(self, model: nn.Module, *, blocks: tuple[int, ...], name: str, levels: tuple[Level, ...],
                 mean: Sequence[float], std: Sequence[float]):
        super().__init__(name=name, levels=levels, mean=mean, std=std)
        self.model = model
        self.blocks = blocks


# --- DINOv2 (timm) ------------------------------------------------------------------------------------------


class TimmVitTokens(TokenGrids):
    def extract(self, images: Tensor) -> list[Tensor]:
        # (B, 3, H, W) -> [(B, C, H / p, W / p)]; timm drops the prefix tokens and interpolates positions
        return self.model.forward_intermediates(images, indices=list(self.blocks), norm=True,
                                                output_fmt="NCHW", intermediates_only=True)


@cache
def _timm_vit_levels(timm_name: str) -> tuple[Level, ...]:
    import timm
    with torch.device("meta"):
        info = timm.create_model(timm_name).feature_info
    return tuple(Level(f["module"], f["num_chs"], f["reduction"]) for f in info)


@dataclass(frozen=True)
class TimmVit:
    """Recipe for a timm ViT, named with its pretrained tag; `dynamic_img_size` allows any grid."""

    timm_name: str

    def all_levels(self) -> tuple[Level, ...]:
        return _timm_vit_levels(self.timm_name)

    def default_levels(self) -> tuple[int, ...]:
        return evenly_spaced(len(self.all_levels()))

    def build(self, *, name: str, levels: tuple[int, ...], weights: str | Path | None) -> TimmVitTokens:
        import timm
        loaded = resolve_weights(name, weights, timm_weight_sources(self.timm_name))
        model = materialize(partial(timm.create_model, self.timm_name, dynamic_img_size=True), loaded)
        model.prune_intermediate_layers(list(levels), prune_norm=False, prune_head=True)  # drop later blocks
        config = timm.models.get_pretrained_cfg(self.timm_name)
        chosen = tuple(self.all_levels()[i] for i in levels)
        return TimmVitTokens(model, blocks=levels, name=name, levels=chosen, mean=config.mean, std=config.std)


@register_backbone("dinov2-vits14")
def dinov2_vits14() -> TimmVit:
    """DINOv2 ViT-S/14 (timm `vit_small_patch14_dinov2.lvd142m`), ImageNet mean/std.

    Levels: 12 blocks "blocks.0" … "blocks.11", 384 ch, stride 14. Default (2, 5, 8, 11).
    """
    return TimmVit("vit_small_patch14_dinov2.lvd142m")


@register_backbone("dinov2-vitb14")
def dinov2_vitb14() -> TimmVit:
    """DINOv2 ViT-B/14 (timm `vit_base_patch14_dinov2.lvd142m`), ImageNet mean/std.

    Levels: 12 blocks "blocks.0" … "blocks.11", 768 ch, stride 14. Default (2, 5, 8, 11).
    """
    return TimmVit("vit_base_patch14_dinov2.lvd142m")


# --- CLIP (open_clip) ---------------------------------------------------------------------------------------


class ClipTokens(TokenGrids):
    """open_clip's image tower run block by block, with the positional embedding resampled to the grid."""

    def extract(self, images: Tensor) -> list[Tensor]:
        from timm.layers import resample_abs_pos_embed
        visual = self.model
        batch, _, height, width = images.shape
        patch = visual.patch_size[0]
        grid = [height // patch, width // patch]
        x = visual.conv1(images).flatten(2).transpose(1, 2)  # -> (B, N, C)
        cls = visual.class_embedding.to(x.dtype).expand(batch, 1, -1)  # -> (B, 1, C)
        pos = resample_abs_pos_embed(visual.positional_embedding.unsqueeze(0), new_size=grid,
                                     old_size=list(visual.grid_size), num_prefix_tokens=1)  # -> (1, 1 + N, C)
        x = visual.ln_pre(torch.cat([cls, x], dim=1) + pos)  # -> (B, 1 + N, C)
        _, tokens = visual.transformer.forward_intermediates(x, indices=list(self.blocks), stop_early=True)
        # [(B, 1 + N, C)] -> drop the class token -> [(B, C, H / p, W / p)]
        return [visual.ln_post(t[:, 1:]).transpose(1, 2).reshape(batch, -1, *grid) for t in tokens]


def image_tower_only(state_dict: StateDict, origin: str) -> StateDict:
    """A full CLIP state dict (open_clip or OpenAI keys) -> its `visual.` part; a tower's own passes as is."""
    if not any(key.startswith("visual.") for key in state_dict):
        return state_dict
    return {key.removeprefix("visual."): v for key, v in state_dict.items() if key.startswith("visual.")}


@dataclass(frozen=True)
class OpenClipVit:
    """Recipe for an open_clip ViT image tower (the text tower is never built)."""

    arch: str
    pretrained: str  # open_clip's pretrained tag

    def _pretrained_config(self) -> Mapping:
        open_clip = require("open_clip", f"the CLIP backbone {self.arch}")
        return open_clip.get_pretrained_cfg(self.arch, self.pretrained)

    def _make(self) -> nn.Module:
        open_clip = require("open_clip", f"the CLIP backbone {self.arch}")
        config = open_clip.get_model_config(self.arch)
        quick_gelu = self._pretrained_config().get("quick_gelu", False)  # the activation it was trained with
        # what open_clip.create_model builds for `.visual`, without the text tower
        return open_clip.model._build_vision_tower(config["embed_dim"], config["vision_cfg"],
                                                   quick_gelu=quick_gelu)

    def all_levels(self) -> tuple[Level, ...]:
        open_clip = require("open_clip", f"the CLIP backbone {self.arch}")
        vision = open_clip.CLIPVisionCfg(**open_clip.get_model_config(self.arch)["vision_cfg"])
        return tuple(Level(f"transformer.resblocks.{i}", vision.width, vision.patch_size)
                     for i in range(vision.layers))

    def default_levels(self) -> tuple[int, ...]:
        return evenly_spaced(len(self.all_levels()))

    def _sources(self) -> WeightSources:
        def download() -> StateDict:
            open_clip = require("open_clip", f"the CLIP backbone {self.arch}")
            return open_clip.create_model(self.arch, pretrained=self.pretrained).visual.state_dict()

        return WeightSources(
            layout=f"the open_clip `{self.arch}` image tower (`model.visual.state_dict()` keys; a full "
                   f"CLIP state dict with `visual.` keys works too)",
            hub_repo=self._pretrained_config()["hf_hub"].strip("/"),
            hub_files=("open_clip_model.safetensors", "open_clip_pytorch_model.bin"),
            download=download, adapt=image_tower_only)

    def build(self, *, name: str, levels: tuple[int, ...], weights: str | Path | None) -> ClipTokens:
        visual = materialize(self._make, resolve_weights(name, weights, self._sources()))
        visual.prune_intermediate_layers(list(levels), prune_norm=False, prune_head=True)
        config = self._pretrained_config()
        chosen = tuple(self.all_levels()[i] for i in levels)
        return ClipTokens(visual, blocks=levels, name=name, levels=chosen, mean=config["mean"],
                          std=config["std"])


@register_backbone("clip-vit-b16")
def clip_vit_b16() -> OpenClipVit:
    """OpenAI CLIP ViT-B/16 image tower (open_clip `ViT-B-16`, tag `openai`), CLIP mean/std.

    Levels: 12 blocks "transformer.resblocks.0" … ".11", 768 ch, stride 16. Default (2, 5, 8, 11).
    """
    return OpenClipVit("ViT-B-16", pretrained="openai")


@register_backbone("clip-vit-l14-336")
def clip_vit_l14_336() -> OpenClipVit:
    """OpenAI CLIP ViT-L/14 at 336 px (open_clip `ViT-L-14-336`, tag `openai`), CLIP mean/std.

    Levels: 24 blocks "transformer.resblocks.0" … ".23", 1024 ch, stride 14. Default (5, 11, 17, 23).
    """
    return OpenClipVit("ViT-L-14-336", pretrained="openai")
