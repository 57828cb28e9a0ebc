"""What an export folder holds, written down in ``export.json`` beside the graph (no PyTorch needed to read it).

The graph takes ``images``, (N, 3, H, W) float32 RGB in [0, 1] at the working size (S × S, or H × W), and
gives ``scores`` (N,) and ``maps`` (N, H, W): raw scores, in the units of the model it came from. Everything a
line needs to turn them into decisions is in the JSON: the thresholds and their centres (the normalised scale),
the working size, the method and its parameters, and the input normalisation the graph applies itself
(for readers only).

A tiled model (``--tile``) exports its detector's graph, which scores tiles at the working size, and its
``tiling`` (``tile``, ``overlap``): the runtime cuts each image at its own size into those tiles and stitches
their maps (``lineguard.tile_geometry``), as the model does.

Files: ``model.onnx`` (+ ``model.onnx.data`` when the weights are stored as external data) for format
``onnx``; ``model.xml`` + ``model.bin`` (OpenVINO IR) for format ``openvino``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from lineguard.errors import LineguardError

SPEC_FILE = "export.json"
FORMAT_VERSION = 1
TILED_FORMAT_VERSION = 2  # a tiled export's: a reader of format 1 would ignore the tiling and score whole images
FORMATS = {"onnx": "model.onnx", "openvino": "model.xml"}
EXTERNAL_DATA_FILE = "model.onnx.data"
INPUT_NAME = "images"
OUTPUT_NAMES = ("scores", "maps")
OPTIONAL = frozenset({"tiling"})  # fields of format 2 only


class ExportFolderError(LineguardError, ValueError):
    """A folder that is not a lineguard export, or one this version cannot read."""


@dataclass
class ExportSpec:
    """The contents of ``export.json``."""

    method: str
    params: dict[str, Any]
    image_size: int | list[int]  # S (S × S) or [H, W]
    format: str
    graph: str  # file name of the graph, beside the JSON
    thresholds: dict[str, Any] | None  # lineguard.scoring.threshold.Thresholds fields, or None (scores only)
    input_normalization: dict[str, list[float]] | None  # the backbone's mean and std, applied inside the graph
    external_data: str | None = None  # file of the ONNX weights when stored outside the protobuf
    details: dict[str, Any] = field(default_factory=dict)  # bank size, search blocks, opset, versions
    tiling: dict[str, int] | None = None  # {"tile": T, "overlap": O} of a tiled model; None: whole images
    format_version: int = FORMAT_VERSION

    def write(self, folder: Path) -> Path:
        path = folder / SPEC_FILE
        path.write_text(json.dumps(asdict(self), indent=2, default=str))
        return path


def is_export(folder: str | Path) -> bool:
    """True for a folder written by ``lineguard export`` (it holds ``export.json``)."""
    return (Path(folder) / SPEC_FILE).is_file()


def read_spec(folder: str | Path) -> ExportSpec:
    """``export.json`` of ``folder``, checked: a clear error names the folder and what is wrong."""
    path = Path(folder) / SPEC_FILE
    if not path.is_file():
        raise ExportFolderError(f"{folder} is not a lineguard export folder: {SPEC_FILE} is missing "
                                "(make one with `lineguard export MODEL_DIR --out EXPORT_DIR`)")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ExportFolderError(f"{path}: not valid JSON ({error})") from None
    if raw.get("format_version") not in (FORMAT_VERSION, TILED_FORMAT_VERSION):
        raise ExportFolderError(f"{path}: unsupported export format {raw.get('format_version')!r} "
                                f"(this lineguard reads {FORMAT_VERSION} and {TILED_FORMAT_VERSION})")
    missing = [f.name for f in fields(ExportSpec) if f.name not in raw and f.name not in OPTIONAL]
    if missing:
        raise ExportFolderError(f"{path}: missing {', '.join(missing)}")
    spec = ExportSpec(**{f.name: raw[f.name] for f in fields(ExportSpec) if f.name in raw})
    if not (Path(folder) / spec.graph).is_file():
        raise ExportFolderError(f"{folder}: the graph {spec.graph} named in {SPEC_FILE} is missing")
    return spec
