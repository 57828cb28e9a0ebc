"""The ``lineguard`` command: fit, predict, evaluate, benchmark, demo — one shape for every method.

Method parameters are not re-declared here: ``--param KEY=VALUE`` is checked against the method's own
constructor (``lineguard methods`` lists them), so no flag can go dead when a method changes. Common
settings (backbone, image size, weights, device) are passed only to methods that take them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from lineguard import benchmarking
from lineguard.backbones import WeightsNotFoundError, available_backbones
from lineguard.evaluation import EvaluationResult, evaluate_detector
from lineguard.io.batches import ImageBatches
from lineguard.io.datasets import DatasetError, load_dataset
from lineguard.io.images import ImageError, list_images, read_image, resize
from lineguard.io.store import ResultStore
from lineguard.methods import (
    DEFAULT_METHOD,
    Detector,
    NotFittedError,
    available_methods,
    create,
    load,
    method_class,
)
from lineguard.metrics import MetricError
from lineguard.report.html import ReportItem, write_report
from lineguard.synthetic import write_mvtec_layout

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Industrial visual anomaly detection: find defective parts and where the defect is.")
console = Console(stderr=True)
out = Console()

DEFAULT_BACKBONE = "effnet-lite0"
USER_ERRORS = (ImageError, DatasetError, WeightsNotFoundError, NotFittedError, MetricError, FileNotFoundError,
               ValueError, TypeError)

MethodOpt = Annotated[str, typer.Option("--method", "-m", help="Method name (see `lineguard methods`).")]
BackboneOpt = Annotated[str | None, typer.Option(help=f"Backbone name (default {DEFAULT_BACKBONE}).")]
ParamOpt = Annotated[list[str] | None, typer.Option("--param", "-p", help="Method parameter KEY=VALUE (repeatable).")]
ImageSizeOpt = Annotated[int | None, typer.Option(help="Working resolution in pixels (default 256).")]
WeightsOpt = Annotated[Path | None, typer.Option(help="Backbone weight file (skips cache and hub).")]
DeviceOpt = Annotated[str | None, typer.Option(help="cpu or cuda.")]
DataOpt = Annotated[Path, typer.Option(help="Dataset folder (MVTec AD, MPDD, VisA, BTAD layout).")]
ShotsOpt = Annotated[int | None, typer.Option(help="Use only K random good training images.")]
SeedOpt = Annotated[int, typer.Option(help="Seed for the choice of shots and the method's randomness.")]


def parse_param(text: str) -> tuple[str, Any]:
    """``KEY=VALUE``; the value is read as JSON (numbers, true/false, null, [lists]) or else kept as text."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise typer.BadParameter(f"expected KEY=VALUE, got {text!r}")
    try:
        return key.strip(), json.loads(value)
    except json.JSONDecodeError:
        return key.strip(), value


def build_detector(method: str, *, backbone: str | None, image_size: int | None, weights: Path | None,
                   device: str | None, seed: int | None, params: list[str] | None) -> Detector:
    """Create ``method`` from the common options plus ``--param`` values, checked against its signature."""
    accepted = set(method_class(method).param_names())
    values: dict[str, Any] = dict(parse_param(p) for p in params or [])
    common = {"backbone": backbone, "image_size": image_size, "weights": str(weights) if weights else None,
              "device": device, "seed": seed}
    for key, value in common.items():
        if key in accepted and key not in values and (value is not None or key == "backbone"):
            values[key] = DEFAULT_BACKBONE if key == "backbone" and value is None else value
        elif value is not None and key not in accepted and key != "seed":
            raise typer.BadParameter(f"method {method!r} takes no {key}")
    return create(method, **values)


def working_size(detector: Detector) -> int:
    return int(getattr(detector, "image_size", 256))


def print_result(result: EvaluationResult, title: str) -> None:
    table = Table(title=title)
    for column in ("image AUROC", "pixel AUROC", "AUPRO", "fit s", "images/s", "peak RSS MB"):
        table.add_column(column, justify="right")
    m = result.metrics
    table.add_row(*(f"{m.get(k, float('nan')):.4f}" for k in ("image_auroc", "pixel_auroc", "aupro")),
                  f"{result.fit_seconds:.1f}", f"{result.images_per_second:.2f}", f"{result.peak_rss_mb:.0f}")
    out.print(table)
    report_failures(result.failed)


