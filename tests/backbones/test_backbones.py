"""Registry contract: every backbone builds, returns the declared levels, and rejects bad requests clearly."""

from __future__ import annotations

import pytest
import torch

from lineguard.backbones import (
    RANDOM_WEIGHTS,
    ImageSizeError,
    LevelSelectionError,
    UnknownBackboneError,
    available_backbones,
    backbone_levels,
    create_backbone,
)
from lineguard.backbones.vit import OpenClipVit, evenly_spaced

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
CLIP = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))
HALF = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def cnn_levels(names: list[str], channels: list[int], strides: list[int]) -> list[tuple[str, int, int]]:
    return list(zip(names, channels, strides, strict=True))


EFFNET = ["blocks.0", "blocks.1", "blocks.2", "blocks.4", "blocks.6"]
RESNET = ["act1", "layer1", "layer2", "layer3", "layer4"]
# name -> (every level as (module, channels, stride), mean/std, default indices); from the libraries' docs
EXPECTED = {
    "effnet-lite0": (cnn_levels(EFFNET, [16, 24, 40, 112, 320], [2, 4, 8, 16, 32]), HALF, (2, 3)),
    "effnet-lite1": (cnn_levels(EFFNET, [16, 24, 40, 112, 320], [2, 4, 8, 16, 32]), HALF, (2, 3)),
    "effnet-lite2": (cnn_levels(EFFNET, [16, 24, 48, 120, 352], [2, 4, 8, 16, 32]), HALF, (2, 3)),
    "resnet18": (cnn_levels(RESNET, [64, 64, 128, 256, 512], [2, 4, 8, 16, 32]), IMAGENET, (2, 3)),
    "wide_resnet50_2": (cnn_levels(RESNET, [64, 256, 512, 1024, 2048], [2, 4, 8, 16, 32]), IMAGENET, (2, 3)),
    "convnext_tiny": (cnn_levels([f"stages.{i}" for i in range(4)], [96, 192, 384, 768], [4, 8, 16, 32]),
                      IMAGENET, (1, 2)),
    "clip-vit-b16": ([(f"transformer.resblocks.{i}", 768, 16) for i in range(12)], CLIP, (2, 5, 8, 11)),
    "clip-vit-l14-336": ([(f"transformer.resblocks.{i}", 1024, 14) for i in range(24)], CLIP,
                         (5, 11, 17, 23)),
    "clip-vit-b16-plus-240": ([(f"transformer.resblocks.{i}", 896, 16) for i in range(12)], CLIP,
                              (2, 5, 8, 11)),
    "dinov2-vits14": ([(f"blocks.{i}", 384, 14) for i in range(12)], IMAGENET, (2, 5, 8, 11)),
    "dinov2-vitb14": ([(f"blocks.{i}", 768, 14) for i in range(12)], IMAGENET, (2, 5, 8, 11)),
}
# > 5 s to build on 2 cores
SLOW = {"wide_resnet50_2", "convnext_tiny", "clip-vit-l14-336", "clip-vit-b16-plus-240", "dinov2-vitb14"}


def test_registry_holds_exactly_the_documented_names():
    assert available_backbones() == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_declared_levels(name):
    levels, _, _ = EXPECTED[name]
    assert [(lv.name, lv.channels, lv.stride) for lv in backbone_levels(name)] == levels


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n
                                  for n in sorted(EXPECTED)])
def test_builds_and_returns_declared_levels(name):
    all_levels, (mean, std), default = EXPECTED[name]
    backbone = create_backbone(name, weights=RANDOM_WEIGHTS)
    assert backbone.name == name
    assert backbone.levels == tuple(backbone_levels(name)[i] for i in default)
    assert backbone.mean == pytest.approx(mean) and backbone.std == pytest.approx(std)
    assert not backbone.training and not any(p.requires_grad for p in backbone.parameters())

    size = 112 if all_levels[0][2] == 14 else 64
    maps = backbone(torch.rand(1, 3, size, size))
    assert len(maps) == len(default)
    for feature_map, level in zip(maps, backbone.levels, strict=True):
        assert feature_map.shape == (1, level.channels, size // level.stride, size // level.stride)
        assert torch.isfinite(feature_map).all()


def test_chosen_levels_any_subset():
    backbone = create_backbone("resnet18", levels=[0, 4], weights=RANDOM_WEIGHTS)
    assert [lv.name for lv in backbone.levels] == ["act1", "layer4"]
    maps = backbone(torch.rand(2, 3, 64, 96))
    assert [m.shape for m in maps] == [(2, 64, 32, 48), (2, 512, 2, 3)]


@pytest.mark.parametrize("levels", [[5], [-1], [3, 2], [2, 2], []])
def test_bad_level_selection_lists_valid_levels(levels):
    with pytest.raises(LevelSelectionError, match=r"4: layer4 \(stride 32, 512 ch\)"):
        create_backbone("resnet18", levels=levels, weights=RANDOM_WEIGHTS)


def test_unknown_name_lists_the_registry():
    with pytest.raises(UnknownBackboneError, match="effnet-lite0.*resnet18"):
        create_backbone("resnet19", weights=RANDOM_WEIGHTS)
    with pytest.raises(UnknownBackboneError):
        backbone_levels("resnet19")


def test_image_size_must_fit_the_largest_stride():
    backbone = create_backbone("resnet18", levels=[2, 3], weights=RANDOM_WEIGHTS)
    with pytest.raises(ImageSizeError, match="76x64 is not a multiple of 16.*80x64"):
        backbone(torch.rand(1, 3, 76, 64))
    with pytest.raises(ImageSizeError, match=r"\(B, 3, H, W\)"):
        backbone(torch.rand(1, 1, 64, 64))


def test_vit_grid_follows_any_multiple_of_the_patch():
    backbone = create_backbone("dinov2-vits14", levels=[0, 11], weights=RANDOM_WEIGHTS)
    assert [m.shape for m in backbone(torch.rand(1, 3, 42, 70))] == [(1, 384, 3, 5)] * 2
    with pytest.raises(ImageSizeError, match="multiple of 14"):
        backbone(torch.rand(1, 3, 64, 64))


def test_clip_tokens_match_open_clip_at_its_native_size():
    """At 224 px no interpolation happens, so the hand-run tower must equal open_clip's own intermediates."""
    backbone = create_backbone("clip-vit-b16", levels=[1, 3], weights=RANDOM_WEIGHTS)
    images = torch.rand(2, 3, 224, 224)
    normalised = (images - torch.tensor(CLIP[0]).view(1, 3, 1, 1)) / torch.tensor(CLIP[1]).view(1, 3, 1, 1)
    reference = backbone.model.forward_intermediates(normalised, indices=[1, 3], normalize_intermediates=True,
                                                     intermediates_only=True)["image_intermediates"]
    for ours, theirs in zip(backbone(images), reference, strict=True):
        torch.testing.assert_close(ours, theirs)
    assert [m.shape for m in backbone(torch.rand(1, 3, 64, 96))] == [(1, 768, 4, 6)] * 2  # interpolated


def test_evenly_spaced_blocks():
    assert evenly_spaced(12) == (2, 5, 8, 11)
    assert evenly_spaced(24) == (5, 11, 17, 23)
    assert OpenClipVit("ViT-L-14-336", pretrained="openai").default_levels() == (5, 11, 17, 23)
