"""Lazy batches of images read from files, for scorers that take an iterable of (B, 3, S, S) batches: tensors
for a detector, numpy arrays (``arrays=True``, no PyTorch) for an exported model.

Files are decoded and resized by a small pool of threads, up to :data:`READ_AHEAD` batches ahead of the one
being scored, so that reading overlaps the backbone instead of waiting for it (Pillow and PyTorch release the
interpreter lock while they work). Batches still come out in order, with the same images.

Unreadable files are skipped and remembered (``failed``), and the paths that made it into batches are
remembered in order (``loaded``), so a batch command can line results up with files and report the rest.
A detector handed no images at all cannot score them, so :meth:`ImageBatches.any_readable` tells beforehand,
reading no file twice.
"""

from __future__ import annotations

import itertools
import math
import os
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from typing import Any

import numpy as np

from lineguard.errors import LineguardError
from lineguard.io.images import DEFAULT_MAX_PIXELS, ImageError, read_image_array, resized_batch

READ_AHEAD = 2  # batches decoded ahead of the one being scored
DEFAULT_WORKERS = min(4, os.cpu_count() or 1)


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
    """Iterable of (B, 3, size, size) batches over ``paths`` (tensors, or numpy arrays with ``arrays``); ``len``
    is the number of batches. ``size`` None keeps every image at its own size, one image per batch (a tiled
    detector cuts it up itself)."""

    def __init__(self, paths: Sequence[str | Path], *, size: int | None, batch_size: int = 16,
                 max_pixels: int = DEFAULT_MAX_PIXELS, workers: int = DEFAULT_WORKERS, arrays: bool = False):
        self.paths = [Path(p) for p in paths]
        self.size = size
        self.batch_size = batch_size if size is not None else 1
        self.max_pixels = max_pixels
        self.workers = workers
        self.arrays = arrays
        self.loaded: list[Path] = []
        self.failed: list[tuple[Path, str]] = []
        self._started: Iterator[Any] | None = None  # batches read ahead by any_readable, not yet handed out

    def __len__(self) -> int:
        return math.ceil(len(self.paths) / self.batch_size)

    def __iter__(self) -> Iterator[Any]:
        started, self._started = self._started, None
        yield from started if started is not None else self._read()

    def _load(self, path: Path) -> Any:
        """(1, 3, S, S) image, or why the file cannot be read (a str)."""
        try:
            image = read_image_array(path, max_pixels=self.max_pixels)
            if self.size is not None:
                return resized_batch([image], self.size, arrays=self.arrays)
            if self.arrays:
                return image[None]
            import torch

            return torch.from_numpy(image)[None]
        except ImageError as exc:
            return exc.reason

    def _read(self) -> Iterator[Any]:
        self.loaded, self.failed = [], []
        chunks = iter([self.paths[i:i + self.batch_size] for i in range(0, len(self.paths), self.batch_size)])
        pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="lineguard-read")
        pending: deque[tuple[list[Path], list[Future]]] = deque()
        try:
            for chunk in chunks:
                pending.append((chunk, [pool.submit(self._load, path) for path in chunk]))
                if len(pending) > READ_AHEAD:
                    yield from self._batch(*pending.popleft())
            while pending:
                yield from self._batch(*pending.popleft())
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _batch(self, chunk: list[Path], futures: list[Future]) -> Iterator[Any]:
        """The readable images of one chunk as a (B, 3, S, S) batch (nothing if none), noted in order."""
        images = []
        for path, future in zip(chunk, futures, strict=True):
            image = future.result()
            if isinstance(image, str):
                self.failed.append((path, image))
            else:
                images.append(image)
                self.loaded.append(path)
        if images:
            yield self._concatenate(images)

    def _concatenate(self, images: list[Any]) -> Any:
        """(1, 3, S, S) images -> (B, 3, S, S)."""
        if self.arrays:
            return np.concatenate(images)
        import torch

        return torch.cat(images)

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
