"""Frozen feature extractors by name: `create_backbone("effnet-lite0")`: images in [0, 1] -> feature maps."""

from lineguard.backbones import cnn, vit  # noqa: F401  (importing the families registers their presets)
from lineguard.backbones.registry import (
    Backbone,
    ImageSizeError,
    Level,
    LevelSelectionError,
    UnknownBackboneError,
    available_backbones,
    backbone_levels,
    create_backbone,
)
from lineguard.backbones.weights import (
    RANDOM_WEIGHTS,
    WeightsMismatchError,
    WeightsNotFoundError,
    cache_path,
    efficientnet_lite_weights,
)

__all__ = [
    "RANDOM_WEIGHTS",
    "Backbone",
    "ImageSizeError",
    "Level",
    "LevelSelectionError",
    "UnknownBackboneError",
    "WeightsMismatchError",
    "WeightsNotFoundError",
    "available_backbones",
    "backbone_levels",
    "cache_path",
    "create_backbone",
    "efficientnet_lite_weights",
]
