"""Robust image decoding to one tensor convention: float32 RGB ``(3, H, W)`` in [0, 1].

Industrial images arrive as 8-bit and 16-bit grayscale, palette, RGBA, CMYK and float TIFFs, often
with EXIF orientation. Every reader here funnels them into one convention so that no method has to
care, and every failure becomes an :class:`ImageError` that names the file, so batch commands can
skip a bad file and report it instead of dying half-way.

Decisions (one each, written down so readers know):

* Alpha is composited over **black**: the defect-free background of most line-scan and
  inspection images is dark, so transparent regions read as background, not as a bright blob.
* 16-bit and 32-bit integer pixels (modes ``I;16``, ``I;16B``, ``I``) are divided by 65535 and
  clipped to [0, 1]; nothing is clipped to 255 first, so 16-bit detail survives.
* Float pixels (mode ``F``) already inside [0, 1] are kept as they are; otherwise the image is
  min-max scaled to [0, 1] (a constant image becomes 0), because float TIFFs outside [0, 1] carry
  sensor units with no fixed range. NaN or infinite pixels are an error.
* Truncated files are errors: ``ImageFile.LOAD_TRUNCATED_IMAGES`` is never set and every image is
  fully decoded before use.
* Decompression bombs: the header's size is checked before any pixel is decoded (:mod:`lineguard.io.guard`:
  the pixel count and every side).
* Resizing costs at most the larger of the input and the output: :func:`resize` runs the two axes as two
  passes when PyTorch's single pass would first stretch a tall image to the output's width.
* Only the first page of a multi-page TIFF (or frame of an animated PNG) is read; an :class:`ImageWarning`
  names the file.
* Sources are file paths, open binary files (the service's spooled uploads), or bytes already in memory.
* Without PyTorch (an exported model's runtime): :func:`read_image_array` and :func:`resize_array` give the same
  images as numpy arrays (Pillow's float resize; 2 × 10⁻⁷ from the torch resize at most, measured on random
  images 900 → 256, 256 → 128, 100 × 120 → 256, 512 × 384 → 256). PyTorch is imported where tensors are made.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from pathlib import Path

from typing import TYPE_CHECKING

import numpy as np
from PIL import ExifTags, Image, ImageOps

from lineguard.io.guard import DEFAULT_MAX_PIXELS, ImageError, Source, open_image, source_name

if TYPE_CHECKING:
    import torch

__all__ = ["DEFAULT_MAX_PIXELS", "IMAGE_SUFFIXES", "ImageError", "ImageSize", "ImageWarning", "image_size",
           "list_images", "load_batch", "read_image", "read_image_array", "read_mask", "resize", "resize_array",
           "resized_batch", "size_hw"]

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})

_INTEGER_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA"})
# EXIF orientations 5-8 include a 90-degree turn, which swaps width and height.
_SWAPPING_ORIENTATIONS = frozenset({5, 6, 7, 8})


class ImageWarning(UserWarning):
    """An image was read, but not all of it (the first page of several); the message names the file."""


def _decode(img: Image.Image, path: Path) -> Image.Image:
    """Fully decode (truncation shows up here) and apply the EXIF orientation."""
    try:
        img.load()
        ImageOps.exif_transpose(img, in_place=True)
        return img
    # Pillow raises many exception types on corrupt data; all of them mean "this file is broken".
    except Exception as exc:
        raise ImageError(path, f"cannot decode: {exc}") from exc


def _oriented_size(img: Image.Image) -> tuple[int, int]:
    """(H, W) as displayed, i.e. after the EXIF orientation is applied."""
    width, height = img.size
    # The base-class getexif reads only what the header parse found; PNG's override would decode every
    # pixel to look for an EXIF chunk after them. The result is cached, so decoding then agrees with it.
    orientation = Image.Image.getexif(img).get(ExifTags.Base.Orientation, 1)
    if orientation in _SWAPPING_ORIENTATIONS:
        width, height = height, width
    return height, width


def _float_to_unit(values: np.ndarray, path: Path) -> np.ndarray:
    if not np.isfinite(values).all():
        raise ImageError(path, "float image contains NaN or infinite pixels")
    low, high = float(values.min()), float(values.max())
    if low >= 0.0 and high <= 1.0:
        return values
    if high == low:
        return np.zeros_like(values)
    return (values - low) / (high - low)


def _to_rgb_array(img: Image.Image, path: Path) -> np.ndarray:
    """Decoded PIL image -> float32 (H, W, 3) in [0, 1]."""
    if img.mode in _INTEGER_MODES:
        gray = np.clip(np.asarray(img, dtype=np.float32) / 65535.0, 0.0, 1.0)  # (H, W)
        return np.repeat(gray[..., None], 3, axis=2)
    if img.mode == "F":
        gray = _float_to_unit(np.asarray(img, dtype=np.float32), path)
        return np.repeat(gray[..., None], 3, axis=2)
    try:
        if img.mode in _ALPHA_MODES or "transparency" in img.info:
            rgba = np.asarray(img.convert("RGBA"), dtype=np.float32) / 255.0  # (H, W, 4)
            return rgba[..., :3] * rgba[..., 3:]  # over black
        return np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    except ValueError as exc:  # modes Pillow cannot turn into RGB (e.g. LAB)
        raise ImageError(path, f"unsupported image mode {img.mode!r}: {exc}") from exc


def read_image_array(source: Source, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read any supported image as float32 RGB ``(3, H, W)`` in [0, 1], EXIF orientation applied (numpy)."""
    with open_image(source, max_pixels) as img:
        path = source_name(source)
        if getattr(img, "n_frames", 1) > 1:
            warnings.warn(f"{path}: {img.n_frames} pages or frames, only the first is scored", ImageWarning,
                          stacklevel=2)
        rgb = _to_rgb_array(_decode(img, path), path)  # (H, W, 3)
    return np.ascontiguousarray(rgb.transpose(2, 0, 1))  # (3, H, W)


