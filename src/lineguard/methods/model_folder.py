"""A saved model folder, written so that it is self-contained and read as untrusted input.

A folder holds ``config.json`` (method, parameters, non-tensor learned state) and ``state.safetensors``, plus
copies of the files its parameters name (:attr:`Detector.file_params`: backbone weights, a trained encoder),
so that it never depends on, or reaches, anything outside itself. Reading one checks every part before a
detector sees it, and any problem is a :class:`ModelFolderError` naming the file:

* the config is a JSON object with a known ``format_version``, a registered ``method`` and ``params``; a
  folder of an older version is read through the renames since (:data:`RENAMED`);
* file parameters are relative paths that stay inside the folder (links resolved), to safetensors files or
  folders of them: nothing outside the folder is opened, and nothing is unpickled;
* learned state may only set learned attributes (names ending in ``_`` that the method does not define),
  so a config cannot replace a method; thresholds come whole and valid or not at all;
* tensors are float32, or int64 where the method keeps indices or counters (:attr:`Detector.integer_state`):
  an int8 memory bank would silently change every score.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from lineguard.backbones.weights import RANDOM_WEIGHTS, load_weights_file, save_weights_file
from lineguard.errors import LineguardError
from lineguard.scoring.threshold import CalibrationError, Thresholds

FORMAT_VERSION = 2
#: Parameters renamed since each older format version, by method: {version: {method: {old: new}}}. Version 2
#: named window sizes, view counts and what a batch counts (issue 18).
_PATCH_SIZE = {"radius": "patch_size"}
_PATCHCORE = {**_PATCH_SIZE, "b": "reweight_neighbours"}
RENAMED: dict[int, dict[str, dict[str, str]]] = {1: {
    "knn": _PATCH_SIZE, "spade": _PATCH_SIZE, "fastrecon": _PATCH_SIZE, "cse": _PATCH_SIZE,
    "patchcore": _PATCHCORE,
    "fewshot": {**_PATCHCORE, "rotations": "rotation_views", "translations": "translation_views",
                "zooms": "zoom_views", "brightness": "brightness_views", "contrast": "contrast_views"},
    "dfr": {**_PATCH_SIZE, "batch_size": "patch_batch_size", "image_batch_size": "batch_size"},
    "siamese-encoder": _PATCH_SIZE}}
CONFIG_FILE = "config.json"
STATE_FILE = "state.safetensors"
#: Learned state written by :meth:`Detector.calibrate`: saved with the model, but not what makes it fitted.
THRESHOLD_STATE = tuple(f"{field.name}_" for field in fields(Thresholds))
NOT_FILES = (None, RANDOM_WEIGHTS)  # file parameter values that name no file


class ModelFolderError(LineguardError, ValueError):
    """A model folder that is missing, damaged or not lineguard's; the message names the file."""


def read_config(folder: Path) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(method, params, state) from ``folder/config.json``, its structure checked."""
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise ModelFolderError(f"{folder} is not a lineguard model folder: {CONFIG_FILE} is missing")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFolderError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(config, dict):
        raise ModelFolderError(f"{path}: expected a JSON object, got a {type(config).__name__}")
    version = config.get("format_version")
    if version != FORMAT_VERSION and version not in RENAMED:
        raise ModelFolderError(f"{path}: unsupported model format {version!r}")
    method, params, state = config.get("method"), config.get("params"), config.get("state", {})
    for key, value, kind in (("method", method, str), ("params", params, dict), ("state", state, dict)):
        if not isinstance(value, kind):
            raise ModelFolderError(f"{path}: {key!r} must be a JSON {'string' if kind is str else 'object'}, "
                                   f"got {value!r}")
    return method, renamed(params, method, version), state


def renamed(params: dict[str, Any], method: str, version: int) -> dict[str, Any]:
    """``params`` of a folder saved in format ``version`` under today's names (all renames at once)."""
    for since in range(version, FORMAT_VERSION):
        names = RENAMED.get(since, {}).get(method, {})
        params = {names.get(key, key): value for key, value in params.items()}
    return params


