"""Synthetic parts and textures with planted defects: the demo's data, the tests' fixtures, a benchmark set.

Real line images are not shipped with lineguard, yet a fresh install must show a full run and tests must
check that planted defects are found. Normal images vary the way line images do (position, brightness,
sensor noise), so a detector that merely memorises one image would fail; defects are small and local, with
exact masks. Three kinds:

* ``part``: a grooved disc at a fixed pose (``flat.py``) — every normal patch recurs in every image;
* ``texture``: a woven surface (``flat.py``);
* ``posed``: a screw-like part at an arbitrary rotation and position (``posed.py``) — a normal patch recurs
  only in the images that share its pose.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from lineguard.synthetic import flat, posed

Kind = Literal["part", "texture", "posed"]
DEFECTS: dict[str, tuple[str, ...]] = {"part": flat.DEFECTS, "texture": flat.DEFECTS, "posed": posed.DEFECTS}


@dataclass
class SyntheticImage:
    image: np.ndarray  # (H, W, 3) uint8
    mask: np.ndarray  # (H, W) bool, all False for good images
    defect: str  # "good" or one of DEFECTS[kind]


def make_image(rng: np.random.Generator, *, kind: Kind = "part", size: int = 128,
               defect: str | None = None) -> SyntheticImage:
    """One image; ``defect=None`` gives a good one."""
    if kind == "posed":
        image, mask = posed.draw(rng, size, defect)
    else:
        image = flat.part(rng, size) if kind == "part" else flat.texture(rng, size)
        mask = flat.plant(rng, image, defect) if defect else np.zeros((size, size), dtype=bool)
    image = image + rng.normal(0, 0.015, image.shape)  # sensor noise
    return SyntheticImage((np.clip(image, 0, 1) * 255).round().astype(np.uint8), mask, defect or "good")


def make_batch(n_good: int, n_defective: int, *, kind: Kind = "part", size: int = 128,
               seed: int = 0) -> list[SyntheticImage]:
    """``n_good`` good images followed by ``n_defective`` ones cycling through the kind's defect types."""
    rng = np.random.default_rng(seed)
    defects = DEFECTS[kind]
    good = [make_image(rng, kind=kind, size=size) for _ in range(n_good)]
    bad = [make_image(rng, kind=kind, size=size, defect=defects[i % len(defects)]) for i in range(n_defective)]
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
