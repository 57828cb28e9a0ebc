"""The ``lineguard`` command: fit, predict, evaluate, benchmark, demo — one shape for every method.

Method parameters are not re-declared here: ``--param KEY=VALUE`` is checked against the method's own
constructor (``lineguard methods`` lists them), so no flag can go dead when a method changes. Common
settings (backbone, image size, weights, device) are passed only to methods that take them.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import torch
import typer
from rich.console import Console
from rich.table import Table

from lineguard import benchmarking
from lineguard.backbones import WeightsNotFoundError, available_backbones
from lineguard.evaluation import EvaluationResult, evaluate_detector
from lineguard.io.batches import ImageBatches
from lineguard.io.datasets import DatasetError, load_dataset
from lineguard.io.images import ImageError, image_size, list_images
from lineguard.io.store import RESULTS_FILE, ResultStore
from lineguard.methods import (
    DEFAULT_METHOD,
    Detector,
    NotFittedError,
    available_methods,
    create,
    load,
    method_class,
)
from lineguard.methods.base import NotCalibratedError
from lineguard.metrics import MetricError
from lineguard.report.overlay import mask_image
from lineguard.report.runs import (OtherThresholdsError, evaluation_report, findings, save_thresholds,
                                   store_report)
from lineguard.scoring.regions import Finding
from lineguard.scoring.threshold import RULES, CalibrationError, Thresholds
from lineguard.scoring.threshold import calibrate as calibrate_thresholds
from lineguard.synthetic import write_mvtec_layout

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Industrial visual anomaly detection: find defective parts and where the defect is.")
console = Console(stderr=True)
out = Console()

DEFAULT_BACKBONE = "effnet-lite0"
GOOD_IMAGE_RULES = tuple(r for r in RULES if r != "f1")  # the rules that need no labels
MIN_BATCH_FOR_DECISIONS = 8  # a test-batch method decides from its batch's median and MAD: not from fewer images
USER_ERRORS = (ImageError, DatasetError, WeightsNotFoundError, NotFittedError, NotCalibratedError,
               MetricError, FileNotFoundError, ValueError, TypeError)

MethodOpt = Annotated[str, typer.Option("--method", "-m", help="Method name (see `lineguard methods`).")]
BackboneOpt = Annotated[str | None, typer.Option(help=f"Backbone name (default {DEFAULT_BACKBONE}).")]
ParamOpt = Annotated[list[str] | None, typer.Option("--param", "-p", help="Method parameter KEY=VALUE (repeatable).")]
ImageSizeOpt = Annotated[int | None, typer.Option(help="Working resolution in pixels (default 256).")]
WeightsOpt = Annotated[Path | None, typer.Option(help="Backbone weight file (skips cache and hub).")]
DeviceOpt = Annotated[str | None, typer.Option(help="cpu or cuda.")]
DataOpt = Annotated[Path, typer.Option(help="Dataset folder (MVTec AD, MPDD, VisA, BTAD layout).")]
ShotsOpt = Annotated[int | None, typer.Option(help="Use only K random good training images.")]
SeedOpt = Annotated[int, typer.Option(help="Seed for the choice of shots and the method's randomness.")]
RuleOpt = Annotated[str, typer.Option(help=f"Threshold rule: {', '.join(RULES)} (f1 needs labelled data).")]
FalseAlarmOpt = Annotated[float, typer.Option(help="Target share of good parts rejected (rule quantile).")]


def _positive_mad_factor(value: float) -> float:
    """Checked as the options are read, so a bad value fails before any image is scored."""
    if not value > 0:
        raise typer.BadParameter(f"--mad-factor must be positive, got {value}")
    return value


MadFactorOpt = Annotated[float, typer.Option(callback=_positive_mad_factor,
                                             help="Flag an image whose score lies this many robust sd above the "
                                                  "median score (predict --method: of the batch; watch: of the "
                                                  "recent images).")]


_WORDS = {"true": True, "false": False, "none": None, "null": None}


def parse_param(text: str) -> tuple[str, Any]:
    """``KEY=VALUE``; the value is read as JSON (numbers, true/false, null, [lists]) or else kept as text.
    True/False/None in any case are the constants too: the text "False" would switch an option on."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise typer.BadParameter(f"expected KEY=VALUE, got {text!r}")
    word = value.strip().lower()
    if word in _WORDS:
        return key.strip(), _WORDS[word]
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
        batch_size: int = 16,
        calibrate: Annotated[str, typer.Option(help="Threshold rule on held-out good images: mu3sigma, "
                                                    "mad, quantile, or none.")] = "mu3sigma",
        false_alarm_rate: FalseAlarmOpt = 0.01,
        holdout: Annotated[float, typer.Option(help="Share of good training images held out of fit to "
                                                    "calibrate on (at least 2).")] = 0.2) -> None:
    """Fit a detector on the good training images of DATA, calibrate its thresholds on held-out good images,
    and save it to --out."""
    from lineguard.evaluation import select_support

    detector = build_detector(method, backbone=backbone, image_size=image_size, weights=weights, device=device,
                              seed=seed, params=param)
    dataset = load_dataset(data)
    held_out: list[Path] = []
    if calibrate != "none" and detector.uses_normal_images:
        if calibrate not in GOOD_IMAGE_RULES:
            raise typer.BadParameter(f"--calibrate must be {', '.join(GOOD_IMAGE_RULES)} or none, got {calibrate!r}")
        held_out = holdout_split(dataset.good_train, holdout, seed)
        dataset = replace(dataset, train=[s for s in dataset.train if s.path not in set(held_out)])
    support = select_support(dataset, shots, seed)
    batches = ImageBatches(support, size=working_size(detector), batch_size=batch_size)
    detector.fit(batches)
    report_failures(batches.failed)
    out.print(f"fitted {method} on {len(batches.loaded)} images")
    if held_out:
        calibrate_on(detector, held_out, rule=calibrate, false_alarm_rate=false_alarm_rate,
                     batch_size=batch_size)
    detector.save(out_dir)
    out.print(f"saved to {out_dir}")


