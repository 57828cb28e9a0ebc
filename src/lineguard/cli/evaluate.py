"""``lineguard evaluate``, ``benchmark`` and ``demo``: fit, score a labelled test split, and measure."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from lineguard.cli.app import app, console, out, report_failures, warn
from lineguard import DEFAULT_METHOD
from lineguard.cli.options import (BackboneOpt, BatchSizeOpt, DataOpt, DeviceOpt, ImageSizeOpt, KeepAspectOpt,
                                   MethodOpt, OverlapOpt, ParamOpt, SeedOpt, ShotsOpt, TileOpt, WeightsOpt,
                                   build_detector)


def print_result(result, title: str) -> None:
    table = Table(title=title)
    for column in ("image AUROC", "pixel AUROC", "AUPRO", "fit s", "images/s", "peak RSS MB"):
        table.add_column(column, justify="right")
    m = result.metrics
    table.add_row(*(f"{m.get(k, float('nan')):.4f}" for k in ("image_auroc", "pixel_auroc", "aupro")),
                  f"{result.fit_seconds:.1f}", f"{result.images_per_second:.2f}", f"{result.peak_rss_mb:.0f}")
    out.print(table)
    report_failures(result.failed)


@app.command()
def evaluate(method: MethodOpt = DEFAULT_METHOD, data: DataOpt = ..., backbone: BackboneOpt = None,
             shots: ShotsOpt = None, seed: SeedOpt = 0, image_size: ImageSizeOpt = None,
             weights: WeightsOpt = None, device: DeviceOpt = None, param: ParamOpt = None,
             batch_size: BatchSizeOpt = 16, tile: TileOpt = None, overlap: OverlapOpt = 0,
             keep_aspect: KeepAspectOpt = False,
             json_path: Annotated[Path | None, typer.Option("--json", help="Write metrics as JSON.")] = None,
             report: Annotated[Path | None, typer.Option(help="Write an HTML report into this folder.")] = None
             ) -> None:
    """Fit on DATA's good training images (or --shots of them), score its test set, print the metrics."""
    from lineguard.evaluation import evaluate_detector
    from lineguard.io.datasets import load_dataset

    detector = build_detector(method, backbone=backbone, image_size=image_size, weights=weights, device=device,
                              seed=seed, params=param, tile=tile, overlap=overlap, keep_aspect=keep_aspect)
    dataset = load_dataset(data)
    result = evaluate_detector(detector, dataset, image_size=detector.image_size, shots=shots, seed=seed,
                               batch_size=batch_size)
    print_result(result, f"{method} on {dataset.name}" + (f", {shots} shots" if shots else ""))
    if json_path:
        record = {"method": method, "params": detector.get_params(), "data": str(data), "shots": shots,
                  "seed": seed, **result.summary()}
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(record, indent=2, default=str))
    if report:
        page = write_evaluation_report(report, result, f"{method} on {dataset.name}")
        out.print(f"report: {page}")


def write_evaluation_report(folder: Path, result, title: str) -> Path:
    """The report with decisions at the F1-max threshold of the test labels themselves: the best a threshold
    can do on these images (optimistic; a line calibrates on held-out good images, see `fit`)."""
    import torch

    from lineguard.metrics import MetricError
    from lineguard.report.runs import evaluation_report
    from lineguard.scoring.threshold import CalibrationError, calibrate

    labels = torch.tensor([s.label for s in result.samples])
    try:
        thresholds = calibrate(result.prediction.scores, result.prediction.maps, rule="f1", labels=labels)
        thresholds = replace(thresholds,
                             calibration=f"{thresholds.calibration}, on the test labels (optimistic)")
    except (CalibrationError, MetricError) as exc:
        warn(f"report without decisions: {exc}")
        thresholds = None
    return evaluation_report(folder, result, title=title, thresholds=thresholds)


@app.command()
def benchmark(data: Annotated[list[Path], typer.Option(help="Dataset folders (repeatable).")],
              method: Annotated[list[str], typer.Option("--method", "-m", help="Methods (repeatable).")],
              out_dir: Annotated[Path, typer.Option("--out", help="Folder for results.jsonl and results.md.")],
              backbone: Annotated[list[str] | None, typer.Option(help="Backbones (repeatable; default: each "
                                                                             "method's own).")] = None,
              shots: Annotated[list[int] | None, typer.Option(help="Shot counts; none = all good images.")] = None,
              seeds: Annotated[list[int] | None, typer.Option(help="Support draws per shot count.")] = None,
              param: ParamOpt = None, image_size: ImageSizeOpt = None) -> None:
    """Run every method × backbone × dataset × shots × seed, each in its own process (clean peak memory);
    finished runs are kept, so an interrupted benchmark resumes."""
    from lineguard import benchmarking

    runs = benchmarking.plan(data=data, methods=method, backbones=backbone or [None],
                             shots=shots or [None], seeds=seeds or [0], params=param or [],
                             image_size=image_size)
    results = benchmarking.run_all(runs, out_dir, runner=run_subprocess)
    table = benchmarking.write_table(results, out_dir / "results.md")
    out.print(table)


def run_subprocess(args: list[str]) -> int:
    return subprocess.call([sys.executable, "-m", "lineguard", *args])


@app.command()
def demo(out_dir: Annotated[Path, typer.Option("--out", help="Where data and report go.")] = Path("lineguard-demo"),
         method: MethodOpt = DEFAULT_METHOD, backbone: BackboneOpt = None, seed: SeedOpt = 0) -> None:
    """Generate synthetic parts with planted defects, detect them, and write an HTML report. Offline."""
    from lineguard.evaluation import evaluate_detector
    from lineguard.io.datasets import load_dataset
    from lineguard.synthetic import write_mvtec_layout

    data = write_mvtec_layout(out_dir / "data", kind="part", size=256, n_train=16, n_test_good=8,
                              n_test_defective=8, seed=seed)
    console.print(f"synthetic dataset written to {data}")
    detector = build_detector(method, backbone=backbone, image_size=None, weights=None, device=None, seed=seed,
                              params=None)
    result = evaluate_detector(detector, load_dataset(data), image_size=detector.image_size, seed=seed)
    print_result(result, f"demo: {method} on synthetic parts")
    page = write_evaluation_report(out_dir / "report", result, f"lineguard demo: {method} on synthetic parts")
    out.print(f"report: {page.resolve()}")
