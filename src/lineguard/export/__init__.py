"""Edge deployment: a fitted detector as one ONNX graph (or OpenVINO IR) plus ``export.json``, run without
PyTorch on onnxruntime or OpenVINO.

    from lineguard.export import export_detector, load_export
    export_detector(detector, "exports/bottle", format="onnx")      # needs torch and onnx (lineguard[export])
    model = load_export("exports/bottle", runtime="onnxruntime")    # needs neither torch nor lineguard's methods
    result = model.predict(images)                                  # numpy (N, 3, S, S) -> scores, maps

Only the runtime side is imported eagerly here; ``export_detector`` loads PyTorch on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lineguard.export.runtime import RUNTIMES, ArrayPrediction, ExportedModel, load_export
from lineguard.export.spec import ExportFolderError, is_export

if TYPE_CHECKING:
    from lineguard.export.exporter import export_detector
    from lineguard.export.graphs import NotExportableError

__all__ = ["RUNTIMES", "ArrayPrediction", "ExportFolderError", "ExportedModel", "NotExportableError",
           "export_detector", "is_export", "load_export"]


def __getattr__(name: str) -> Any:
    if name == "export_detector":
        from lineguard.export.exporter import export_detector

        return export_detector
    if name == "NotExportableError":
        from lineguard.export.graphs import NotExportableError

        return NotExportableError
    raise AttributeError(f"module 'lineguard.export' has no attribute {name!r}")
