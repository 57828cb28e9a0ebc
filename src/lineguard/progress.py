"""One switch for progress bars, so long work (feature extraction, coreset, benchmarks) is visible.

Library code calls :func:`track`; whether a bar is drawn is decided here, not by each method:
on when stderr is a terminal or when ``LINEGUARD_PROGRESS=1``, off with ``LINEGUARD_PROGRESS=0``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")


def enabled() -> bool:
    setting = os.environ.get("LINEGUARD_PROGRESS")
    if setting is not None:
        return setting not in ("", "0", "false", "no")
    return sys.stderr.isatty()


def track(items: Iterable[T], description: str, total: int | None = None,
          steps: Callable[[T], int] | None = None) -> Iterator[T]:
    """Yield ``items`` while drawing a progress bar on stderr (if enabled).

    ``steps(item)`` is how far one item moves the bar (default 1): a coreset round adds many centres.
    """
    if not enabled():
        yield from items
        return
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, transient=True) as progress:
        task = progress.add_task(description, total=total)
        for item in items:
            yield item
            progress.advance(task, 1 if steps is None else steps(item))
