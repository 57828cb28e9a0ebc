"""``lineguard predict --ray``: this process is the driver and the results folders' one writer.

The workers (``lineguard.distributed.inspect``) score and encode; the driver writes each row as it arrives, with
the store's guarantees: one writer (the folder's lock), every row durable before the next, none written twice,
resumable after the driver is killed (the next run scores only the images without a row), unreadable files
named at the end.
"""

from __future__ import annotations

from pathlib import Path

from rich.markup import escape

from lineguard.cli.app import out, report_failures, warn
from lineguard.cli.models import describe_thresholds
from lineguard.cli.predict import pending, summarise
from lineguard.cli.results import note_damaged, write_store_report
from lineguard.distributed.cluster import Cluster, ScorerSource, connected
from lineguard.distributed.inspect import inspect_on_cluster
from lineguard.inspect import Scorer
from lineguard.io.store import DAMAGED_FILE, ResultStore, save_thresholds
from lineguard.progress import track


def score_on_cluster(cluster: Cluster, scorer: Scorer, model_dir: Path | None, groups: dict[str, list[Path]],
                     out_dir: Path, *, batch_size: int, mad_factor: float, report: bool) -> None:
    """Score ``groups`` (results folder under ``out_dir`` -> images) on ``cluster``: a fitted model's images
    ``batch_size`` at a time, a test-batch method's groups each whole, deciding for itself."""
    stores = {name: ResultStore(out_dir / name) for name in groups}  # every folder locked for the run
    try:
        work = []
        for name, store in stores.items():
            note_damaged(store, f"moved to {store.folder / DAMAGED_FILE}; their images are scored again")
            paths = [p.resolve() for p in groups[name]]
            todo = pending(store, scorer, paths)
            if scorer.uses_normal_images:
                work += [(name, todo[start:start + batch_size]) for start in range(0, len(todo), batch_size)]
            elif todo:
                work.append((name, paths))  # the whole batch, stored rows included: it decides as one
        if work:
            with connected(cluster) as ray:
                source = ScorerSource.of_model(ray, model_dir) if model_dir else ScorerSource.of_method(scorer)
                write(stores, inspect_on_cluster(ray, cluster, source, work, batch_size=batch_size,
                                                 mad_factor=None if scorer.uses_normal_images else mad_factor),
                      total=sum(len(paths) for _, paths in work))
        for store in stores.values():
            out.print(escape(f"{len(store)} results in {store.path}"))
            if report and len(store):
                out.print(escape(f"report: {write_store_report(store, scorer.name)}"))
    finally:
        for store in stores.values():
            store.close()


def write(stores: dict[str, ResultStore], outcomes, *, total: int) -> None:
    """Append each image's row to its group's store as it arrives; then name the unreadable files and say
    what was decided. A group deciding for itself has its thresholds recorded before its first row."""
    failed, decisions, started = [], {}, set()
    for outcome in track(outcomes, "scoring on Ray", total=total):
        store = stores[outcome.group]
        if outcome.group not in started:
            started.add(outcome.group)
            if outcome.note:
                warn(f"{store.folder}: {outcome.note}")
            if outcome.thresholds is not None:
                save_thresholds(store.folder, outcome.thresholds)  # refuses another batch's thresholds
                describe_thresholds(outcome.thresholds)
        if outcome.path is None:
            warn(f"{store.folder}: not scored: {outcome.error}")
        elif outcome.error is not None:
            failed.append((outcome.path, outcome.error))
        elif outcome.path not in store:
            row = store.append_files(outcome.row, outcome.files)
            decisions[outcome.path] = row.get("decision")
    report_failures(failed)
    summarise(decisions)
