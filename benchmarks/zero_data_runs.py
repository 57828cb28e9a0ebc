"""One run of the zero-data benchmark (``test_batch.py``), in its own process so its peak memory is its own.

Every image went through the backbone once (``cache``); a run scores the cached levels. Kinds of run:

* ``whole``: the whole test set. ``testbatch`` scores it as one batch; the peers (``mutual`` and the
  leave-one-out rows) cut it into MuSc's subsets (one on bottle, eight on Magnetic Tile), as MuSc does.
* ``batch``: 200 images, ``fraction`` of them test defects and the rest good (test and training), drawn with
  ``seed``; the batch's own decisions (rule ``mad``, as ``lineguard predict`` makes them) are counted.
* ``stream``: the line monitor over a stream of good images with test defects mixed in.

The peers share one pass: every patch's distance to its nearest patch in each other image of its batch (no
coreset, nothing learned) gives mutual scoring (the interval mean over the closest 30 % of images) and the
leave-one-out rows (the k-th closest image, k = 1, 3; image score the map's maximum).
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from lineguard.evaluation import load_masks, peak_rss_mb
from lineguard.features.lnamd import as_patch_rows, lnamd
from lineguard.io.datasets import Dataset, load_dataset
from lineguard.methods import create
from lineguard.metrics import evaluate
from lineguard.monitor import LineMonitor
from lineguard.scoring.batch import interval_mean, nearest_in_each_image
from lineguard.scoring.image import max_score
from lineguard.scoring.maps import combine_views
from lineguard.scoring.threshold import robust_threshold
from zero_data_cache import BACKBONE, SIZE, backbone_seconds, load_features, musc_subsets

METRICS = ("image_auroc", "pixel_auroc", "aupro")
LEAVE_ONE_OUT = (1, 3)  # the k-th closest other image
MUSC_SUBSETS = {"magnetic_tile": 8}  # MuSc's divide_num on Magnetic Tile; 1 elsewhere


def peers(levels: Sequence[Tensor], subsets: Sequence[Tensor]) -> dict[str, tuple[Tensor, Tensor]]:
    """Mutual scoring and the leave-one-out rows from one all-pairs pass per subset -> {row: (scores, maps)}."""
    mutual = create("mutual", backbone=BACKBONE, image_size=SIZE)
    plain = create("mutual", backbone=BACKBONE, image_size=SIZE, rescore_k=[], sigma=0)  # maps only
    n = len(levels[0])
    rows = ["mutual", *(f"leave-one-out k={k}" for k in LEAVE_ONE_OUT)]
    grids = {row: torch.empty(n, *levels[0].shape[-2:]) for row in rows}
    for subset in subsets:
        views: dict[str, list[list[Tensor]]] = {row: [] for row in rows}
        for level_views in lnamd([level[subset] for level in levels], mutual.radius_list):
            per_level: dict[str, list[Tensor]] = {row: [] for row in rows}
            for view in level_views:
                nearest = nearest_in_each_image(as_patch_rows(view))  # (n, L, n), self at +inf
                shape = (len(subset), *view.shape[-2:])
                others = nearest.sort(dim=2).values[..., :-1]  # drop the image itself (+inf, last)
                per_level["mutual"].append(interval_mean(others, mutual.fraction).view(shape))
                for k in LEAVE_ONE_OUT:
                    per_level[f"leave-one-out k={k}"].append(others[..., k - 1].reshape(shape))
            for row in rows:
                views[row].append(per_level[row])
        for row in rows:
            grids[row][subset] = combine_views(views[row])
    out = {}
    for row, grid in grids.items():
        detector = mutual if row == "mutual" else plain
        prediction = detector.finish(grid, max_score(grid), levels)
        out[row] = (prediction.scores, prediction.maps)
    return out


def score(method: str, levels: list[Tensor], subsets: list[Tensor]) -> dict[str, tuple[Tensor, Tensor]]:
    """{row: (scores, maps)} of ``method`` ("testbatch" or "peers") over the images of ``levels``."""
    if method == "peers":
        return peers(levels, subsets)
    detector = create(method, backbone=BACKBONE, image_size=SIZE)
    n = len(levels[0])
    scores, maps = torch.empty(n), torch.empty(n, SIZE, SIZE)
    for subset in subsets:
        prediction = detector.predict_levels([level[subset] for level in levels])
        scores[subset], maps[subset] = prediction.scores, prediction.maps
    return {method: (scores, maps)}


def measured(rows: dict[str, tuple[Tensor, Tensor]], labels: Tensor, masks: Tensor, seconds: float,
             forward: float) -> dict:
    """Metrics of every row, with the scoring time per image against the backbone's."""
    peak = peak_rss_mb()
    result = {"scoring_s": seconds, "backbone_s": forward, "backbone_now_s": backbone_seconds(),
              "peak_rss_mb": peak, "rows": {}}
    for row, (scores, maps) in rows.items():
        metrics = evaluate(labels, scores, masks, maps) if labels.any() else {}
        flagged = scores >= robust_threshold(scores)
        result["rows"][row] = {**{k: float(metrics[k]) for k in METRICS if k in metrics},
                               "flagged_defects": int((flagged & (labels == 1)).sum()),
                               "flagged_good": int((flagged & (labels == 0)).sum())}
    return result


