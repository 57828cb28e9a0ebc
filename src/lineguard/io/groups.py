"""Independent batches of images for test-batch methods: a line's folders of the day, or runs of COUNT images.

A test-batch method scores a batch against itself and decides from it, so a batch is the unit of work and of
results: each gets its own results folder (``RESULTS/<batch>``), holding its own thresholds.
"""

from __future__ import annotations

import os
from pathlib import Path

from lineguard.errors import ParameterError

BY_FOLDER = "folder"


def parse_batch_by(value: str) -> str | int:
    """``--batch-by``: ``folder`` or a positive count of images."""
    if value == BY_FOLDER:
        return BY_FOLDER
    if value.isdigit() and int(value) >= 1:
        return int(value)
    raise ParameterError(f"--batch-by must be '{BY_FOLDER}' or a positive number of images, got {value!r}")


def group_paths(paths: list[Path], by: str | int) -> dict[str, list[Path]]:
    """Batch name -> its images, in the order given. By folder, a batch is named by its folder's path below the
    folders' common parent (its own name when there is one folder); by count, ``batch-0000``, ``batch-0001``, …"""
    if by != BY_FOLDER:
        return {f"batch-{start // by:04d}": paths[start:start + by] for start in range(0, len(paths), by)}
    groups: dict[Path, list[Path]] = {}
    for path in paths:
        groups.setdefault(path.parent, []).append(path)
    if len(groups) == 1:
        return {folder.name or "batch": members for folder, members in groups.items()}
    common = Path(os.path.commonpath([str(folder) for folder in groups]))
    names = {folder: folder.relative_to(common).as_posix() for folder in groups}
    return {(common.name if names[folder] == "." else names[folder]): members for folder, members in groups.items()}
