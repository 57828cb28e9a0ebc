"""Growing a fitted model's normal set (``Detector.update``) against fitting on everything at once.

For each dataset the good training images are shuffled (seed 0) and cut in four quarters. The model is fitted
on the first quarter, then updated with one more quarter at a time; after each step it is scored on the test
split, and a model fitted from scratch on all the images seen so far is timed and scored beside it. Targets
(issue 20): after the last step within 0.005 image AUROC, pixel AUROC and AUPRO of the fit on everything,
and each update at most 0.3 × the seconds of that refit. Times are CPU seconds of the process (so a busy
machine does not skew the ratio) and include decoding the images, as a user's ``lineguard update`` /
``lineguard fit`` would; each is split into making the features (decoding and the backbone) and the rest
(building or merging the bank). A fit on the step's new images alone is timed beside them: what an update
could hardly undercut, since it must make those images' features and choose a coreset of their patches.

    python benchmarks/update.py --data path/to/mvtec_ad/bottle --data path/to/mtd/magnetic_tile --threads 1
    python benchmarks/update.py --data path/to/mvtec_ad/bottle --method padim --param n_features=100

Rows go to ``results/update/update.jsonl`` as they are measured (one per step: the grown and the refitted
model), the table to ``results/update/update.md``.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch

from lineguard.cli import parse_param
from lineguard.evaluation import load_masks
from lineguard.io.batches import ImageBatches
from lineguard.io.datasets import load_dataset
from lineguard.methods import Detector, create
from lineguard.metrics import evaluate

OUT = Path(__file__).parent / "results" / "update"
STEPS = 4  # the first quarter fitted, three more added
METRICS = ("image_auroc", "pixel_auroc", "aupro")


def timed(detector: Detector, work) -> tuple[float, float]:
    """CPU seconds of ``work`` in this process (all its threads: on a shared machine the wall clock measures
    the neighbours, the CPU time this work), and the part of them spent making ``detector``'s features
    (decoding and the backbone, which an update cannot skip for its new images); the rest builds or merges the
    bank."""
    extraction = 0.0
    produce = detector.features

    def counted(batches, description):
        nonlocal extraction
        features = produce(batches, description)
        while True:
            start = time.process_time()
            batch = next(features, None)
            extraction += time.process_time() - start
            if batch is None:
                return
            yield batch

    detector.features = counted
    start = time.process_time()
    try:
        work()
    finally:
        del detector.features
    return time.process_time() - start, extraction


def grow(root: Path, method: str, params: dict, size: int, batch_size: int, out: Path) -> None:
    """Measure one dataset, unless its last step is on file (an unfinished one is measured again)."""
    path = out / "update.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    mine = [r for r in rows if (r["dataset"], r["method"], r["params"]) == (root.name, method, params)]
    if any(r["step"] == STEPS - 1 for r in mine):
        return
    path.write_text("".join(json.dumps(r) + "\n" for r in rows if r not in mine))
    dataset = load_dataset(root)
    good = list(dataset.good_train)
    random.Random(0).shuffle(good)
    test = ImageBatches([s.path for s in dataset.test], size=size, batch_size=batch_size)
    test_batches = list(test)  # decoded once, scored by every model
    by_path = {s.path: s for s in dataset.test}
    samples = [by_path[p] for p in test.loaded]
    labels = torch.tensor([s.label for s in samples])
    masks = load_masks(samples, size, dataset.mask_threshold)

    def score(detector: Detector) -> dict[str, float]:
        prediction = detector.predict(test_batches)
        metrics = evaluate(labels, prediction.scores, masks, prediction.maps)
        return {k: round(float(metrics[k]), 4) for k in METRICS}

    def batches(paths: list[Path]) -> ImageBatches:
        return ImageBatches(paths, size=size, batch_size=batch_size)

    cuts = [round(len(good) * (step + 1) / STEPS) for step in range(STEPS)]
    grown = create(method, image_size=size, **params)
    seconds, extraction = timed(grown, lambda: grown.fit(batches(good[:cuts[0]])))
    row = {"dataset": root.name, "method": method, "params": params, "step": 0, "images": cuts[0],
           "threads": torch.get_num_threads(), "grown_seconds": round(seconds, 2),
           "grown_extract_seconds": round(extraction, 2), "grown": score(grown)}
    write(out, row)
    for step in range(1, STEPS):
        added = good[cuts[step - 1]:cuts[step]]
        update = timed(grown, lambda added=added: grown.update(batches(added)))
        refit = create(method, image_size=size, **params)
        again = timed(refit, lambda step=step, refit=refit: refit.fit(batches(good[:cuts[step]])))
        alone = create(method, image_size=size, **params)  # the floor: the new images' features and bank only
        floor = timed(alone, lambda added=added, alone=alone: alone.fit(batches(added)))
        write(out, {**row, "step": step, "images": cuts[step], "grown_seconds": round(update[0], 2),
                    "grown_extract_seconds": round(update[1], 2), "refit_seconds": round(again[0], 2),
                    "refit_extract_seconds": round(again[1], 2), "alone_seconds": round(floor[0], 2),
                    "alone_extract_seconds": round(floor[1], 2), "grown": score(grown), "refit": score(refit)})


def write(out: Path, row: dict) -> None:
    print(json.dumps(row), flush=True)
    with open(out / "update.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")


def table(out: Path) -> None:
    rows = [json.loads(line) for line in (out / "update.jsonl").read_text().splitlines()]
    lines = ["Fit on the first quarter of the good training images (step 0), then `update` with one more quarter "
             "per step, against a fit on all images seen so far; CPU seconds of the process, decoding included; in "
             "brackets the part spent on decoding and the backbone (rows measured before the split have none). "
             "`extraction / refit`: the update's extraction alone over the refit, what `update / refit` would be if "
             "merging the bank cost nothing. `new alone / refit`: a fit on the step's new images alone over the "
             "refit (their features and a coreset of their patches only).",
             "", "| dataset | method | params | step | images | update s (extraction) | refit s (extraction) | "
             "update / refit | extraction / refit | new alone / refit | grown image AUROC / pixel AUROC / AUPRO | "
             "refit image AUROC / pixel AUROC / AUPRO | largest gap | threads |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        params = " ".join(f"{k}={v}" for k, v in r["params"].items())
        grown = " / ".join(f"{r['grown'][k]:.3f}" for k in METRICS)
        if "refit" in r:
            refit = " / ".join(f"{r['refit'][k]:.3f}" for k in METRICS)
            gap = f"{max(abs(r['grown'][k] - r['refit'][k]) for k in METRICS):.4f}"
            floors = [f"{r[key] / r['refit_seconds']:.2f}" if key in r else "–"
                      for key in ("grown_extract_seconds", "alone_seconds")]
            timing = (f"{seconds(r, 'grown')} | {seconds(r, 'refit')} | "
                      f"{r['grown_seconds'] / r['refit_seconds']:.2f} | {' | '.join(floors)}")
        else:
            refit, gap, timing = "–", "–", f"(fit {seconds(r, 'grown')}) | – | – | – | –"
        lines.append(f"| {r['dataset']} | {r['method']} | {params} | {r['step']} | {r['images']} | {timing} | "
                     f"{grown} | {refit} | {gap} | {r['threads']} |")
    (out / "update.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def seconds(row: dict, model: str) -> str:
    """``model``'s (grown or refit) CPU seconds, and its extraction's in brackets when measured."""
    extraction = row.get(f"{model}_extract_seconds")
    return f"{row[f'{model}_seconds']:.1f}" + ("" if extraction is None else f" ({extraction:.1f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, action="append", required=True, help="dataset folder (repeatable)")
    parser.add_argument("--method", default="patchcore")
    parser.add_argument("--param", action="append", default=[], help="method parameter KEY=VALUE")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, help="torch threads (default: all cores; CPU seconds add them up)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    for root in args.data:
        grow(root, args.method, dict(parse_param(p) for p in args.param), args.image_size, args.batch_size,
             args.out)
    table(args.out)


if __name__ == "__main__":
    main()
