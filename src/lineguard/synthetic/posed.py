"""A screw-like part lying at an arbitrary rotation and position: the hard case for zero-data detection.

Letters: u along the part's axis (head at negative u), v across it, both in units of the image size.

A threaded shank and a head seen from above, rotated uniformly in [0°, 360°) and shifted, on a plain
background. Its normal look changes with its pose: a patch of thread at 30° matches only the images whose part
lies near 30°, so a normal patch recurs in a few images of a batch, not in most of them — what a reference
built on "normal patterns recur in most images" never meets on the rotation-symmetric disc of ``flat.py``.
Everything is drawn analytically in the part's own frame (u, v), so the defects turn with the part and their
masks are exact; edges are anti-aliased over one pixel.
"""

from __future__ import annotations

import numpy as np

DEFECTS = ("scratch", "chipped_thread", "dent")

HEAD = (-0.30, -0.18)  # the head's extent along u
HEAD_HALF_WIDTH = 0.10
NECK_END, NECK_HALF_WIDTH = -0.11, 0.05
THREAD_END, TIP_END = 0.22, 0.30
PITCH = 0.03  # thread pitch: 8 px at 256, finer than the backbone's stride-16 cells
ROOT, CREST = 0.032, 0.052  # thread half-widths
CENTRE_SHIFT = 0.12  # the part's centre moves this far from the image centre, each axis
LIGHT_AZIMUTH, LIGHT_ELEVATION = 0.75 * np.pi, 0.9  # the lamp: from the upper left, 52° above the table


def draw(rng: np.random.Generator, size: int, defect: str | None) -> tuple[np.ndarray, np.ndarray]:
    """One posed part -> (H, W, 3) floats (before sensor noise) and the defect's (H, W) bool mask."""
    if defect is not None and defect not in DEFECTS:
        raise ValueError(f"unknown defect {defect!r} for posed parts; choose from {DEFECTS}")
    yy, xx = (np.mgrid[0:size, 0:size].astype(np.float32) + 0.5) / size
    cy, cx = 0.5 + rng.uniform(-CENTRE_SHIFT, CENTRE_SHIFT, 2)
    angle = rng.uniform(0, 2 * np.pi)
    scale = rng.uniform(0.97, 1.03)  # parts differ a little in size
    u = (np.cos(angle) * (xx - cx) + np.sin(angle) * (yy - cy)) / scale
    v = (-np.sin(angle) * (xx - cx) + np.cos(angle) * (yy - cy)) / scale
    # the lamp stays where it is while the part turns: in the part's frame it comes from a pose-dependent side
    azimuth = LIGHT_AZIMUTH + rng.normal(0, 0.05)
    light = (np.cos(azimuth - angle) * np.cos(LIGHT_ELEVATION), np.sin(azimuth - angle) * np.cos(LIGHT_ELEVATION),
             np.sin(LIGHT_ELEVATION))  # (along u, along v, up)
    phase = rng.uniform(0, PITCH)  # where the thread starts
    half = half_width(u, phase)
    mask = np.zeros((size, size), dtype=bool)
    fracture = np.zeros((size, size), dtype=bool)
    if defect == "chipped_thread":
        start = rng.uniform(-0.08, 0.14)
        span = (u > start) & (u < start + rng.uniform(0.06, 0.10)) & (np.sign(v) == rng.choice([-1, 1]))
        cut = ROOT - 0.008
        mask = span & (np.abs(v) > cut - 0.012) & (np.abs(v) < half + 1 / size)
        fracture = span & (np.abs(v) > cut - 0.012) & (np.abs(v) <= cut)
        half = np.where(span, np.minimum(half, cut), half)
    cover = np.clip((half - np.abs(v)) * size * scale + 0.5, 0, 1)  # anti-aliased part coverage
    metal = shading(u, v, half, phase, light)
    if defect == "chipped_thread":
        metal = np.where(fracture, 0.55 + rng.normal(0, 0.06, metal.shape), metal)
    elif defect == "scratch":
        mask = scratch(rng, u, v) & (cover > 0.5)
        metal = np.where(mask, metal + 0.22, metal)
    elif defect == "dent":
        on_head = rng.random() < 0.5
        cu = rng.uniform(-0.27, -0.21) if on_head else rng.uniform(-0.16, -0.12)
        cv = rng.uniform(-0.05, 0.05) if on_head else rng.uniform(-0.015, 0.015)
        radius = rng.uniform(0.025, 0.04) if on_head else rng.uniform(0.02, 0.03)
        d = np.hypot(u - cu, v - cv) / radius
        mask = (d < 1) & (cover > 0.5)
        rim = 0.2 * np.exp(-((d - 1) / 0.2) ** 2) * (u < cu)  # the crater's raised edge
        metal = np.where(d < 1, metal * (0.55 + 0.45 * d**2), metal) + rim * (cover > 0.5)
    side = rng.uniform(0, 2 * np.pi)  # a faint gradient across the background, from any side
    background = 0.8 + 0.04 * ((xx - 0.5) * np.cos(side) + (yy - 0.5) * np.sin(side))
    grey = background * (1 - cover) + metal * cover
    image = grey[..., None] * rng.uniform(0.9, 1.1) * np.array([1.0, 0.99, 0.97])  # exposure jitter
    return image, mask


