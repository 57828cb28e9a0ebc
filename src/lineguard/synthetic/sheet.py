"""A high-resolution woven sheet with flaws far smaller than the frame: what tiling is for.

The weave's period is a few pixels, so resizing the whole frame to the working size blurs it to an even grey
(antialiasing averages each period away), and a flaw that only disturbs the weave — a smooth spot where the
threads are missing, a patch woven coarser — keeps the mean grey and vanishes with it. At native resolution,
tile by tile, the weave and the flaw are both plain. Flaws cover a chosen share of the frame (0.05–0.5 % in
the tiling benchmark), as an ellipse anywhere on it.

Letters: H × W the frame.
"""

from __future__ import annotations

import numpy as np

FLAWS = ("smooth", "coarse")
PERIOD = 4.0  # px of one weave repeat: gone once a frame is shrunk 3× or more


def weave(yy: np.ndarray, xx: np.ndarray, period: float, phase: np.ndarray) -> np.ndarray:
    return np.sin(2 * np.pi * xx / period + phase[0]) * np.sin(2 * np.pi * yy / period + phase[1])


def sheet(rng: np.random.Generator, height: int, width: int, flaw: str | None = None,
          area_fraction: float = 0.002) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) floats in [0, 1] and the (H, W) bool mask of its flaw (``flaw`` None: a good sheet)."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi, 2)
    contrast = 0.2 * rng.uniform(0.9, 1.1)
    pattern = weave(yy, xx, PERIOD, phase)
    mask = np.zeros((height, width), dtype=bool)
    if flaw is not None:
        aspect = rng.uniform(0.5, 2.0)
        b = np.sqrt(area_fraction * height * width / np.pi / aspect)  # semi-axes a = aspect · b, a · b · π = area
        centre = rng.uniform(0.1, 0.9, 2) * (height, width)
        mask = ((yy - centre[0]) / b) ** 2 + ((xx - centre[1]) / (aspect * b)) ** 2 < 1
        if flaw == "smooth":
            pattern[mask] = 0.0
        elif flaw == "coarse":
            pattern[mask] = weave(yy, xx, PERIOD * 1.6, phase)[mask]
        else:
            raise ValueError(f"unknown flaw {flaw!r}; choose from {FLAWS}")
    grey = 0.5 + contrast * pattern + rng.uniform(-0.03, 0.03)
    image = grey[..., None] * np.array([0.85, 0.8, 0.7]) + rng.normal(0, 0.015, (height, width, 3))
    return np.clip(image, 0, 1), mask
