"""``lineguard update``: add good images to a fitted model's normal set without refitting it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lineguard.cli.app import app, out, report_failures, warn
from lineguard.cli.models import calibrate_on, holdout_split
from lineguard.cli.options import BatchSizeOpt, FalseAlarmOpt, RuleOpt, SeedOpt
from lineguard.errors import ParameterError
from lineguard.scoring.threshold import DEFAULT_RULE


@app.command()
def update(model_dir: Annotated[Path, typer.Argument(help="Model folder from `lineguard fit`; updated.")],
           images: Annotated[list[Path], typer.Argument(help="New good images or folders.")],
           recalibrate: Annotated[bool, typer.Option(help="Hold out --holdout of the new images and learn the "
                                                          "thresholds again on them.")] = False,
           holdout: Annotated[float, typer.Option(help="Share of the new images held out to recalibrate on "
                                                       "(at least 2).")] = 0.2,
           rule: RuleOpt = DEFAULT_RULE, false_alarm_rate: FalseAlarmOpt = 0.01, seed: SeedOpt = 0,
           batch_size: BatchSizeOpt = 16) -> None:
    """Add good images to a fitted model (patchcore, fewshot, knn, spade, padim) without the images it was
    fitted on; the model folder notes what was added and when."""
    from lineguard.io.batches import ImageBatches
    from lineguard.io.images import list_images
    from lineguard.methods import load

    detector = load(model_dir)
    detector.check_growable()
    paths = list_images(*images)
    if not paths:
        raise ParameterError(f"no images in {', '.join(map(str, images))}")
    held_out = holdout_split(paths, holdout, seed) if recalibrate else []
    batches = ImageBatches([p for p in paths if p not in set(held_out)], size=detector.image_size,
                           batch_size=batch_size)
    detector.update(batches.require_readable(f"update {model_dir}"))
    report_failures(batches.failed)
    out.print(f"added {len(batches.loaded)} good images to {detector.name}")
    if held_out:
        calibrate_on(detector, held_out, rule=rule, false_alarm_rate=false_alarm_rate, batch_size=batch_size)
    elif detector.thresholds is not None:
        warn("the thresholds are those learned before the update: pass --recalibrate (or run `lineguard "
             "calibrate`) so they follow the grown normal set")
    detector.save(model_dir)
    out.print(f"saved to {model_dir}")