def report_failures(failed: list[tuple[Path, str]]) -> None:
    if failed:
        console.print(f"[yellow]{len(failed)} file(s) could not be read and were skipped:[/yellow]")
        for path, reason in failed:
            console.print(f"  {path}: {reason}")


@app.command()
def methods() -> None:
    """List the methods and their parameters with defaults."""
    import inspect

    for name in available_methods():
        cls = method_class(name)
        signature = inspect.signature(cls.__init__)
        params = ", ".join(f"{p.name}={p.default!r}" for p in signature.parameters.values() if p.name != "self")
        kind = "normal images" if cls.uses_normal_images else "no training data"
        out.print(f"[bold]{name}[/bold] ({kind}): {params}")


@app.command()
def backbones() -> None:
    """List the backbone names."""
    for name in available_backbones():
        out.print(name)


@app.command()
def fit(method: MethodOpt = DEFAULT_METHOD, data: DataOpt = ..., out_dir: Annotated[Path, typer.Option("--out")] = ...,
        backbone: BackboneOpt = None, shots: ShotsOpt = None, seed: SeedOpt = 0, image_size: ImageSizeOpt = None,
        weights: WeightsOpt = None, device: DeviceOpt = None, param: ParamOpt = None,
        batch_size: int = 16) -> None:
    """Fit a detector on the good training images of DATA and save it to --out."""
    from lineguard.evaluation import select_support

    detector = build_detector(method, backbone=backbone, image_size=image_size, weights=weights, device=device,
                              seed=seed, params=param)
    dataset = load_dataset(data)
    support = select_support(dataset, shots, seed)
    batches = ImageBatches(support, size=working_size(detector), batch_size=batch_size)
    detector.fit(batches)
    detector.save(out_dir)
    report_failures(batches.failed)
    out.print(f"fitted {method} on {len(batches.loaded)} images; saved to {out_dir}")


@app.command()
def predict(inputs: Annotated[list[Path], typer.Argument(help="[MODEL_DIR] then images or folders.")],
            out_dir: Annotated[Path, typer.Option("--out", help="Results folder (resumable).")],
            method: Annotated[str | None, typer.Option("--method", "-m", help="A test-batch method: no model.")] = None,
            backbone: BackboneOpt = None, image_size: ImageSizeOpt = None, weights: WeightsOpt = None,
            device: DeviceOpt = None, seed: SeedOpt = 0, param: ParamOpt = None, batch_size: int = 16,
            report: Annotated[bool, typer.Option(help="Also write an HTML report into --out.")] = True) -> None:
    """Score images with a saved model (or a test-batch --method) and append results to --out."""
    if method:
        detector = build_detector(method, backbone=backbone, image_size=image_size, weights=weights,
                                  device=device, seed=seed, params=param)
        if detector.uses_normal_images:
            raise typer.BadParameter(f"{method} needs normal images: run `lineguard fit` and pass the model folder")
        paths = list_images(*inputs)
    else:
        if len(inputs) < 2:
            raise typer.BadParameter("give a model folder and at least one image or folder")
        detector = load(inputs[0])
        paths = list_images(*inputs[1:])
    store = ResultStore(out_dir)
    paths = [p.resolve() for p in paths]
    todo = [p for p in paths if p not in store]
    console.print(f"{len(paths)} images, {len(paths) - len(todo)} already in {store.path}, {len(todo)} to score")
    # A test-batch method scores the whole batch against itself; a fitted model works chunk by chunk so that
    # results are on disk as soon as they exist.
    chunks = [paths] if not detector.uses_normal_images else [todo[i:i + 4 * batch_size]
                                                               for i in range(0, len(todo), 4 * batch_size)]
    failed: list[tuple[Path, str]] = []
    for chunk in chunks if todo else []:
        batches = ImageBatches(chunk, size=working_size(detector), batch_size=batch_size)
        prediction = detector.predict(batches)
        failed += batches.failed
        for path, score, anomaly_map in zip(batches.loaded, prediction.scores, prediction.maps, strict=True):
            if path not in store:
                store.append({"path": str(path), "score": float(score), "method": detector.name},
                             anomaly_map.numpy())
    report_failures(failed)
    out.print(f"{len(store)} results in {store.path}")
    if report and len(store):
        page = write_store_report(store, detector)
        out.print(f"report: {page}")


