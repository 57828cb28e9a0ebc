"""What is checked before an image file is decoded: that it is a readable file, and that its size is safe.

Decompression bombs: a small file can declare a huge image. Before any pixel is decoded, the header's
``width * height`` is checked against ``max_pixels`` and each side against :data:`MAX_SIDE`, so the memory a
decode takes is bounded by the pixel count, and no thin 1 × N image (a few kB as PNG) slips past a pixel
limit; both refusals are :class:`ImageTooLargeError` (the service answers them with 413). Pillow's own
warning above ``PIL.Image.MAX_IMAGE_PIXELS`` is left to this check; its hard error above twice that
(:func:`pillow_pixel_limit`) is an :class:`ImageTooLargeError` too, so no ``max_pixels`` can reach past it.

Files are named in every error, symbolic links that lead nowhere (dangling, or a loop) included, so a batch
command can skip them and say which and why.
"""

from __future__ import annotations

import errno
import io
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from PIL import Image

from lineguard.errors import LineguardError

# Pillow's own default MAX_IMAGE_PIXELS (about 9459 x 9459); ~1 GiB once decoded to float32 RGB.
DEFAULT_MAX_PIXELS = 89_478_485
# The longest side read, whatever the pixel count: JPEG's own maximum.
MAX_SIDE = 65_535

Source = str | Path | BinaryIO | bytes  # a file path, an open binary file (a spooled upload), or a file's bytes


class ImageError(LineguardError, ValueError):
    """An image or mask could not be read; ``path`` is the file and ``reason`` says why."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")

    def __reduce__(self):  # keeps the two-argument constructor picklable across worker processes
        return (type(self), (self.path, self.reason))


class ImageTooLargeError(ImageError):
    """An image over a size limit (pixels or side length), refused from its header before decoding."""


def pillow_pixel_limit() -> int:
    """The pixel count above which Pillow refuses to open any image (twice ``PIL.Image.MAX_IMAGE_PIXELS``)."""
    return 2 * Image.MAX_IMAGE_PIXELS if Image.MAX_IMAGE_PIXELS else 2**63


def source_name(source: Source) -> Path:
    """The path to name in messages (an open file's own name, if it has one)."""
    if isinstance(source, str | Path):
        return Path(source)
    return Path(str(getattr(source, "name", None) or "<upload>"))


def _path_problem(path: Path) -> str | None:
    """Why ``path`` is not a readable, non-empty file, or None."""
    try:
        if path.is_file():
            return "empty file" if path.stat().st_size == 0 else None
        if path.is_symlink():
            os.stat(path)  # raises for a missing target or a loop
        return "not a file" if path.exists() else "no such file"
    except FileNotFoundError:
        return f"dangling symbolic link to {os.readlink(path)}"
    except OSError as exc:
        return "symbolic link loop" if exc.errno == errno.ELOOP else f"cannot read: {exc.strerror}"


def check_source(source: Source) -> Path:
    """The name of ``source``, once it is known to be a non-empty file (an open file: rewound)."""
    path = source_name(source)
    if isinstance(source, str | Path):
        problem = _path_problem(path)
    else:
        problem = "empty file" if source.seek(0, os.SEEK_END) == 0 else None
        source.seek(0)
    if problem:
        raise ImageError(path, problem)
    return path


def check_size(path: Path, width: int, height: int, max_pixels: int | None) -> None:
    """The bomb guard on a header's size: zero, over ``max_pixels`` (None: no pixel limit) or over MAX_SIDE."""
    if width * height == 0:
        raise ImageError(path, f"zero-size image ({width}x{height})")
    if max_pixels is not None and width * height > max_pixels:
        raise ImageTooLargeError(path, f"{width}x{height} = {width * height} pixels exceeds the limit of "
                                       f"{max_pixels} pixels")
    if max(width, height) > MAX_SIDE:
        raise ImageTooLargeError(path, f"{width}x{height}: a side is longer than {MAX_SIDE} pixels")


@contextmanager
def open_image(source: Source, max_pixels: int | None) -> Iterator[Image.Image]:
    """Open ``source`` lazily (header only) with the guards applied; Pillow errors -> ImageError. Bytes are
    read in place, never written to a file to be read back."""
    source = io.BytesIO(source) if isinstance(source, bytes | bytearray) else source
    path = check_source(source)
    try:
        with warnings.catch_warnings():  # Pillow's soft limit: check_size below decides
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(source)
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(path, f"exceeds Pillow's limit of {pillow_pixel_limit()} pixels") from exc
    except Image.UnidentifiedImageError as exc:
        raise ImageError(path, "not a recognised image format") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(path, f"cannot read header: {exc}") from exc
    with img:
        check_size(path, *img.size, max_pixels)
        yield img