def run_whole(spec: dict, data: dict[str, Path]) -> dict:
    name = spec["dataset"]
    levels, paths, _, forward = load_features(name, "test")
    dataset = load_dataset(data[name])
    by_path = {str(s.path): s for s in dataset.test}
    samples = [by_path[p] for p in paths]
    count = MUSC_SUBSETS.get(name, 1) if spec["method"] == "peers" else 1
    subsets = [torch.tensor(s) for s in musc_subsets([s.defect for s in samples], count)]
    start = time.perf_counter()
    rows = score(spec["method"], levels, subsets)
    seconds = (time.perf_counter() - start) / len(samples)
    labels = torch.tensor([s.label for s in samples])
    return {"images": len(samples), "subsets": len(subsets),
            **measured(rows, labels, load_masks(samples, SIZE, dataset.mask_threshold), seconds, forward)}


def draw_batch(name: str, dataset: Dataset, fraction: float, seed: int, size: int = 200):
    """(levels, labels, masks, backbone seconds per image) of one batch: ``fraction`` test defects, the rest good
    test and training images."""
    test, test_paths, _, forward = load_features(name, "test")
    good = load_features(name, "good")[0]
    by_path = {str(s.path): s for s in dataset.test}
    samples = [by_path[p] for p in test_paths]
    pool = [("good", i) for i in range(len(good[0]))] + [("test", i) for i, s in enumerate(samples) if s.label == 0]
    defects = [("test", i) for i, s in enumerate(samples) if s.label == 1]
    rng = random.Random(seed)
    n_defects = round(fraction * size)
    chosen = rng.sample(defects, n_defects) + rng.sample(pool, size - n_defects)
    rng.shuffle(chosen)
    source = {"test": test, "good": good}
    levels = [torch.stack([source[split][level][i] for split, i in chosen]) for level in range(len(test))]
    labels = torch.tensor([int((split, i) in set(defects)) for split, i in chosen])
    masks = torch.zeros(size, SIZE, SIZE, dtype=torch.bool)
    picked = [(b, samples[i]) for b, (split, i) in enumerate(chosen) if split == "test" and samples[i].label == 1]
    if picked:
        masks[[b for b, _ in picked]] = load_masks([s for _, s in picked], SIZE, dataset.mask_threshold)
    return levels, labels, masks, forward


def run_batch(spec: dict, data: dict[str, Path]) -> dict:
    name = spec["dataset"]
    dataset = load_dataset(data[name])
    levels, labels, masks, forward = draw_batch(name, dataset, spec["fraction"], spec["seed"], spec["batch"])
    start = time.perf_counter()
    rows = score(spec["method"], levels, [torch.arange(len(labels))])
    seconds = (time.perf_counter() - start) / len(labels)
    return {"defects": int(labels.sum()), "images": len(labels), **measured(rows, labels, masks, seconds, forward)}


def run_stream(spec: dict, data: dict[str, Path]) -> dict:
    """The monitor over a stream of good images with ``defect_rate`` test defects mixed in; per-image time and
    resident memory along the stream, and how well its scores and decisions separate the defects."""
    name = spec["dataset"]
    # the cache is memory-mapped: read it all now, or RSS would grow as the stream first touches each image
    test, test_paths, _, forward = load_features(name, "test")
    test, good = [level.clone() for level in test], [level.clone() for level in load_features(name, "good")[0]]
    label_of = {str(s.path): s.label for s in load_dataset(data[name]).test}
    labels = [label_of[p] for p in test_paths]
    normal = [(good, i) for i in range(len(good[0]))] + [(test, i) for i, y in enumerate(labels) if y == 0]
    defects = [(test, i) for i, y in enumerate(labels) if y == 1]
    rng = random.Random(0)
    monitor = LineMonitor(backbone=BACKBONE, image_size=SIZE)
    seconds, rss, decided = [], {}, []
    for step in range(spec["length"]):
        is_defect = step >= 2 * monitor.warmup and rng.random() < spec["defect_rate"]
        source, i = rng.choice(defects if is_defect else normal)
        flip = rng.random() < 0.5  # mirrored parts: a long stream is not a loop of identical images
        levels = [level[i:i + 1].flip(-1) if flip else level[i:i + 1] for level in source]
        start = time.perf_counter()
        decision = monitor.score_levels(levels)
        seconds.append(time.perf_counter() - start)
        if decision.anomalous is not None:
            decided.append((decision.score, decision.anomalous, int(is_defect)))
        if (step + 1) % 100 == 0:
            rss[step + 1] = int(Path("/proc/self/statm").read_text().split()[1]) * 4096 / 2**20
    flagged = [y for _, anomalous, y in decided if anomalous]
    windows = {f"{a}-{a + 100}": 1000 * sum(seconds[a:a + 100]) / 100
               for a in (100, len(seconds) // 2, len(seconds) - 100)}
    auroc = evaluate(torch.tensor([y for *_, y in decided]), torch.tensor([s for s, *_ in decided]))["image_auroc"]
    return {"ms_per_image_scoring": windows, "backbone_ms": 1000 * forward, "rss_mb": rss,
            "reference_images": monitor.ring.filled, "peak_rss_mb": peak_rss_mb(),
            "image_auroc": float(auroc), "flagged": len(flagged), "flag_precision": sum(flagged) / max(1, len(flagged)),
            "flag_recall": sum(flagged) / max(1, sum(y for *_, y in decided))}


RUNNERS = {"whole": run_whole, "batch": run_batch, "stream": run_stream}