def holdout_split(good: list[Path], fraction: float, seed: int) -> list[Path]:
    """A seeded ``fraction`` of the good images (at least 2, at least 1 left to fit on), for calibration: a
    memory bank scores its own images at zero, so thresholds must come from images it has not seen."""
    count = max(2, round(fraction * len(good)))
    if not 0 < fraction < 1 or count >= len(good):
        raise typer.BadParameter(f"cannot hold out {fraction:g} of {len(good)} good images ({count}) for "
                                 "calibration and keep some to fit on: use --calibrate none and `lineguard "
                                 "calibrate` with other good images")
    return sorted(random.Random(seed).sample(good, count))


def calibrate_on(detector: Detector, images: list[Path], *, rule: str, false_alarm_rate: float,
                 batch_size: int, labels: list[int] | None = None) -> None:
    """Score ``images`` (held out from fit) and learn the detector's thresholds from them."""
    batches = ImageBatches(images, size=working_size(detector), batch_size=batch_size)
    prediction = detector.predict(batches)
    report_failures(batches.failed)
    if labels is not None:
        by_path = dict(zip(images, labels, strict=True))
        labels = [by_path[p] for p in batches.loaded]
    detector.calibrate(prediction, rule=rule, false_alarm_rate=false_alarm_rate,
                       labels=None if labels is None else torch.tensor(labels))
    describe_thresholds(detector.thresholds)


def describe_thresholds(thresholds: Thresholds) -> None:
    out.print(f"thresholds ({thresholds.calibration}): image {thresholds.image_threshold:.5g} "
              f"(typical good {thresholds.image_center:.5g}), pixel {thresholds.pixel_threshold:.5g} "
              f"(typical good {thresholds.pixel_center:.5g}); normalised scores put both at 1.0")


