"""``lineguard export``: a fitted model as one graph (ONNX or OpenVINO IR) that runs without PyTorch."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from lineguard.cli.app import app, out, warn
from lineguard.cli.options import OutOpt
from lineguard.extras import MissingExtraError


@app.command("export")
def export_command(
        model_dir: Annotated[Path, typer.Argument(help="Fitted (and calibrated) model folder.")],
        out_dir: OutOpt,
        format: Annotated[str, typer.Option("--format", help="onnx (onnxruntime or OpenVINO) or openvino (IR).")
                          ] = "onnx") -> None:
    """Export a model to one graph from images to scores and maps, with export.json (thresholds, working size,
    parameters) beside it. `lineguard predict`, `serve` and `lineguard.load` take the folder as they take a
    model folder, on onnxruntime or OpenVINO, without PyTorch (`pip install ./runtime` on the line PC)."""
    if importlib.util.find_spec("torch") is None:
        raise MissingExtraError("lineguard export needs PyTorch: run it where the model was fitted (the full "
                                "install, pip install 'lineguard[export]'), not with lineguard-runtime")
    from lineguard.export.exporter import export_detector
    from lineguard.methods import load

    detector = load(model_dir)
    if detector.thresholds is None:
        warn("the model has no thresholds: the export gives scores but no decisions (see `lineguard calibrate`)")
    folder = export_detector(detector, out_dir, format=format)
    size = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
    out.print(escape(f"exported {detector.name} ({format}, {size / 2**20:.1f} MB) to {folder}"))
