"""Memory-bank fit on a Ray cluster: patch features per worker shard, the bank merged on the driver.

Letters: N patch rows of all normal images, N_i those of shard i, D the feature dimension, M the bank size.

The good images are dealt out to ``workers`` shards (every workers-th image, so each shard samples the whole
set); a worker extracts its shard's (N_i, D) patch features — its memory is bounded by its shard — and keeps:

* ``patchcore``: a greedy k-center coreset of ``OVERSAMPLE`` × its share of the bank (coreset_ratio × N_i rows,
  twice over); the driver then runs greedy k-center over the union of the shards' coresets down to
  coreset_ratio × N rows, the size a local fit keeps. This is the composable coreset of distributed k-center
  (Malkomes et al., NeurIPS 2015): every row lies within its shard coreset's covering radius r_shard of a shard
  centre, and every shard centre within r_merge of the bank, so the bank covers all N rows within
  r_shard + r_merge — at most 4 × the optimal k-center radius when each shard keeps M centres, against 2 × for
  the one-machine greedy. It approximates the local fit's coreset; ``benchmarks/scale_out.py`` measures the
  two banks' covering radii and the accuracy of both.
* ``knn``: every row (the bank is the union itself, exactly the local fit's bank up to row order).

PaDiM, SPADE, the trained and the few-shot methods fit as they do on one machine.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lineguard.distributed.cluster import Cluster
from lineguard.errors import ParameterError
from lineguard.io.batches import NoReadableImagesError
from lineguard.memory.coreset import coreset_size, greedy_coreset

#: How many times its share of the bank a shard's coreset keeps, so that the merge has centres to choose from.
OVERSAMPLE = 2
#: Methods whose learned reference is a bank of patch rows, and whether that bank is a coreset.
BANK_METHODS = {"patchcore": True, "knn": False}


def shard_bank(method: str, params: dict[str, Any], paths: list[Path], batch_size: int,
               keep_ratio: float) -> tuple[np.ndarray | None, int, int, list[tuple[Path, str]]]:
    """On a worker: (M_i, D) bank rows of one shard (a coreset of ``keep_ratio`` of its rows, or all of them),
    its number of rows N_i, of images read, and its unreadable files."""
    from lineguard.features.patches import flatten_patches
    from lineguard.io.batches import ImageBatches
    from lineguard.methods import create

    detector = create(method, **params)
    batches = ImageBatches(paths, size=detector.image_size, batch_size=batch_size)
    features = detector.features(detector.fit_batches(batches), f"{method}: shard features")
    parts = [flatten_patches(f) for f in features]  # -> (B·h·w, D) each
    if not parts:
        return None, 0, 0, batches.failed
    rows = torch.cat(parts)  # -> (N_i, D)
    if keep_ratio < 1:
        rows = rows[greedy_coreset(rows, coreset_size(len(rows), keep_ratio), seed=detector.seed,
                                   projection_dim=detector.projection_dim, progress=False)]
    return rows.numpy(), sum(len(p) for p in parts), len(batches.loaded), batches.failed


def merge_banks(banks: list[Tensor], total_rows: int, detector: Any) -> Tensor:
    """The detector's bank from the shards' (M_i, D) banks of ``total_rows`` patch rows in all: k-center over
    their union down to the local fit's size (a coreset method), or the union itself."""
    union = torch.cat(banks)  # -> (Σ M_i, D)
    if not BANK_METHODS[detector.name]:
        return union
    size = min(len(union), coreset_size(total_rows, detector.coreset_ratio))
    return union[greedy_coreset(union, size, seed=detector.seed, projection_dim=detector.projection_dim)]


def fit_on_cluster(ray: ModuleType, cluster: Cluster, detector: Any, paths: list[Path], *,
                   batch_size: int) -> tuple[int, list[tuple[Path, str]]]:
    """Fit ``detector`` (a memory-bank method) on the images ``paths`` over ``cluster.workers`` shards; the
    number of images read, and the unreadable files. NoReadableImagesError when none can be read."""
    if detector.name not in BANK_METHODS:
        raise ParameterError(f"fit --ray takes a memory-bank method ({', '.join(BANK_METHODS)}), not "
                             f"{detector.name!r}: fit it without --ray")
    detector.validate_params()
    keep_ratio = min(1.0, OVERSAMPLE * detector.coreset_ratio) if BANK_METHODS[detector.name] else 1.0
    task = ray.remote(shard_bank).options(num_cpus=1)
    shards = [paths[i::cluster.workers] for i in range(cluster.workers)]
    results = ray.get([task.remote(detector.name, detector.get_params(), shard, batch_size, keep_ratio)
                       for shard in shards if shard])
    failed = [failure for result in results for failure in result[3]]
    banks = [torch.tensor(bank) for bank, *_ in results if bank is not None]  # a copy: Ray hands read-only arrays
    if not banks:
        raise NoReadableImagesError(f"fit on {len(paths)} images", failed)
    detector.memory_bank_ = merge_banks(banks, sum(r[1] for r in results), detector).contiguous()  # -> (M, D)
    return sum(r[2] for r in results), failed