@app.command("calibrate")
def calibrate_command(
        model_dir: Annotated[Path, typer.Argument(help="Model folder from `lineguard fit`; updated.")],
        images: Annotated[list[Path] | None, typer.Argument(help="Good images or folders, not fitted on.")
                          ] = None,
        data: Annotated[Path | None, typer.Option(help="Labelled dataset: calibrate on its test split.")
                        ] = None,
        rule: RuleOpt = "mu3sigma", false_alarm_rate: FalseAlarmOpt = 0.01,
        threshold: Annotated[float | None, typer.Option(help="Set the image threshold by hand (raw score).")
                             ] = None,
        pixel_threshold: Annotated[float | None, typer.Option(help="By hand, with --threshold (default: the "
                                                                   "same value).")] = None,
        batch_size: int = 16) -> None:
    """Learn a model's thresholds from good images (mu3sigma, mad, quantile), a labelled dataset (f1, or the good
    images of its test split), or set them by hand; they are saved with the model."""
    detector = load(model_dir)
    if threshold is not None:
        detector.set_thresholds(Thresholds(image_threshold=threshold,
                                           pixel_threshold=pixel_threshold or threshold))
        describe_thresholds(detector.thresholds)
    elif data is not None:
        samples = load_dataset(data).test
        if any(s.label < 0 for s in samples):
            raise CalibrationError(f"{data} has unlabelled test images: pass good images instead of --data")
        calibrate_on(detector, [s.path for s in samples], rule=rule, false_alarm_rate=false_alarm_rate,
                     batch_size=batch_size, labels=[s.label for s in samples])
    elif images:
        calibrate_on(detector, list_images(*images), rule=rule, false_alarm_rate=false_alarm_rate,
                     batch_size=batch_size)
    else:
        raise typer.BadParameter("give good images, --data DATASET or --threshold VALUE")
    detector.save(model_dir)
    out.print(f"saved to {model_dir}")


