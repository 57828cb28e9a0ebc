"""``lineguard fit`` and ``lineguard calibrate``: a model folder, fitted and with the thresholds of a line."""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from lineguard.cli.app import app, out, report_failures, warn
from lineguard.cli.options import (BackboneOpt, BatchSizeOpt, DataOpt, DeviceOpt, FalseAlarmOpt, ImageSizeOpt,
                                   KeepAspectOpt, MethodOpt, OutOpt, OverlapOpt, ParamOpt, RayAddressOpt, RayOpt,
                                   RuleOpt, SeedOpt, ShotsOpt, TileOpt, WeightsOpt, WorkersOpt, build_detector,
                                   cluster_of)
from lineguard.errors import ParameterError
from lineguard import DEFAULT_METHOD
from lineguard.scoring.threshold import DEFAULT_RULE, RULES, CalibrationError, Thresholds

GOOD_IMAGE_RULES = tuple(r for r in RULES if r != "f1")  # the rules that need no labels
# Fewer good images than this leave a threshold itself uncertain, and calibrate warns. Measured on bottle and
# Magnetic Tile (benchmarks/results/calibration/README.md): below 10, plain mean + 3 sd rejects 3-16 % of good
# parts, and t3sigma, which holds 0.1-2 % by widening for the uncertainty, passes ever more defects.
MIN_CALIBRATION_IMAGES = 10


@app.command()
def fit(method: MethodOpt = DEFAULT_METHOD, data: DataOpt = ..., out_dir: OutOpt = ...,
        backbone: BackboneOpt = None, shots: ShotsOpt = None, seed: SeedOpt = 0, image_size: ImageSizeOpt = None,
        weights: WeightsOpt = None, device: DeviceOpt = None, param: ParamOpt = None,
        batch_size: BatchSizeOpt = 16, tile: TileOpt = None, overlap: OverlapOpt = 0,
        keep_aspect: KeepAspectOpt = False,
        calibrate: Annotated[str, typer.Option(help="Threshold rule on held-out good images: t3sigma, "
                                                    "mu3sigma, mad, quantile, or none.")] = DEFAULT_RULE,
        false_alarm_rate: FalseAlarmOpt = 0.01,
        holdout: Annotated[float, typer.Option(help="Share of good training images held out of fit to "
                                                    "calibrate on (at least 2).")] = 0.2,
        ray: RayOpt = False, ray_address: RayAddressOpt = None, workers: WorkersOpt = 2) -> None:
    """Fit a detector on the good training images of DATA, calibrate its thresholds on held-out good images,
    and save it to --out."""
    from lineguard.evaluation import select_support
    from lineguard.io.batches import ImageBatches
    from lineguard.io.datasets import load_dataset

    detector = build_detector(method, backbone=backbone, image_size=image_size, weights=weights, device=device,
                              seed=seed, params=param, tile=tile, overlap=overlap, keep_aspect=keep_aspect)
    if not detector.uses_normal_images:
        raise ParameterError(f"{method} learns nothing from normal images: score a batch with `lineguard predict "
                             f"--method {method} IMAGES --out RESULTS`")
    dataset = load_dataset(data)
    held_out: list[Path] = []
    if calibrate != "none":
        if calibrate not in GOOD_IMAGE_RULES:
            raise ParameterError(f"--calibrate must be {', '.join(GOOD_IMAGE_RULES)} or none, got {calibrate!r}")
        held_out = holdout_split(dataset.good_train, holdout, seed)
        dataset = replace(dataset, train=[s for s in dataset.train if s.path not in set(held_out)])
    support = select_support(dataset, shots, seed)
    cluster = cluster_of(ray, ray_address, workers)
    if cluster is not None and (tile is not None or keep_aspect):
        raise ParameterError(f"{'--tile' if tile else '--keep-aspect'} with --ray is not supported: fit "
                             f"{'tiled' if tile else 'letterboxed'} models on one machine")
    if cluster is None:
        batches = ImageBatches(support, size=detector.image_size, batch_size=batch_size)
        detector.fit(batches.require_readable(f"fit on {data}"))
        fitted, failed = len(batches.loaded), batches.failed
    else:
        from lineguard.distributed.cluster import connected
        from lineguard.distributed.fit import fit_on_cluster

        with connected(cluster) as session:
            fitted, failed = fit_on_cluster(session, cluster, detector, support, batch_size=batch_size)
    report_failures(failed)
    out.print(f"fitted {method} on {fitted} images" + (f" over {cluster.workers} Ray workers" if cluster else ""))
    if held_out:
        try:
            calibrate_on(detector, held_out, rule=calibrate, false_alarm_rate=false_alarm_rate,
                         batch_size=batch_size)
        except CalibrationError as exc:
            warn(f"could not calibrate on the held-out good images: {exc}. The model is saved without "
                 f"thresholds: calibrate it on good images it was not fitted on (`lineguard calibrate {out_dir} "
                 "IMAGES`)")
    detector.save(out_dir)
    out.print(f"saved to {out_dir}")


