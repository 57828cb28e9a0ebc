"""The zero-data benchmark's feature cache: every test and good training image through the backbone once.

Levels are stored per dataset and split (safetensors, with the decode and forward seconds they cost) in
``$LINEGUARD_BENCH_CACHE`` (default: ``lineguard-bench`` in the temporary folder); runs read them back.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
import time
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from lineguard.features.extractor import PatchExtractor
from lineguard.io.batches import ImageBatches
from lineguard.io.datasets import load_dataset

BACKBONE, SIZE = "effnet-lite0", 256
CACHE = Path(os.environ.get("LINEGUARD_BENCH_CACHE", Path(tempfile.gettempdir()) / "lineguard-bench"))


def cache_file(name: str, split: str) -> Path:
    return CACHE / f"{name}-{split}.safetensors"


def extractor() -> PatchExtractor:
    return PatchExtractor(BACKBONE, levels=None, weights=None, device="cpu", image_size=SIZE, patch_size=1)


def extract(name: str, folder: Path) -> None:
    """Levels of every test and good training image, with the seconds spent decoding and in the backbone."""
    dataset = load_dataset(folder)
    backbone = extractor()
    for split, paths in (("test", [s.path for s in dataset.test]), ("good", dataset.good_train)):
        target = cache_file(name, split)
        if target.exists():
            continue
        batches = ImageBatches(paths, size=SIZE, batch_size=16)
        levels, decode, forward = [], 0.0, 0.0
        iterator, start = iter(batches), time.perf_counter()
        for batch in iterator:
            decode += time.perf_counter() - start
            start = time.perf_counter()
            levels.append(backbone.levels_of(batch))
            forward += time.perf_counter() - start
            start = time.perf_counter()
        tensors = {f"level{i}": torch.cat(parts).contiguous() for i, parts in enumerate(zip(*levels, strict=True))}
        target.parent.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(target), metadata={"paths": json.dumps([str(p) for p in batches.loaded]),
                                                   "decode_seconds": str(decode), "forward_seconds": str(forward)})
        print(f"{name} {split}: {len(batches.loaded)} images, decode {decode:.1f} s, forward {forward:.1f} s")


def load_features(name: str, split: str) -> tuple[list[torch.Tensor], list[str], float, float]:
    """Cached levels [(N, C_l, h_l, w_l)], their paths, and decode and forward seconds per image."""
    with safe_open(str(cache_file(name, split)), framework="pt") as f:
        meta = f.metadata()
        levels = [f.get_tensor(f"level{i}") for i in range(len(f.keys()))]
    paths = json.loads(meta["paths"])
    return levels, paths, float(meta["decode_seconds"]) / len(paths), float(meta["forward_seconds"]) / len(paths)


def backbone_seconds(images: int = 32) -> float:
    """Backbone forward seconds per image, measured now in this process (the load of the machine changes
    over a benchmark, so a time ratio is only fair within one process)."""
    backbone = extractor()
    batch = torch.rand(16, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    backbone.levels_of(batch)  # warm-up
    start = time.perf_counter()
    for _ in range(images // 16):
        backbone.levels_of(batch)
    return (time.perf_counter() - start) / images


def musc_subsets(types: list[str], count: int, seed: int = 0) -> list[list[int]]:
    """MuSc's split into ``count`` subsets: the types in sorted order, each type's images (in file order)
    shuffled with ``seed``, cut into runs of ``count``; subset j takes the j-th image of every run."""
    random.seed(seed)
    by_type: dict[str, list[int]] = {}
    for i, kind in enumerate(types):
        by_type.setdefault(kind, []).append(i)
    runs = []
    for kind in sorted(by_type):
        members = by_type[kind]
        random.shuffle(members)
        runs += [members[s:s + count] for s in range(0, len(members), count)]
    return [[run[j] for run in runs if len(run) > j] for j in range(count)]
