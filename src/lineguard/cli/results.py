"""``lineguard report``: the HTML report of a results folder; and what predict and watch say about one."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from lineguard.cli.app import app, out, warn
from lineguard.errors import ParameterError
from lineguard.io.store import RESULTS_FILE, ResultStore


def note_damaged(store: ResultStore, what_became_of_them: str) -> None:
    if store.damaged:
        warn(f"{store.path}: damaged line(s) {', '.join(map(str, store.damaged))} {what_became_of_them}")


def write_store_report(store: ResultStore, method: str) -> Path:
    from lineguard.report.runs import store_report

    return store_report(store, title=f"lineguard {method}: {store.folder}")


@app.command("report")
def report_command(
        results: Annotated[Path, typer.Argument(help="Results folder written by `lineguard predict`.")],
        data: Annotated[Path | None, typer.Option(help="Dataset whose labels the images have (charts, "
                                                       "ROC, metrics).")] = None,
        out_dir: Annotated[Path | None, typer.Option("--out", help="Report folder (default RESULTS/report).")
                           ] = None) -> None:
    """Write the HTML report of a results folder: inputs, overlays, regions, scores, decisions."""
    from lineguard.io.datasets import load_dataset
    from lineguard.report.runs import store_report

    if not (results / RESULTS_FILE).is_file():
        raise ParameterError(f"{results} is not a results folder: {RESULTS_FILE} is missing")
    labels = {str(s.path.resolve()): s.defect for s in load_dataset(data).test} if data else None
    store = ResultStore(results, readonly=True)  # a report may be made while a run is still writing
    note_damaged(store, "left out of the report")
    page = store_report(store, title=f"lineguard: {results}", labels=labels, folder=out_dir)
    out.print(escape(f"report: {page}"))
