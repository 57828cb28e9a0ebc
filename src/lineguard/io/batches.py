"""Lazy batches of images read from files, for detectors that take an iterable of (B, 3, S, S) tensors.

Unreadable files are skipped and remembered (``failed``), and the paths that made it into batches are
remembered in order (``loaded``), so a batch command can line results up with files and report the rest.
A detector handed no images at all cannot score them, so :meth:`ImageBatches.any_readable` tells beforehand,
reading no file twice.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from pathlib import Path

from torch import Tensor

from lineguard.errors import LineguardError
from lineguard.io.images import DEFAULT_MAX_PIXELS, load_batch


class NoReadableImagesError(LineguardError, ValueError):
    """Every file of a set that must hold at least one image was unreadable; the message names them."""

    def __init__(self, what: str, failed: Sequence[tuple[Path, str]]):
        self.failed = list(failed)
        super().__init__(f"{what}: none of the {len(failed)} image(s) could be read: {describe(failed)}"
                         if failed else f"{what}: no images")


def describe(failed: Sequence[tuple[Path, str]], shown: int = 5) -> str:
    """``a.png (empty file); b.png (...) and 3 more``: unreadable files on one line."""
    text = "; ".join(f"{path} ({reason})" for path, reason in failed[:shown])
    return text + (f" and {len(failed) - shown} more" if len(failed) > shown else "")


class ImageBatches:
    """Iterable of (B, 3, size, size) batches over ``paths``; ``len`` is the number of batches."""

    def __init__(self, paths: Sequence[str | Path], *, size: int, batch_size: int = 16,
                 max_pixels: int = DEFAULT_MAX_PIXELS):
        self.paths = [Path(p) for p in paths]
        self.size = size
        self.batch_size = batch_size
        self.max_pixels = max_pixels
        self.loaded: list[Path] = []
        self.failed: list[tuple[Path, str]] = []
        self._started: Iterator[Tensor] | None = None  # batches read ahead by any_readable, not yet handed out

    def __len__(self) -> int:
        return math.ceil(len(self.paths) / self.batch_size)

    def __iter__(self) -> Iterator[Tensor]:
        started, self._started = self._started, None
        yield from started if started is not None else self._read()

    def _read(self) -> Iterator[Tensor]:
        self.loaded, self.failed = [], []
        for start in range(0, len(self.paths), self.batch_size):
            chunk = self.paths[start:start + self.batch_size]
            images, ok, failed = load_batch(chunk, size=self.size, max_pixels=self.max_pixels)
            self.loaded += ok
            self.failed += failed
            if ok:
                yield images

    def any_readable(self) -> bool:
        """Read up to the first readable batch (kept for the next iteration). False when no file can be read:
        then ``failed`` names every file."""
        batches = self._read()
        first = next(batches, None)
        self._started = None if first is None else itertools.chain([first], batches)
        return first is not None

    def require_readable(self, what: str) -> ImageBatches:
        """Self, or :class:`NoReadableImagesError` naming every file when none can be read."""
        if not self.any_readable():
            raise NoReadableImagesError(what, self.failed)
        return self
