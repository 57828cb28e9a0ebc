"""Synthetic parts and textures with planted defects: the demo's data and the tests' fixtures.

Real line images are not shipped with lineguard, yet a fresh install must show a full run and tests must
check that planted defects are found. Normal images vary the way line images do (position, brightness,
sensor noise), so a detector that merely memorises one image would fail; defects are small and local
(scratch, spot, crack), with exact masks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

Kind = Literal["part", "texture"]
DEFECTS = ("scratch", "spot", "crack")


@dataclass
class SyntheticImage:
    image: np.ndarray  # (H, W, 3) uint8
    mask: np.ndarray  # (H, W) bool, all False for good images
    defect: str  # "good" or one of DEFECTS


def _part(rng: np.random.Generator, size: int) -> np.ndarray:
    """A bright disc with concentric grooves on a dark, noisy background, shifted a few pixels."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    cy, cx = size / 2 + rng.uniform(-0.03, 0.03, 2) * size
    r = np.hypot(yy - cy, xx - cx) / size
    disc = np.clip((0.36 - r) * 60, 0, 1)
    grooves = 0.12 * np.cos(r * 90) * disc
    base = 0.12 + 0.6 * disc + grooves
    tint = np.array([1.0, 0.95, 0.85]) * rng.uniform(0.9, 1.1)
    return base[..., None] * tint


def _texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """A woven texture: two crossing sinusoids with random phase, like fabric or a brushed surface."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    py, px = rng.uniform(0, 2 * np.pi, 2)
    period = size / 16
    weave = np.sin(2 * np.pi * xx / period + px) * np.sin(2 * np.pi * yy / period + py)
    base = 0.5 + 0.18 * weave * rng.uniform(0.9, 1.1)
    return base[..., None] * np.array([0.8, 0.75, 0.6])


def _plant(rng: np.random.Generator, image: np.ndarray, defect: str) -> np.ndarray:
    """Draw a defect in place and return its mask; positions stay in the central region of the part."""
    size = image.shape[0]
    mask = np.zeros((size, size), dtype=bool)
    yy, xx = np.mgrid[0:size, 0:size]
    centre = rng.uniform(0.3, 0.7, 2) * size
    if defect == "spot":
        radius = rng.uniform(0.03, 0.05) * size
        mask = np.hypot(yy - centre[0], xx - centre[1]) < radius
        image[mask] = image[mask] * 0.25 + 0.02
    elif defect == "scratch":
        angle = rng.uniform(0, np.pi)
        length = rng.uniform(0.15, 0.25) * size
        d = np.array([np.sin(angle), np.cos(angle)])
        rel_y, rel_x = yy - centre[0], xx - centre[1]
        along = rel_y * d[0] + rel_x * d[1]
        across = -rel_y * d[1] + rel_x * d[0]
        mask = (np.abs(along) < length / 2) & (np.abs(across) < max(1.5, size / 128))
        image[mask] = 0.95
    elif defect == "crack":
        point = centre.copy()
        step = size / 64
        angle = rng.uniform(0, 2 * np.pi)
        for _ in range(int(rng.integers(14, 22))):
            angle += rng.normal(0, 0.5)
            point = np.clip(point + step * np.array([np.sin(angle), np.cos(angle)]), 0, size - 1)
            mask |= np.hypot(yy - point[0], xx - point[1]) < max(1.5, size / 100)
        image[mask] = image[mask] * 0.3
    else:
        raise ValueError(f"unknown defect {defect!r}; choose from {DEFECTS}")
    return mask


def make_image(rng: np.random.Generator, *, kind: Kind = "part", size: int = 128,
               defect: str | None = None) -> SyntheticImage:
    """One image; ``defect=None`` gives a good one."""
    image = _part(rng, size) if kind == "part" else _texture(rng, size)
    mask = _plant(rng, image, defect) if defect else np.zeros((size, size), dtype=bool)
    image = image + rng.normal(0, 0.015, image.shape)  # sensor noise
    return SyntheticImage((np.clip(image, 0, 1) * 255).round().astype(np.uint8), mask, defect or "good")


def make_batch(n_good: int, n_defective: int, *, kind: Kind = "part", size: int = 128,
               seed: int = 0) -> list[SyntheticImage]:
    """``n_good`` good images followed by ``n_defective`` ones cycling through the defect types."""
    rng = np.random.default_rng(seed)
    good = [make_image(rng, kind=kind, size=size) for _ in range(n_good)]
    bad = [make_image(rng, kind=kind, size=size, defect=DEFECTS[i % len(DEFECTS)]) for i in range(n_defective)]
    return good + bad


def write_mvtec_layout(root: str | Path, *, kind: Kind = "part", size: int = 256, n_train: int = 12,
                       n_test_good: int = 6, n_test_defective: int = 6, seed: int = 0) -> Path:
    """Write a small dataset in the MVTec AD layout (train/good, test/<defect>, ground_truth/<defect>)."""
    root = Path(root)
    train = make_batch(n_train, 0, kind=kind, size=size, seed=seed)
    test = make_batch(n_test_good, n_test_defective, kind=kind, size=size, seed=seed + 1)
    for i, item in enumerate(train):
        _save(root / "train" / "good" / f"{i:03d}.png", item.image)
    for i, item in enumerate(test):
        _save(root / "test" / item.defect / f"{i:03d}.png", item.image)
        if item.defect != "good":
            _save(root / "ground_truth" / item.defect / f"{i:03d}_mask.png", item.mask.astype(np.uint8) * 255)
    return root


def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
