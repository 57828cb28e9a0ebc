"""``lineguard watch``: score images as they arrive in a folder, against a rolling reference of recent ones."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from lineguard.cli.app import app, console, out
from lineguard.cli.options import (BackboneOpt, DeviceOpt, ImageSizeOpt, MadFactorOpt, ParamOpt, SeedOpt,
                                   WeightsOpt, parameters)
from lineguard.cli.results import note_damaged
from lineguard.inspect import Finding
from lineguard.io.store import DAMAGED_FILE, ResultStore
from lineguard.params import check_names, check_params, param_names

MONITOR = "monitor"  # the method of watch's rows


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
    from lineguard.io.watch import FolderWatcher
    from lineguard.monitor import LineMonitor

    values = parameters(param_names(LineMonitor), "the monitor", backbone=backbone, image_size=image_size,
                        weights=weights, device=device, seed=seed, params=param, mad_factor=mad_factor)
    check_names("the monitor", LineMonitor, list(values))
    check_params("the monitor", LineMonitor.__init__, values, {})
    monitor = LineMonitor(**values)
    with ResultStore(out_dir) as store:
        note_damaged(store, f"moved to {store.folder / DAMAGED_FILE}")
        console.print(f"watching {folder} (Ctrl-C to stop); results in {store.path}")
        scored = 0
        try:
            for _ in follow(FolderWatcher(folder, poll_seconds=poll), monitor, store, idle_timeout=idle_timeout):
                scored += 1
                if max_images is not None and scored >= max_images:
                    break
        except KeyboardInterrupt:
            console.print("stopped")
        out.print(f"{scored} images scored; {len(store)} results in {store.path}")


def follow(watcher, monitor, store: ResultStore, *, idle_timeout: float | None) -> Iterator[Path]:
    """Score each new image of ``watcher`` into ``store``, yielding its path. A file that cannot be decoded yet
    (still being written) is offered again twice before it is skipped."""
    from lineguard.io.images import ImageError, read_image, resize

    attempts: Counter[Path] = Counter()
    for path in watcher.follow(idle_timeout=idle_timeout):
        if path.resolve() in store:
            continue
        try:
            image = read_image(path)
        except ImageError as exc:
            attempts[path] += 1
            if attempts[path] < 3:  # complete in size but not decodable yet: offered again once it changes
                watcher.forget(path)
            else:
                console.print(f"[yellow]skipped[/yellow] {path}: {exc.reason}")
            continue
        decision = monitor.score(resize(image, monitor.image_size))
        verdict = None if decision.anomalous is None else "defect" if decision.anomalous else "ok"
        finding = Finding(None if math.isnan(decision.score) else decision.score, decision.map.numpy(),
                          decision=verdict)
        threshold = None if math.isnan(decision.threshold) else decision.threshold
        store.append({**finding.row(str(path.resolve()), MONITOR, tuple(image.shape[1:])), "threshold": threshold},
                     finding.map)
        shown = {None: "warming up", "defect": "[red]DEFECT[/red]", "ok": "ok"}[verdict]
        out.print(f"{decision.index:6d}  {path.name}  score {decision.score:.4f}  {shown}")
        yield path