def write_store_report(store: ResultStore, detector: Detector) -> Path:
    items = []
    for row in store.rows:
        anomaly_map = store.load_map(row)
        image = resize(read_image(row["path"]), anomaly_map.shape)
        items.append(ReportItem(Path(row["path"]).name, to_uint8(image), anomaly_map, row["score"]))
    return write_report(store.folder / "report", items, title=f"lineguard {detector.name}: {store.folder}")


def to_uint8(image) -> np.ndarray:
    """(3, H, W) float tensor in [0, 1] -> (H, W, 3) uint8."""
    return (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


@app.command()
def evaluate(method: MethodOpt = DEFAULT_METHOD, data: DataOpt = ..., backbone: BackboneOpt = None,
             shots: ShotsOpt = None, seed: SeedOpt = 0, image_size: ImageSizeOpt = None,
             weights: WeightsOpt = None, device: DeviceOpt = None, param: ParamOpt = None, batch_size: int = 16,
             json_path: Annotated[Path | None, typer.Option("--json", help="Write metrics as JSON.")] = None,
             report: Annotated[Path | None, typer.Option(help="Write an HTML report into this folder.")] = None
             ) -> None:
    """Fit on DATA's good training images (or --shots of them), score its test set, print the metrics."""
    detector = build_detector(method, backbone=backbone, image_size=image_size, weights=weights, device=device,
                              seed=seed, params=param)
    dataset = load_dataset(data)
    result = evaluate_detector(detector, dataset, image_size=working_size(detector), shots=shots, seed=seed,
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


def write_evaluation_report(folder: Path, result: EvaluationResult, title: str) -> Path:
    size = result.prediction.maps.shape[-1]
    items = [ReportItem(s.path.name, to_uint8(resize(read_image(s.path), size)), m.numpy(), float(score),
                        label=s.defect, mask=mask.numpy())
             for s, m, score, mask in zip(result.samples, result.prediction.maps, result.prediction.scores,
                                          result.masks, strict=True)]
    return write_report(folder, items, title=title, metrics=result.metrics)


@app.command()
def benchmark(data: Annotated[list[Path], typer.Option(help="Dataset folders (repeatable).")],
              method: Annotated[list[str], typer.Option("--method", "-m", help="Methods (repeatable).")],
              out_dir: Annotated[Path, typer.Option("--out", help="Folder for results.jsonl and results.md.")],
              backbone: Annotated[list[str] | None, typer.Option(help="Backbones (repeatable).")] = None,
              shots: Annotated[list[int] | None, typer.Option(help="Shot counts; none = all good images.")] = None,
              seeds: Annotated[list[int] | None, typer.Option(help="Support draws per shot count.")] = None,
              param: ParamOpt = None, image_size: ImageSizeOpt = None) -> None:
    """Run every method × backbone × dataset × shots × seed, each in its own process (clean peak memory);
    finished runs are kept, so an interrupted benchmark resumes."""
    runs = benchmarking.plan(data=data, methods=method, backbones=backbone or [DEFAULT_BACKBONE],
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
    data = write_mvtec_layout(out_dir / "data", kind="part", size=256, n_train=16, n_test_good=8,
                              n_test_defective=8, seed=seed)
    console.print(f"synthetic dataset written to {data}")
    detector = build_detector(method, backbone=backbone, image_size=None, weights=None, device=None, seed=seed,
                              params=None)
    result = evaluate_detector(detector, load_dataset(data), image_size=working_size(detector), seed=seed)
    print_result(result, f"demo: {method} on synthetic parts")
    page = write_evaluation_report(out_dir / "report", result, f"lineguard demo: {method} on synthetic parts")
    out.print(f"report: {page.resolve()}")


def main() -> None:
    """Console entry point: user mistakes print one clear line and exit 2, without a traceback."""
    try:
        app()
    except USER_ERRORS as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise SystemExit(2) from None