def write_folder(folder: Path, method: str, params: dict[str, Any], tensors: dict[str, Tensor],
                 state: dict[str, Any]) -> Path:
    """Write a model folder: ``state.safetensors`` and ``config.json`` (the current format version)."""
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(folder / STATE_FILE))
    config = {"format_version": FORMAT_VERSION, "method": method, "params": params, "state": state}
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2, default=str))
    return folder


def read_tensors(folder: Path) -> dict[str, Tensor]:
    """The tensors of ``folder/state.safetensors`` (none if the file is absent)."""
    path = folder / STATE_FILE
    if not path.exists():
        return {}
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise ModelFolderError(f"{path}: not a readable safetensors file ({exc})") from None


def check_state(cls: type, tensors: dict[str, Tensor], state: dict[str, Any], folder: Path) -> None:
    """Refuse learned state a model of ``cls`` cannot have (see the module docstring)."""
    for source, names in ((STATE_FILE, [n.partition(".")[0] for n in tensors]), (CONFIG_FILE, list(state))):
        for name in names:
            if not (name.isidentifier() and name.endswith("_") and not name.startswith("_")) or hasattr(cls, name):
                raise ModelFolderError(f"{folder / source}: {name!r} is not learned state of {cls.__name__}")
    for name, tensor in tensors.items():
        integer = name.rsplit(".", 1)[-1] in cls.integer_state
        if tensor.dtype != (torch.int64 if integer else torch.float32):
            raise ModelFolderError(f"{folder / STATE_FILE}: tensor {name!r} is {tensor.dtype}, expected "
                                   f"{'torch.int64' if integer else 'torch.float32'}")
    present = [name for name in THRESHOLD_STATE if name in state]
    if present:
        if len(present) < len(THRESHOLD_STATE):
            missing = ", ".join(sorted(set(THRESHOLD_STATE) - set(present)))
            raise ModelFolderError(f"{folder / CONFIG_FILE}: thresholds are incomplete: {missing} missing")
        values = {name[:-1]: state[name] for name in THRESHOLD_STATE}
        try:
            if not isinstance(values.pop("calibration"), str) or not all(
                    isinstance(v, int | float) and not isinstance(v, bool) for v in values.values()):
                raise CalibrationError("thresholds and centres must be numbers, calibration a text")
            Thresholds(**values)
        except CalibrationError as exc:
            raise ModelFolderError(f"{folder / CONFIG_FILE}: invalid thresholds: {exc}") from None


def bundle_files(params: dict[str, Any], names: tuple[str, ...], folder: Path) -> dict[str, Any]:
    """``params`` with every file parameter made a path relative to ``folder``, copying what lies outside it
    there: a weights file as ``<name>.safetensors``, a folder's files into ``<name>/``."""
    params = dict(params)
    for name in names:
        if name not in params or params[name] in NOT_FILES:
            continue
        source = Path(params[name]).resolve()
        if source.is_relative_to(folder.resolve()):
            params[name] = str(source.relative_to(folder.resolve()))
        elif source.is_dir():
            (folder / name).mkdir(exist_ok=True)
            for file in source.iterdir():
                if file.is_file() and not file.is_symlink():
                    shutil.copyfile(file, folder / name / file.name)
            params[name] = name
        else:
            save_weights_file(load_weights_file(source), folder / f"{name}.safetensors")
            params[name] = f"{name}.safetensors"
    return params


def resolve_files(params: dict[str, Any], names: tuple[str, ...], folder: Path) -> dict[str, Any]:
    """``params`` with every file parameter a path inside ``folder``; anything else is refused."""
    params = dict(params)
    for name in names:
        if name not in params or params[name] in NOT_FILES:
            continue
        value = params[name]
        target = (folder / str(value)).resolve()
        where = f"{folder / CONFIG_FILE}: parameter {name}={value!r}"
        if not isinstance(value, str) or Path(value).is_absolute() or not target.is_relative_to(folder.resolve()):
            raise ModelFolderError(f"{where} points outside the model folder, which must be self-contained: copy "
                                   "the file into it and name it relative to the folder")
        if not target.exists():
            raise ModelFolderError(f"{where}: no such file in the model folder")
        if target.is_file() and target.suffix != ".safetensors":
            raise ModelFolderError(f"{where}: only safetensors files are read from a model folder")
        params[name] = str(target)
    return params
