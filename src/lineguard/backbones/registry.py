"""Backbone registry: one explicit table from a name to the preset that builds it.

Presets live next to their family (`cnn.py`, `vit.py`) and register themselves with `@register_backbone`, as
timm's `_registry.py` does; importing `lineguard.backbones` imports both families, so the table is complete
before anyone can look a name up. A preset returns a cheap *recipe*: it declares the selectable levels
without building a network, and builds the frozen `Backbone` only when asked.

Letters: B images, C channels, H × W image size, s a level's stride.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from torch import Tensor, nn

from lineguard.errors import LineguardError, ParameterError


@dataclass(frozen=True)
class Level:
    """One feature level a backbone can return."""

    name: str  # module / block name in the wrapped network, e.g. "blocks.2" or "transformer.resblocks.5"
    channels: int
    stride: int  # pixels of input per feature cell


class UnknownBackboneError(LineguardError, ValueError):
    """A backbone name that is not in the registry."""


class LevelSelectionError(ParameterError):
    """Level indices that do not select levels of the named backbone."""


class ImageSizeError(LineguardError, ValueError):
    """An input whose height or width the backbone cannot map onto an exact feature grid."""


class Backbone(nn.Module):
    """A frozen feature extractor: images in [0, 1] -> one feature map per selected level.

    Normalisation happens inside so callers never need to know a backbone's mean and std. H and W must be
    multiples of `size_multiple` (the largest selected stride), which makes every map exactly
    (H // s, W // s); anything else raises `ImageSizeError` rather than silently padding or cropping.
    """

    def __init__(self, *, name: str, levels: Sequence[Level], mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.name = name
        self.levels = tuple(levels)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.size_multiple = max(level.stride for level in self.levels)
        self.register_buffer("pixel_mean", torch.tensor(self.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(self.std).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: Tensor) -> list[Tensor]:
        """(B, 3, H, W) in [0, 1] -> [(B, C_l, H // s_l, W // s_l) for each level]."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ImageSizeError(f"{self.name}: expected images (B, 3, H, W), got {tuple(images.shape)}")
        height, width = images.shape[-2:]
        k = self.size_multiple
        if height % k or width % k:
            raise ImageSizeError(
                f"{self.name}: image size {height}x{width} is not a multiple of {k} (the largest selected "
                f"stride); resize to e.g. {max(k, round(height / k) * k)}x{max(k, round(width / k) * k)}")
        return self.extract((images - self.pixel_mean) / self.pixel_std)

    def extract(self, images: Tensor) -> list[Tensor]:
        """Normalised (B, 3, H, W) -> the selected levels' maps; each family implements this."""
        raise NotImplementedError


class BackboneRecipe(Protocol):
    """What a preset returns: declared levels, and a builder for the network."""

    def all_levels(self) -> tuple[Level, ...]: ...

    def default_levels(self) -> tuple[int, ...]: ...

    def build(self, *, name: str, levels: tuple[int, ...], weights: str | Path | None) -> Backbone: ...


_BACKBONES: dict[str, Callable[[], BackboneRecipe]] = {}


def register_backbone(name: str) -> Callable[[Callable[[], BackboneRecipe]], Callable[[], BackboneRecipe]]:
    """Decorator: register a preset function under `name` (names are unique)."""

    def decorate(preset: Callable[[], BackboneRecipe]) -> Callable[[], BackboneRecipe]:
        if name in _BACKBONES:
            raise ValueError(f"backbone {name!r} is registered twice")
        _BACKBONES[name] = preset
        return preset

    return decorate


def available_backbones() -> list[str]:
    return sorted(_BACKBONES)


def _recipe(name: str) -> BackboneRecipe:
    if name not in _BACKBONES:
        known = ", ".join(available_backbones())
        raise UnknownBackboneError(f"unknown backbone {name!r}; available: {known}")
    return _BACKBONES[name]()


def backbone_levels(name: str) -> tuple[Level, ...]:
    """Every selectable level of `name`, in order (declared by the library; no weights, no forward pass)."""
    return _recipe(name).all_levels()


def _check_levels(name: str, all_levels: tuple[Level, ...], levels: Sequence[int]) -> tuple[int, ...]:
    chosen = tuple(levels)
    valid = len(chosen) > 0 and all(isinstance(i, int) and 0 <= i < len(all_levels) for i in chosen)
    if not valid or list(chosen) != sorted(set(chosen)):
        listing = "; ".join(f"{i}: {lv.name} (stride {lv.stride}, {lv.channels} ch)"
                            for i, lv in enumerate(all_levels))
        raise LevelSelectionError(
            f"{name}: levels must be distinct increasing indices into the level list, got {list(chosen)}. "
            f"Valid levels: {listing}")
    return chosen


def create_backbone(name: str, *, levels: Sequence[int] | None = None, weights: str | Path | None = None,
                    device: str | torch.device = "cpu") -> Backbone:
    """Build the frozen backbone `name`, returning the levels at the given indices (see `backbone_levels`).

    `levels=None` picks the preset's defaults for memory-bank methods. `weights`: a file path, None to
    resolve pretrained weights (cache, bundled package, hub; see `weights.py`), or `RANDOM_WEIGHTS`.
    The result is in eval mode with gradients off, on `device`.
    """
    recipe = _recipe(name)
    chosen = _check_levels(name, recipe.all_levels(), recipe.default_levels() if levels is None else levels)
    backbone = recipe.build(name=name, levels=chosen, weights=weights)
    return backbone.eval().requires_grad_(False).to(device)
