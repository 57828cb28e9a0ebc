"""``lineguard predict``: score a folder with a saved model, an export, or a test-batch method into a results
folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from lineguard.cli.app import app, console, out, report_failures, warn
from lineguard.cli.options import (BackboneOpt, BatchSizeOpt, DeviceOpt, GpusOpt, ImageSizeOpt, KeepAspectOpt,
                                   MadFactorOpt,
                                   ParamOpt, RayAddressOpt, RayOpt, RuntimeOpt, SeedOpt, WeightsOpt, WorkersOpt,
                                   build_detector, cluster_of)
from lineguard.cli.results import note_damaged, write_store_report
from lineguard.errors import LineguardError, ParameterError
from lineguard.inspect import FileInspection, Scorer, own_thresholds
from lineguard.io.store import DAMAGED_FILE, OtherThresholdsError, ResultStore, save_thresholds
from lineguard.scoring.threshold import Thresholds


@app.command()
def predict(inputs: Annotated[list[Path], typer.Argument(help="[MODEL_DIR or EXPORT_DIR] then images or "
                                                             "folders.")],
            out_dir: Annotated[Path, typer.Option("--out", help="Results folder (resumable).")],
            method: Annotated[str | None, typer.Option("--method", "-m", help="A test-batch method: no model.")] = None,
            backbone: BackboneOpt = None, image_size: ImageSizeOpt = None, keep_aspect: KeepAspectOpt = False,
            weights: WeightsOpt = None, device: DeviceOpt = None, seed: SeedOpt = 0, param: ParamOpt = None,
            batch_size: BatchSizeOpt = 16,
            mad_factor: MadFactorOpt = 3.0, runtime: RuntimeOpt = None,
            batch_by: Annotated[str | None, typer.Option(help="Test-batch methods: independent batches, one per "
                                                              "'folder' or per COUNT images, each in its own "
                                                              "results folder under --out.")] = None,
            ray: RayOpt = False, ray_address: RayAddressOpt = None, workers: WorkersOpt = 2,
            gpus_per_worker: GpusOpt = 0.0,
            report: Annotated[bool, typer.Option(help="Also write an HTML report into --out.")] = True) -> None:
    """Score images with a saved model, an export (`lineguard export`; --runtime) or a test-batch --method and
    append results to --out."""
    from lineguard import load
    from lineguard.io.groups import group_paths, parse_batch_by
    from lineguard.io.images import list_images

    if method and runtime:
        raise ParameterError("--runtime runs an export folder: it does not go with --method")
    cluster = cluster_of(ray, ray_address, workers, gpus_per_worker)
    if cluster is not None and runtime:
        raise ParameterError("--runtime does not go with --ray: the workers run an export on its own runtime")
    by = None if batch_by is None else parse_batch_by(batch_by)
    if method:
        detector = build_detector(method, backbone=backbone, image_size=image_size, weights=weights,
                                  device=device, seed=seed, params=param, keep_aspect=keep_aspect)
        if detector.uses_normal_images:
            raise ParameterError(f"{method} needs normal images: run `lineguard fit` and pass the model folder")
    elif len(inputs) < 2:
        raise ParameterError("give a model folder and at least one image or folder")
    elif by is not None:
        raise ParameterError("--batch-by splits images into batches for a test-batch --method; a model scores "
                             "every image on its own")
    else:
        ignored = [name for name, value in (("--backbone", backbone), ("--image-size", image_size),
                                            ("--keep-aspect", keep_aspect), ("--weights", weights),
                                            ("--param", param)) if value]
        if ignored:
            raise ParameterError(f"{', '.join(ignored)}: a saved model scores with the settings it was fitted "
                                 f"with ({inputs[0]}); these options set up a test-batch --method")
        detector = load(inputs[0], runtime=runtime)
    paths = list_images(*inputs[1 - bool(method):])
    groups = {"": paths} if by is None else group_paths([p.resolve() for p in paths], by)
    if cluster is not None:
        from lineguard.cli.cluster import score_on_cluster

        return score_on_cluster(cluster, detector, None if method else inputs[0], groups, out_dir,
                                batch_size=batch_size, mad_factor=mad_factor, report=report)
    for name, members in groups.items():
        with ResultStore(out_dir / name) as store:  # one run writes a results folder at a time
            note_damaged(store, f"moved to {store.folder / DAMAGED_FILE}; their images are scored again")
            try:
                score_into(store, detector, members, batch_size=batch_size, mad_factor=mad_factor)
            except LineguardError as error:
                if by is None:
                    raise
                warn(f"{store.folder}: not scored: {error}")  # one batch that cannot be (too few images)
            if report and len(store):
                out.print(escape(f"report: {write_store_report(store, detector.name)}"))


def score_into(store: ResultStore, scorer: Scorer, paths: list[Path], *, batch_size: int,
               mad_factor: float) -> None:
    """Score the images not yet in ``store`` and append their rows as they come; unreadable files are skipped
    and named at the end. A test-batch method scores the whole batch against itself (rows already stored
    included) and decides from the batch; a fitted model works chunk by chunk, so results are on disk as soon
    as they exist."""
    from lineguard.io.images import image_size

    paths = [p.resolve() for p in paths]
    todo = pending(store, scorer, paths)
    decide_batch = None if scorer.uses_normal_images else lambda scores, maps: thresholds_of_batch(
        store, scores, maps, mad_factor)
    inspection = FileInspection(scorer, (todo if scorer.uses_normal_images else paths) if todo else [],
                                batch_size=batch_size, chunk=4 * batch_size, thresholds=decide_batch)
    decisions = {}  # this run's decisions, by image
    for path, finding in inspection:
        if path not in store:
            size = image_size(path)
            store.append(finding.row(str(path), scorer.name, size), finding.map, mask=finding.mask, image_size=size)
            decisions[path] = finding.decision
    report_failures(inspection.failed)
    summarise(decisions)
    out.print(escape(f"{len(store)} results in {store.path}"))


def pending(store: ResultStore, scorer: Scorer, paths: list[Path]) -> list[Path]:
    """The (resolved) ``paths`` not yet in ``store``, said; the model's thresholds recorded in the store (or a
    warning that there are none)."""
    if scorer.thresholds is not None:
        save_thresholds(store.folder, scorer.thresholds)
    elif scorer.uses_normal_images:
        warn("the model has no thresholds: results get scores but no decisions (see `lineguard calibrate`)")
    todo = [p for p in paths if p not in store]
    console.print(escape(f"{len(paths)} images, {len(paths) - len(todo)} already in {store.path}, "
                         f"{len(todo)} to score"))
    return todo


def summarise(decisions: dict[Path, str | None]) -> None:
    """How many images were decided defect, and which (the first ten)."""
    flagged = [path.name for path, decision in decisions.items() if decision == "defect"]
    decided = sum(decision is not None for decision in decisions.values())
    if decided:
        more = f" and {len(flagged) - 10} more" if len(flagged) > 10 else ""
        out.print(escape(f"{len(flagged)} of {decided} images decided defect"
                         + (f": {', '.join(flagged[:10])}{more}" if flagged else "")))


def thresholds_of_batch(store: ResultStore, scores, maps, mad_factor: float) -> Thresholds | None:
    """The batch's own thresholds (``inspect.batch_thresholds``), recorded in ``store``; None (scores only) for a
    batch too small to estimate a spread, scores that do not spread, or an --out folder that holds decisions
    made on another batch."""
    from lineguard.cli.models import describe_thresholds

    thresholds, why_not = own_thresholds(scores, maps, mad_factor)
    if thresholds is None:
        warn(why_not)
        return None
    try:
        save_thresholds(store.folder, thresholds)
    except OtherThresholdsError:
        warn(f"{store.folder} holds decisions made on another batch: the new results get scores only (use a new "
             "--out folder for decisions)")
        return None
    describe_thresholds(thresholds)
    return thresholds
