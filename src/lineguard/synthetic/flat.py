"""Parts and textures seen head-on at a fixed pose: a grooved disc and a woven texture, with planted defects.

The disc is rotation-symmetric and barely moves, so its normal look is the same in every image: the easy case
of a line, where every normal patch recurs in almost every image.
"""

from __future__ import annotations

import numpy as np

DEFECTS = ("scratch", "spot", "crack")


def part(rng: np.random.Generator, size: int) -> np.ndarray:
    """A bright disc with concentric grooves on a dark, noisy background, shifted a few pixels."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    cy, cx = size / 2 + rng.uniform(-0.03, 0.03, 2) * size
    r = np.hypot(yy - cy, xx - cx) / size
    disc = np.clip((0.36 - r) * 60, 0, 1)
    grooves = 0.12 * np.cos(r * 90) * disc
    base = 0.12 + 0.6 * disc + grooves
    tint = np.array([1.0, 0.95, 0.85]) * rng.uniform(0.9, 1.1)
    return base[..., None] * tint


def texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """A woven texture: two crossing sinusoids with random phase, like fabric or a brushed surface."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    py, px = rng.uniform(0, 2 * np.pi, 2)
    period = size / 16
    weave = np.sin(2 * np.pi * xx / period + px) * np.sin(2 * np.pi * yy / period + py)
    base = 0.5 + 0.18 * weave * rng.uniform(0.9, 1.1)
    return base[..., None] * np.array([0.8, 0.75, 0.6])


def plant(rng: np.random.Generator, image: np.ndarray, defect: str) -> np.ndarray:
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