def read_image(source: Source, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> torch.Tensor:
    """:func:`read_image_array` as a tensor (sharing its memory)."""
    import torch

    return torch.from_numpy(read_image_array(source, max_pixels=max_pixels))


def read_mask(
    path: str | Path,
    *,
    threshold: int = 127,
    expected_size: tuple[int, int] | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> torch.Tensor:
    """Read a ground-truth mask as bool ``(H, W)``: a pixel is defect where its value > ``threshold``.

    Values are on the 8-bit scale: 16-bit masks are divided by 257 first, colour masks use the
    largest channel (any coloured pixel is defect), float masks are compared as stored.
    ``expected_size`` is the image's (H, W); it is checked from the header, before decoding.
    """
    import torch

    path = Path(path)
    with open_image(path, max_pixels) as img:
        size = _oriented_size(img)
        if expected_size is not None and size != tuple(expected_size):
            raise ImageError(
                path, f"mask size (H, W) = {size} differs from the image size {tuple(expected_size)}"
            )
        img = _decode(img, path)
        if img.mode in _INTEGER_MODES:
            levels = np.asarray(img, dtype=np.float32) / 257.0
        elif img.mode in ("1", "L", "F"):
            levels = np.asarray(img.convert("L") if img.mode == "1" else img, dtype=np.float32)
        else:
            levels = np.asarray(img.convert("RGB")).max(axis=2)
    return torch.from_numpy(np.ascontiguousarray(levels > threshold))  # (H, W) bool


def image_size(source: Source, *, max_pixels: int | None = None) -> tuple[int, int]:
    """(H, W) as displayed (EXIF rotation applied), read from the header without decoding pixels.

    A file truncated after its header still reports a size here; it fails in :func:`read_image`.
    """
    with open_image(source, max_pixels) as img:
        return _oriented_size(img)


ImageSize = int | tuple[int, int]  # a working size: S (square) or (H, W); a JSON config gives [H, W]


def size_hw(size: ImageSize | list[int]) -> tuple[int, int]:
    """``size`` (int: square) as (height, width), checked."""
    height, width = (size, size) if isinstance(size, int) else size
    if height < 1 or width < 1:
        raise ValueError(f"resize size must be positive, got {size}")
    return height, width


def resize(image: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Bilinear, antialiased resize of ``(3, H, W)`` or ``(B, 3, H, W)`` to ``size`` (int: square)."""
    import torch.nn.functional as F

    if image.dim() not in (3, 4):
        raise ValueError(f"resize expects (3, H, W) or (B, 3, H, W), got shape {tuple(image.shape)}")
    height, width = size_hw(size)
    batch = image if image.dim() == 4 else image[None]  # (B, 3, H, W)
    in_height, in_width = batch.shape[-2:]
    if in_height * width > max(in_height * in_width, height * width):
        # PyTorch resizes the width first: a tall image would be stretched to the output's width at its full
        # height. Resizing the height first keeps every step within the output's size.
        batch = F.interpolate(batch, size=(height, in_width), mode="bilinear", align_corners=False,
                              antialias=True)
    out = F.interpolate(batch, size=(height, width), mode="bilinear", align_corners=False, antialias=True)
    return out if image.dim() == 4 else out[0]


def resize_array(image: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """:func:`resize` without PyTorch: float32 ``(3, H, W)`` or ``(B, 3, H, W)``, Pillow's bilinear resize of
    each channel as a float image (antialiased like torch's ``antialias=True``, which was made to match it)."""
    if image.ndim not in (3, 4):
        raise ValueError(f"resize expects (3, H, W) or (B, 3, H, W), got shape {image.shape}")
    height, width = size_hw(size)
    channels = np.asarray(image, dtype=np.float32).reshape(-1, *image.shape[-2:])  # (B·3, H, W)
    out = np.stack([np.asarray(Image.fromarray(c).resize((width, height), Image.Resampling.BILINEAR))
                    for c in channels])
    return out.reshape(*image.shape[:-2], height, width)


def resized_batch(images: list[np.ndarray], size: ImageSize, *, arrays: bool) -> np.ndarray | torch.Tensor:
    """Decoded (3, H_i, W_i) arrays -> one (N, 3, H, W) batch at the working size for a scorer: numpy, resized by
    Pillow, for one that takes arrays (an export, no PyTorch); else a tensor resized by PyTorch, as a detector's
    own images."""
    if arrays:
        return np.stack([resize_array(image, size) for image in images])
    import torch

    return torch.stack([resize(torch.from_numpy(image), size) for image in images])


def list_images(*paths: str | Path) -> list[Path]:
    """Files as given, folders expanded recursively (sorted, image suffixes only), duplicates dropped.

    Hidden names inside folders are skipped: macOS ``._name.png`` resource forks and checkpoint
    folders end in image suffixes but are not images. Symbolic links that lead nowhere (dangling, or a loop)
    are kept, so that reading them fails with their name and reason like any other unreadable file.
    """
    found: dict[Path, None] = {}
    for path in map(Path, paths):
        if path.is_file() or path.is_symlink() and not path.is_dir():
            found[path] = None
        elif path.is_dir():
            images = sorted(
                p for p in path.rglob("*")
                if p.suffix.lower() in IMAGE_SUFFIXES and (p.is_file() or p.is_symlink() and not p.is_dir())
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
            if not images:
                raise ImageError(path, f"folder holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
            found.update(dict.fromkeys(images))
        else:
            raise ImageError(path, "no such file or folder")
    return list(found)


def load_batch(
    paths: Iterable[str | Path],
    *,
    size: int | tuple[int, int],
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> tuple[torch.Tensor, list[Path], list[tuple[Path, str]]]:
    """Read and resize each image, skipping unreadable ones.

    Returns the stacked images ``(B, 3, S, S)`` of the ``ok`` paths, in order, and ``failed`` as
    ``(path, reason)`` pairs, so a batch command keeps every other result and reports failures at the end.
    """
    import torch

    height, width = size_hw(size)
    images: list[torch.Tensor] = []
    ok: list[Path] = []
    failed: list[tuple[Path, str]] = []
    for path in map(Path, paths):
        try:
            image = read_image(path, max_pixels=max_pixels)  # (3, H, W)
        except ImageError as exc:
            failed.append((path, exc.reason))
            continue
        images.append(resize(image, (height, width)))
        ok.append(path)
    batch = torch.stack(images) if images else torch.empty(0, 3, height, width)  # (B, 3, S, S)
    return batch, ok, failed
