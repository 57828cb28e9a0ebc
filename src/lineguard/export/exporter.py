"""A fitted detector -> an export folder: one ONNX graph (or OpenVINO IR) and ``export.json``.

The graph (``graphs.scoring_graph``) is traced with PyTorch's TorchScript-based ONNX exporter: it needs nothing
beyond torch and onnx, and the same detector always gives the same graph. (torch 2.9+ deprecates it in favour
of the ``torch.export``-based exporter, which needs onnxscript and re-derives the graph symbolically; lineguard's
graphs are plain tensor code, which the tracer records as it runs.) The batch axis is left free; the working
size is fixed. Opset 18: OpenVINO 2026.4 reads opset 17's ReduceLogSumExp (PatchCore's re-weighting) as a
reduction over every axis, and opset 18's, whose axes are an input, correctly.

Large graphs: protobuf cannot hold a file over 2 GB, so when the graph's weights exceed
:data:`EXTERNAL_DATA_BYTES` (1 GiB, half that limit, leaving room for the graph itself) every weight of
1 KiB or more goes to ``model.onnx.data`` beside ``model.onnx`` (ONNX external data); onnxruntime and
OpenVINO read both. A 1,000,000 × 152 float32 bank is 608 MB and stays inside; PatchCore on a
2,000,000-row bank goes outside. OpenVINO IR keeps weights in ``model.bin`` anyway.
"""

from __future__ import annotations

import tempfile
import warnings
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from lineguard import __version__
from lineguard.errors import ParameterError
from lineguard.export.graphs import NotExportableError, scoring_graph
from lineguard.export.search import BlockedBank
from lineguard.export.spec import (EXTERNAL_DATA_FILE, FORMAT_VERSION, FORMATS, INPUT_NAME, OUTPUT_NAMES,
                                   TILED_FORMAT_VERSION, ExportSpec)
from lineguard.extras import require
from lineguard.io.images import ImageSize, size_hw
from lineguard.methods.base import Detector
from lineguard.native import NativeSizeDetector
from lineguard.tiling import TiledDetector

OPSET = 18
EXTERNAL_DATA_BYTES = 1 << 30  # weights above this go to model.onnx.data (protobuf's limit is 2 GB)
_SMALL_TENSOR_BYTES = 1024  # tensors below this stay inside the protobuf even then


def export_detector(detector: Detector, folder: str | Path, *, format: str = "onnx",
                    external_data_bytes: int = EXTERNAL_DATA_BYTES) -> Path:
    """Write ``detector`` (fitted) to ``folder`` as format ``onnx`` or ``openvino``; returns the folder.

    Raises :class:`lineguard.export.graphs.NotExportableError` (a ``ValueError``) for methods that cannot
    be exported, with the reason.
    """
    if format not in FORMATS:
        raise ParameterError(f"export format must be one of {', '.join(FORMATS)}, got {format!r}")
    tiling = None
    if isinstance(detector, TiledDetector):  # the graph scores tiles; the runtime cuts and stitches them
        tiling, detector = detector.settings(), detector.detector
    elif isinstance(detector, NativeSizeDetector):
        raise NotExportableError(f"cannot export a {detector.wrapping} model: the graph takes images at the "
                                 "working size, and padding an image and mapping the map back to it happen outside "
                                 "the graph; export a model fitted without it (a non-square working size, "
                                 "--image-size HxW, exports)")
    graph = scoring_graph(detector)
    details = {"opset": OPSET, "exporter": "torch.onnx TorchScript tracer", "torch": torch.__version__,
               "lineguard": __version__, **search_details(graph)}
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".export-") as scratch:
        traced = Path(scratch) / "traced.onnx"
        trace(graph, detector.image_size, traced)
        del graph
        if format == "onnx":
            external = write_onnx(traced, folder, external_data_bytes)
        else:
            details["openvino"] = write_openvino(traced, folder)
            external = None
    spec = ExportSpec(method=detector.name, params={**detector.get_params(), **(tiling or {})},
                      image_size=detector.image_size, tiling=tiling,
                      format=format, graph=FORMATS[format],
                      thresholds=asdict(detector.thresholds) if detector.thresholds is not None else None,
                      input_normalization=input_normalization(detector), external_data=external,
                      details=details, format_version=TILED_FORMAT_VERSION if tiling else FORMAT_VERSION)
    spec.write(folder)
    return folder


def trace(graph: nn.Module, image_size: ImageSize, path: Path) -> None:
    """Record ``graph`` on one example image at the working size (S × S or H × W) and write it as ONNX, batch
    axis free."""
    device = next(iter(graph.buffers()), torch.empty(0)).device
    example = torch.rand(1, 3, *size_hw(image_size), generator=torch.Generator().manual_seed(0)).to(device)
    free_batch = {INPUT_NAME: {0: "N"}, **{name: {0: "N"} for name in OUTPUT_NAMES}}
    with warnings.catch_warnings(), torch.no_grad():
        # Expected, and said once here rather than printed each export: the exporter is the deprecated one (see
        # the module docstring); shape checks turn traced sizes into Python values (the size is fixed, the
        # batch axis is never checked); a constant sliced with a step is left unfolded (computed at run time)
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Constant folding - Only steps=1", category=UserWarning)
        torch.onnx.export(graph, (example,), str(path), dynamo=False, opset_version=OPSET, input_names=[INPUT_NAME],
                          output_names=list(OUTPUT_NAMES), dynamic_axes=free_batch, do_constant_folding=True)


def write_onnx(traced: Path, folder: Path, external_data_bytes: int) -> str | None:
    """Save the traced graph as ``model.onnx``, weights outside it when they exceed ``external_data_bytes``;
    returns the external data file's name, or None."""
    onnx = require("onnx", "lineguard export")

    model = onnx.load(str(traced))  # external data the tracer may have written is read in too
    weights = sum(len(tensor.raw_data) for tensor in model.graph.initializer)
    external = weights > external_data_bytes
    target = folder / FORMATS["onnx"]
    (folder / EXTERNAL_DATA_FILE).unlink(missing_ok=True)  # onnx appends to an existing file
    onnx.save_model(model, str(target), save_as_external_data=external, all_tensors_to_one_file=True,
                    location=EXTERNAL_DATA_FILE, size_threshold=_SMALL_TENSOR_BYTES)
    return EXTERNAL_DATA_FILE if external else None


def write_openvino(traced: Path, folder: Path) -> str:
    """Convert the traced ONNX graph to OpenVINO IR (``model.xml`` + ``model.bin``), weights kept in float32
    (``save_model`` would halve them to float16 by default, and decisions would move); returns its version."""
    ov = require("openvino", "lineguard export --format openvino")

    model = ov.convert_model(str(traced))
    ov.save_model(model, str(folder / FORMATS["openvino"]), compress_to_fp16=False)
    return ov.get_version()


def search_details(graph: nn.Module) -> dict[str, list[dict]]:
    """Rows and block size of each bank the graph searches (exactly), for ``export.json``."""
    return {"banks": [{"module": name, "rows": module.rows, "block_rows": module.block_rows}
                      for name, module in graph.named_modules() if isinstance(module, BlockedBank)]}


def input_normalization(detector: Detector) -> dict[str, list[float]] | None:
    """The backbone's mean and std (applied inside the graph), or None for methods without a backbone."""
    extractor = getattr(detector, "extractor", None)
    if extractor is None:
        return None
    return {"mean": list(extractor.backbone.mean), "std": list(extractor.backbone.std)}