@app.command()
def predict(inputs: Annotated[list[Path], typer.Argument(help="[MODEL_DIR] then images or folders.")],
            out_dir: Annotated[Path, typer.Option("--out", help="Results folder (resumable).")],
            method: Annotated[str | None, typer.Option("--method", "-m", help="A test-batch method: no model.")] = None,
            backbone: BackboneOpt = None, image_size: ImageSizeOpt = None, weights: WeightsOpt = None,
            device: DeviceOpt = None, seed: SeedOpt = 0, param: ParamOpt = None, batch_size: int = 16,
            mad_factor: MadFactorOpt = 3.0,
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
    thresholds = detector.thresholds
    if thresholds is not None:
        save_thresholds(store.folder, thresholds)
    elif detector.uses_normal_images:
        console.print("[yellow]the model has no thresholds: results get scores but no decisions "
                      "(see `lineguard calibrate`)[/yellow]")
    paths = [p.resolve() for p in paths]
    todo = [p for p in paths if p not in store]
    console.print(f"{len(paths)} images, {len(paths) - len(todo)} already in {store.path}, {len(todo)} to score")
    # A test-batch method scores the whole batch against itself; a fitted model works chunk by chunk so that
    # results are on disk as soon as they exist.
    chunks = [paths] if not detector.uses_normal_images else [todo[i:i + 4 * batch_size]
                                                               for i in range(0, len(todo), 4 * batch_size)]
    failed: list[tuple[Path, str]] = []
    decided, flagged = 0, []  # this run's decisions and the images decided "defect", for the summary
    for chunk in chunks if todo else []:
        batches = ImageBatches(chunk, size=working_size(detector), batch_size=batch_size)
        prediction = detector.predict(batches)
        failed += batches.failed
        if not detector.uses_normal_images:
            thresholds = batch_thresholds(store, prediction.scores, prediction.maps, mad_factor)
        for path, score, anomaly_map, finding in zip(batches.loaded, prediction.scores, prediction.maps,
                                                     findings(prediction.scores, prediction.maps, thresholds),
                                                     strict=True):
            if path not in store:
                store.append(result_row(store, path, float(score), detector.name, finding),
                             anomaly_map.numpy())
                if finding is not None:
                    decided += 1
                    flagged += [path.name] if finding.decision == "defect" else []
    report_failures(failed)
    if decided:
        more = f" and {len(flagged) - 10} more" if len(flagged) > 10 else ""
        out.print(f"{len(flagged)} of {decided} images decided defect" + (f": {', '.join(flagged[:10])}{more}"
                                                                          if flagged else ""))
    out.print(f"{len(store)} results in {store.path}")
    if report and len(store):
        page = write_store_report(store, detector)
        out.print(f"report: {page}")


def batch_thresholds(store: ResultStore, scores: torch.Tensor, maps: torch.Tensor,
                     mad_factor: float) -> Thresholds | None:
    """Decisions for a batch scored against itself, from the batch: median + ``mad_factor`` robust sd of its
    image scores and map maxima (rule ``mad``), since defects are rare in a batch from a line. None (scores
    only) for a batch too small to estimate a spread, scores that do not spread, or an --out folder that holds
    decisions made on another batch."""
    if len(scores) < MIN_BATCH_FOR_DECISIONS:
        console.print(f"[yellow]{len(scores)} images: too few to decide from the batch itself (at least "
                      f"{MIN_BATCH_FOR_DECISIONS}); results get scores only[/yellow]")
        return None
    try:
        thresholds = calibrate_thresholds(scores, maps, rule="mad", mad_factor=mad_factor)
    except CalibrationError as error:
        console.print(f"[yellow]no decisions: {error}[/yellow]")
        return None
    thresholds = replace(thresholds, calibration=f"{thresholds.calibration} of this batch (defects assumed rare)")
    try:
        save_thresholds(store.folder, thresholds)
    except OtherThresholdsError:
        console.print(f"[yellow]{store.folder} holds decisions made on another batch: the new results get scores "
                      "only (use a new --out folder for decisions)[/yellow]")
        return None
    describe_thresholds(thresholds)
    return thresholds


def result_row(store: ResultStore, path: Path, score: float, method: str, finding: Finding | None) -> dict:
    """One results row; a calibrated model adds the decision, the normalised score, the regions (boxes in the
    original image's pixels) and a black/white mask PNG of the regions at the original size."""
    row = {"path": str(path), "score": score, "method": method}
    if finding is not None:
        size = image_size(path)
        name = f"masks/{len(store):06d}.png"
        (store.folder / "masks").mkdir(exist_ok=True)
        mask_image(finding.mask, size).save(store.folder / f"{name}.tmp", format="PNG")
        os.replace(store.folder / f"{name}.tmp", store.folder / name)
        row |= {**finding.to_dict(size), "mask": name}
    return row


def write_store_report(store: ResultStore, detector: Detector) -> Path:
    return store_report(store, title=f"lineguard {detector.name}: {store.folder}")


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
    """The report with decisions at the F1-max threshold of the test labels themselves: the best a threshold
    can do on these images (optimistic; a line calibrates on held-out good images, see `fit`)."""
    labels = torch.tensor([s.label for s in result.samples])
    try:
        thresholds = calibrate_thresholds(result.prediction.scores, result.prediction.maps, rule="f1",
                                          labels=labels)
        thresholds = replace(thresholds,
                             calibration=f"{thresholds.calibration}, on the test labels (optimistic)")
    except (CalibrationError, MetricError) as exc:
        console.print(f"[yellow]report without decisions: {exc}[/yellow]")
        thresholds = None
    return evaluation_report(folder, result, title=title, thresholds=thresholds)


@app.command("report")
def report_command(
        results: Annotated[Path, typer.Argument(help="Results folder written by `lineguard predict`.")],
        data: Annotated[Path | None, typer.Option(help="Dataset whose labels the images have (charts, "
                                                       "ROC, metrics).")] = None,
        out_dir: Annotated[Path | None, typer.Option("--out", help="Report folder (default RESULTS/report).")
                           ] = None) -> None:
    """Write the HTML report of a results folder: inputs, overlays, regions, scores, decisions."""
    if not (results / RESULTS_FILE).is_file():
        raise FileNotFoundError(f"{results} is not a results folder: {RESULTS_FILE} is missing")
    labels = {str(s.path.resolve()): s.defect for s in load_dataset(data).test} if data else None
    page = store_report(ResultStore(results), title=f"lineguard: {results}", labels=labels, folder=out_dir)
    out.print(f"report: {page}")


@app.command("serve")
def serve_command(
        model_dir: Annotated[Path, typer.Argument(help="Calibrated model folder.")],
        host: Annotated[str, typer.Option(help="Interface to listen on (0.0.0.0: all).")] = "127.0.0.1",
        port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
        api_key: Annotated[str | None, typer.Option(envvar="LINEGUARD_API_KEY", show_default=False,
                                                    help="Require this key in the X-API-Key header.")] = None,
        max_upload_mb: Annotated[float, typer.Option(help="Largest accepted file.")] = 20.0,
        max_pixels: Annotated[int, typer.Option(help="Largest accepted image, width x height.")] = 40_000_000,
        max_batch: Annotated[int, typer.Option(help="Most files per /v1/inspect-batch call.")] = 32) -> None:
    """Serve a model: REST API (/v1/inspect, /v1/inspect-batch, /v1/model, /healthz, /docs) and the web page
    at /. The model is loaded once."""
    from lineguard.serve import Limits, serve

    limits = Limits(max_upload_bytes=int(max_upload_mb * 2**20), max_pixels=max_pixels, max_batch=max_batch)
    key_note = " (API key required)" if api_key else ""
    console.print(f"serving {model_dir} on http://{host}:{port}/{key_note}")
    serve(load(model_dir), host=host, port=port, api_key=api_key, limits=limits)


@app.command("export")
def export_command(
        model_dir: Annotated[Path, typer.Argument(help="Fitted (and calibrated) model folder.")],
        out_dir: Annotated[Path, typer.Option("--out", help="Export folder to write.")],
        format: Annotated[str, typer.Option("--format", help="onnx (onnxruntime or OpenVINO) or openvino (IR).")
                          ] = "onnx") -> None:
    """Export a model to one graph from images to scores and maps (ONNX or OpenVINO IR) plus export.json with
    its thresholds, to run without PyTorch (`pip install ./runtime`, lineguard.export.load_export)."""
    from lineguard.export.exporter import export_detector

    detector = load(model_dir)
    if detector.thresholds is None:
        console.print("[yellow]the model has no thresholds: the export gives scores but no decisions "
                      "(see `lineguard calibrate`)[/yellow]")
    folder = export_detector(detector, out_dir, format=format)
    size = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
    out.print(f"exported {detector.name} ({format}, {size / 2**20:.1f} MB) to {folder}")


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


@app.command()
def watch(folder: Annotated[Path, typer.Argument(help="Folder the line's images arrive in.")],
          out_dir: Annotated[Path, typer.Option("--out", help="Results folder, appended image by image.")],
          backbone: BackboneOpt = None, image_size: ImageSizeOpt = None, weights: WeightsOpt = None,
          device: DeviceOpt = None, seed: SeedOpt = 0, param: ParamOpt = None, mad_factor: MadFactorOpt = 3.0,
          max_images: Annotated[int | None, typer.Option(help="Stop after scoring this many images.")] = None,
          idle_timeout: Annotated[float | None, typer.Option(help="Stop after this many seconds with no new "
                                                                  "image.")] = None,
          poll: Annotated[float, typer.Option(help="Seconds between looks at the folder.")] = 0.5) -> None:
    """Score images as they arrive in FOLDER against a rolling reference of recent ones (no training data);
    the threshold adapts to the recent scores. Stops on Ctrl-C, --max-images or --idle-timeout."""
    import math
    from collections import Counter

    from lineguard.io.images import ImageError, read_image, resize
    from lineguard.io.watch import FolderWatcher
    from lineguard.monitor import LineMonitor

    common = {"backbone": backbone or DEFAULT_BACKBONE, "image_size": image_size,
              "weights": str(weights) if weights else None, "device": device, "seed": seed, "mad_factor": mad_factor}
    values = {key: value for key, value in common.items() if value is not None}
    values.update(parse_param(p) for p in param or [])
    accepted = LineMonitor.__init__.__code__.co_varnames[1:LineMonitor.__init__.__code__.co_argcount]
    unknown = sorted(set(values) - set(accepted))
    if unknown:
        raise typer.BadParameter(f"the monitor has no parameter(s) {', '.join(unknown)}; "
                                 f"its parameters are: {', '.join(accepted)}")
    monitor = LineMonitor(**values)
    store = ResultStore(out_dir)
    watcher = FolderWatcher(folder, poll_seconds=poll)
    attempts: Counter[Path] = Counter()
    scored = 0
    console.print(f"watching {folder} (Ctrl-C to stop); results in {store.path}")
    try:
        for path in watcher.follow(idle_timeout=idle_timeout):
            if path.resolve() in store:
                continue
            try:
                image = resize(read_image(path), monitor.image_size)
            except ImageError as exc:
                attempts[path] += 1
                if attempts[path] < 3:  # complete in size but not decodable yet: offered again once it changes
                    watcher.forget(path)
                else:
                    console.print(f"[yellow]skipped[/yellow] {path}: {exc.reason}")
                continue
            decision = monitor.score(image)
            finite = {key: (None if math.isnan(value) else value)
                      for key, value in (("score", decision.score), ("threshold", decision.threshold))}
            store.append({"path": str(path.resolve()), **finite, "anomalous": decision.anomalous,
                          "method": "monitor"}, decision.map.numpy())
            verdict = {None: "warming up", True: "[red]ANOMALOUS[/red]", False: "ok"}[decision.anomalous]
            out.print(f"{decision.index:6d}  {path.name}  score {decision.score:.4f}  {verdict}")
            scored += 1
            if max_images is not None and scored >= max_images:
                break
    except KeyboardInterrupt:
        console.print("stopped")
    out.print(f"{scored} images scored; {len(store)} results in {store.path}")


@app.command("train-encoder")
def train_encoder_command(
        data: Annotated[list[Path], typer.Option(help="Dataset folder of one category (repeat for several).")],
        out_dir: Annotated[Path, typer.Option("--out", help="Encoder folder to write (then: fewshot "
                                                            "--param encoder=FOLDER).")],
        backbone: BackboneOpt = None, image_size: Annotated[int, typer.Option(help="Working resolution.")] = 256,
        weights: WeightsOpt = None, epochs: int = 10, lr: float = 0.05, batch_size: int = 16, seed: SeedOpt = 0,
        device: Annotated[str, typer.Option(help="cpu, cuda, or auto (CUDA when present).")] = "auto",
        resume: Annotated[bool, typer.Option(help="Continue the interrupted run in OUT/checkpoint.")] = False,
        shots: ShotsOpt = None,
        brightness_delta: Annotated[float, typer.Option(help="The second image of a pair is lit by a factor in "
                                                             "[1 − delta, 1 + delta].")] = 0.1) -> None:
    """Train the Siamese category-agnostic encoder on the good images of several categories (checkpointed
    every epoch in OUT/checkpoint), for few-shot detection on categories it has not seen."""
    from lineguard.evaluation import select_support
    from lineguard.io.images import load_batch
    from lineguard.methods.siamese import EncoderConfig, save_encoder, train_encoder

    config = EncoderConfig(backbone=backbone or DEFAULT_BACKBONE, image_size=image_size,
                           weights=str(weights) if weights else None)
    categories = []
    for folder in data:
        images, loaded, failed = load_batch(select_support(load_dataset(folder), shots, seed), size=image_size)
        report_failures(failed)
        console.print(f"{folder}: {len(loaded)} good images")
        categories.append(images)
    encoder = train_encoder(categories, config, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
                            brightness_delta=brightness_delta, checkpoint_dir=out_dir / "checkpoint", resume=resume,
                            device=device)
    save_encoder(encoder, out_dir)
    out.print(f"encoder trained on {len(data)} categories; saved to {out_dir}")


def main() -> None:
    """Console entry point: user mistakes print one clear line and exit 2, without a traceback."""
    try:
        app()
    except USER_ERRORS as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise SystemExit(2) from None
