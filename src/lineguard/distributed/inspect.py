"""Inspection on a Ray cluster: Ray Data over groups of image paths, through a pool of actors that each rebuild
the scorer once, decode the images themselves and run the one pipeline (:class:`lineguard.inspect.FileInspection`).

A group is the unit of work: ``batch_size`` images for a fitted model (the batches the local path scores), a
whole batch for a test-batch method, which decides from its own scores (:func:`lineguard.inspect.own_thresholds`).
What comes back per image is what the results folder stores — the row, and its map and mask already encoded
(:func:`lineguard.io.store.encode_files`) — or why the file could not be read; the driver only writes bytes.

Ray restarts an actor that dies (its process killed, its node lost) and hands its unfinished groups to the pool
again; outputs come back in the order of the groups, so the maps are numbered as a local run numbers them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from lineguard.distributed.cluster import Cluster, ScorerSource
from lineguard.errors import LineguardError
from lineguard.inspect import FileInspection, own_thresholds
from lineguard.io.store import ResultFiles, encode_files
from lineguard.progress import enabled as progress_enabled
from lineguard.scoring.threshold import Thresholds

COLUMNS = ("group", "path", "row", "map", "mask", "error", "thresholds", "note")


@dataclass
class Outcome:
    """One image's result from a worker: its row and files, or why it could not be read (``error``); with the
    thresholds its group decided with when the group decides for itself, or why it could not (``note``). With
    no ``path``: the whole group could not be scored (``error`` says why, e.g. a batch of one image)."""

    group: str
    path: Path | None
    row: dict[str, Any] | None
    files: ResultFiles | None
    error: str | None
    thresholds: Thresholds | None
    note: str | None

    @classmethod
    def of_record(cls, record: dict[str, Any]) -> Outcome:
        thresholds = json.loads(record["thresholds"]) if record["thresholds"] else None
        return cls(str(record["group"]), Path(record["path"]) if record["path"] else None,
                   json.loads(record["row"]) if record["row"] else None,
                   None if record["error"] else ResultFiles(record["map"] or None, record["mask"] or None),
                   record["error"] or None, Thresholds(**thresholds) if thresholds else None, record["note"] or None)


class InspectWorker:
    """A Ray Data actor: the scorer, rebuilt once; each call inspects the groups of one input batch."""

    def __init__(self, source: ScorerSource, batch_size: int, mad_factor: float | None, use_gpu: bool = False):
        self.scorer, self._model_copy = source.build(use_gpu=use_gpu)
        self.batch_size = batch_size
        self.mad_factor = mad_factor  # None: the model's thresholds; else each group decides for itself

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        columns: dict[str, list] = {name: [] for name in COLUMNS}
        for group, paths in zip(batch["group"], batch["paths"], strict=True):
            try:
                records = self.inspect(str(group), [Path(str(p)) for p in paths])
            except LineguardError as error:  # this group cannot be scored (too few images): the others go on
                records = [{"group": str(group), "path": "", "row": "", "map": b"", "mask": b"", "error": str(error),
                            "thresholds": "", "note": ""}]
            for record in records:
                for name in COLUMNS:
                    columns[name].append(record[name])
        return columns

    def inspect(self, group: str, paths: list[Path]) -> list[dict[str, Any]]:
        """The records of one group's images: rows with encoded files, then the unreadable files."""
        from lineguard.io.images import image_size

        decided: dict[str, Any] = {"thresholds": None, "note": None}

        def group_thresholds(scores: np.ndarray, maps: np.ndarray) -> Thresholds | None:
            decided["thresholds"], decided["note"] = own_thresholds(scores, maps, self.mad_factor)
            return decided["thresholds"]

        inspection = FileInspection(self.scorer, paths, batch_size=self.batch_size, chunk=len(paths),
                                    thresholds=None if self.mad_factor is None else group_thresholds)
        records = []
        for path, finding in inspection:
            size = image_size(path)
            files = encode_files(finding.map, mask=finding.mask, image_size=size)
            records.append({"path": str(path), "row": json.dumps(finding.row(str(path), self.scorer.name, size)),
                            "map": files.map, "mask": files.mask or b"", "error": ""})
        records += [{"path": str(path), "row": "", "map": b"", "mask": b"", "error": reason}
                    for path, reason in inspection.failed]
        thresholds = json.dumps(asdict(decided["thresholds"])) if decided["thresholds"] else ""
        return [{**record, "group": group, "thresholds": thresholds, "note": decided["note"] or ""}
                for record in records]


def inspect_on_cluster(ray: ModuleType, cluster: Cluster, source: ScorerSource,
                       groups: list[tuple[str, list[Path]]], *, batch_size: int,
                       mad_factor: float | None = None) -> Iterator[Outcome]:
    """The outcome of every image of ``groups`` (name, paths), group after group in the order given, scored by
    ``cluster.workers`` actors; ``mad_factor`` set: each group decides from its own scores."""
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # outputs in the groups' order
    context.enable_progress_bars = progress_enabled()
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # not its plan and timings on every run
    items = [{"group": name, "paths": [str(p) for p in paths]} for name, paths in groups if paths]
    if not items:
        return
    dataset = ray.data.from_items(items).map_batches(
        InspectWorker, fn_constructor_kwargs={"source": source, "batch_size": batch_size, "mad_factor": mad_factor,
                                              "use_gpu": cluster.gpus_per_worker > 0},
        batch_size=1, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=cluster.workers), num_cpus=1,
        **({"num_gpus": cluster.gpus_per_worker} if cluster.gpus_per_worker else {}))
    for record in dataset.iter_rows():
        yield Outcome.of_record(record)