def holdout_split(good: list[Path], fraction: float, seed: int) -> list[Path]:
    """A seeded ``fraction`` of the good images (at least 2, at least 1 left to fit on), for calibration: a
    memory bank scores its own images at zero, so thresholds must come from images it has not seen."""
    count = max(2, round(fraction * len(good)))
    if not 0 < fraction < 1 or count >= len(good):
        raise ParameterError(f"cannot hold out {fraction:g} of {len(good)} good images ({count}) for "
                             "calibration and keep some to fit on: use --calibrate none and `lineguard "
                             "calibrate` with other good images")
    return sorted(random.Random(seed).sample(good, count))


def calibrate_on(detector, images: list[Path], *, rule: str, false_alarm_rate: float, batch_size: int,
                 labels: list[int] | None = None) -> None:
    """Score ``images`` (held out from fit) and learn the detector's thresholds from them; CalibrationError
    (naming the files) when none can be read."""
    import torch

    from lineguard.io.batches import ImageBatches, describe

    batches = ImageBatches(images, size=detector.image_size, batch_size=batch_size)
    if not batches.any_readable():
        raise CalibrationError(f"none of the {len(images)} calibration image(s) could be read: "
                               f"{describe(batches.failed)}")
    prediction = detector.predict(batches)
    report_failures(batches.failed)
    if labels is not None:
        by_path = dict(zip(images, labels, strict=True))
        labels = [by_path[p] for p in batches.loaded]
    good = len(batches.loaded) if labels is None else labels.count(0)
    if good < MIN_CALIBRATION_IMAGES:
        warn(f"only {good} good image(s) to calibrate on: a threshold learned from so few is itself uncertain "
             f"({DEFAULT_RULE} widens it for that and passes more defects; the other rules reject more good "
             "parts); hold out more (--holdout) or calibrate on more good images (`lineguard calibrate`)")
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
        rule: RuleOpt = DEFAULT_RULE, false_alarm_rate: FalseAlarmOpt = 0.01,
        threshold: Annotated[float | None, typer.Option(help="Set the image threshold by hand (raw score).")
                             ] = None,
        pixel_threshold: Annotated[float | None, typer.Option(help="By hand, with --threshold (default: the "
                                                                   "same value).")] = None,
        batch_size: BatchSizeOpt = 16) -> None:
    """Learn a model's thresholds from good images (t3sigma, mu3sigma, mad, quantile), a labelled dataset (f1, or
    the good images of its test split), or set them by hand; they are saved with the model."""
    from lineguard.io.datasets import load_dataset
    from lineguard.io.images import list_images
    from lineguard.methods import load

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
        raise ParameterError("give good images, --data DATASET or --threshold VALUE")
    detector.save(model_dir)
    out.print(f"saved to {model_dir}")