def half_width(u: np.ndarray, phase: float) -> np.ndarray:
    """The part's outline: half its width at each u (negative outside it, so nothing is covered there)."""
    thread = ROOT + (CREST - ROOT) * triangle((u - NECK_END - phase) / PITCH)
    tip = CREST * np.clip((TIP_END - u) / (TIP_END - THREAD_END), 0, 1)
    head_u = (u - np.mean(HEAD)) / ((HEAD[1] - HEAD[0]) / 2)
    head = HEAD_HALF_WIDTH * np.sqrt(np.clip(1 - head_u**8, 0, 1))  # a rounded rectangle
    return np.select([(u >= HEAD[0]) & (u < HEAD[1]), (u >= HEAD[1]) & (u < NECK_END),
                      (u >= NECK_END) & (u < THREAD_END), (u >= THREAD_END) & (u < TIP_END)],
                     [head, np.full_like(u, NECK_HALF_WIDTH), thread, np.minimum(thread, tip)], -1.0)


def shading(u: np.ndarray, v: np.ndarray, half: np.ndarray, phase: float,
            light: tuple[float, float, float]) -> np.ndarray:
    """Lambertian metal under one lamp: a round shank whose lit side follows the lamp, thread flanks facing
    it or not, a flat head with a bevelled rim."""
    along, across_light, up = light
    t = np.clip(v / np.maximum(half, 1e-6), -1, 1)  # −1 … 1 across the shank
    normal_up = np.sqrt(1 - t**2)
    metal = 0.15 + 0.55 * np.clip(t * across_light + normal_up * up, 0, None)
    threaded = (u >= NECK_END) & (u < TIP_END)
    flank = np.sign(np.sin(2 * np.pi * ((u - NECK_END - phase) + 0.3 * v) / PITCH))  # which way a flank faces
    metal = metal + np.where(threaded, (0.12 * flank * along + 0.06 * flank) * normal_up, 0.0)
    on_head = (u >= HEAD[0]) & (u < HEAD[1])
    rim = np.exp(-(((half - np.abs(v)) / 0.012) ** 2))  # the bevel along the head's long sides
    head = 0.15 + 0.5 * up + 0.3 * rim * np.sign(v) * across_light
    chamfer = -0.15 * np.exp(-(((u - HEAD[1] + 0.015) / 0.006) ** 2))
    return np.where(on_head, head + chamfer, metal)


def scratch(rng: np.random.Generator, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """A straight bright scratch on the head (any direction) or along the shank."""
    if rng.random() < 0.5:
        cu, cv, direction = rng.uniform(-0.27, -0.21), rng.uniform(-0.05, 0.05), rng.uniform(0, np.pi)
    else:
        cu, cv, direction = rng.uniform(-0.06, 0.16), rng.uniform(-0.012, 0.012), rng.uniform(-0.3, 0.3)
    length, width = rng.uniform(0.10, 0.16), 0.012
    along = (u - cu) * np.cos(direction) + (v - cv) * np.sin(direction)
    across = -(u - cu) * np.sin(direction) + (v - cv) * np.cos(direction)
    return (np.abs(along) < length / 2) & (np.abs(across) < width / 2)


def triangle(x: np.ndarray) -> np.ndarray:
    """A triangle wave of period 1 between 0 and 1 (the thread's profile)."""
    return 1 - 2 * np.abs(x - np.floor(x) - 0.5)
