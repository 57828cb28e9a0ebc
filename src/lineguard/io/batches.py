"""Lazy batches of images read from files, for detectors that take an iterable of (B, 3, S, S) tensors.

Unreadable files are skipped and remembered (``failed``), and the paths that made it into batches are
remembered in order (``loaded``), so a batch command can line results up with files and report the rest.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path

from torch import Tensor

from lineguard.io.images import DEFAULT_MAX_PIXELS, load_batch


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

    def __len__(self) -> int:
        return math.ceil(len(self.paths) / self.batch_size)

    def __iter__(self) -> Iterator[Tensor]:
        self.loaded, self.failed = [], []
        for start in range(0, len(self.paths), self.batch_size):
            chunk = self.paths[start:start + self.batch_size]
            images, ok, failed = load_batch(chunk, size=self.size, max_pixels=self.max_pixels)
            self.loaded += ok
            self.failed += failed
            if ok:
                yield images
