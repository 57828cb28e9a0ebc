#!/usr/bin/env python
"""Zero-shot detection from learned prompts, and the cost of the CLIP methods at the papers' sizes.

Prompt learning on effnet-lite0 (256 px): learned on the labelled test split of one or two datasets, scored
zero-shot on another (no image of its category seen), beside ``testbatch`` (zero data as well) on the same
set. Each cell runs in its own process (peak memory its own) and appends a row to ``results.jsonl``;
``table`` writes ``results.md``. The CLIP methods have no pretrained weights here, so their rows give cost
only: seconds per image and peak memory at the papers' sizes, random weights.

    python benchmarks/zero_shot.py transfer --train MTD/magnetic_tile --test MVTEC/bottle --out OUT
    python benchmarks/zero_shot.py transfer --train MVTEC/bottle --test MTD/magnetic_tile --out OUT
    python benchmarks/zero_shot.py posed POSED                        # writes the posed synthetic set
    python benchmarks/zero_shot.py transfer --train MVTEC/bottle --train MTD/magnetic_tile --test POSED --out OUT
    python benchmarks/zero_shot.py testbatch --test POSED --out OUT   # (bottle, Magnetic Tile: test_batch/grid.md)
    python benchmarks/zero_shot.py clip --method anomalyclip --out OUT  # also winclip, winclip+
    python benchmarks/zero_shot.py table --out OUT

Threads: 1 (``torch.set_num_threads``), as every benchmark here; the machine is shared, so seconds are
contended and recorded with the load average at the start.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from lineguard.evaluation import evaluate_detector, peak_rss_mb
from lineguard.io.datasets import load_dataset
from lineguard.methods import create
from lineguard.prompts.training import labelled_images, train_prompts
from lineguard.synthetic import write_mvtec_layout

SIZE = 256
EPOCHS, LR, BATCH = 15, 1e-3, 8  # AnomalyCLIP's training recipe
CLIP_SIZES = {"anomalyclip": ("clip-vit-l14-336", 518), "winclip": ("clip-vit-b16-plus-240", 240),
              "winclip+": ("clip-vit-b16-plus-240", 240)}
POSED = {"kind": "posed", "size": SIZE, "n_train": 1, "n_test_good": 60, "n_test_defective": 60, "seed": 0}


def context() -> dict:
    return {"threads": torch.get_num_threads(), "load_average": round(os.getloadavg()[0], 2)}


def append(out: Path, row: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with (out / "results.jsonl").open("a") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps(row))


def metrics_of(result) -> dict:
    return {**{k: round(result.metrics[k], 4) for k in ("image_auroc", "pixel_auroc", "aupro")},
            "images_per_second": round(result.images_per_second, 2), "n_test": len(result.samples)}


def transfer(args: argparse.Namespace) -> None:
    start = context()
    detector = create("prompts", backbone="effnet-lite0", image_size=SIZE)
    data, _ = labelled_images([load_dataset(folder) for folder in args.train], SIZE)
    run = train_prompts(detector, data, epochs=EPOCHS, lr=LR, batch_size=BATCH, local_weight=args.local_weight,
                        seed=args.seed)
    result = evaluate_detector(detector, load_dataset(args.test), image_size=SIZE)
    append(args.out, {"cell": "prompts", "train": [Path(t).name for t in args.train], "test": Path(args.test).name,
                      "train_images": len(data), "local_weight": args.local_weight, "seed": args.seed,
                      "train_seconds": round(run.seconds, 1), "losses": [round(x, 4) for x in run.losses],
                      **metrics_of(result), "peak_rss_mb": round(peak_rss_mb()), **start})


def testbatch(args: argparse.Namespace) -> None:
    start = context()
    result = evaluate_detector(create("testbatch", image_size=SIZE), load_dataset(args.test), image_size=SIZE)
    append(args.out, {"cell": "testbatch", "train": [], "test": Path(args.test).name, **metrics_of(result),
                      "peak_rss_mb": round(peak_rss_mb()), **start})


def clip_cost(args: argparse.Namespace) -> None:
    """Seconds per image of ``predict`` (after one warm-up batch) and peak memory, random weights."""
    start = context()
    backbone, size = CLIP_SIZES[args.method]
    detector = create(args.method, backbone=backbone, weights="random", image_size=size, batch_size=args.batch)
    images = torch.rand(args.images, 3, size, size, generator=torch.Generator().manual_seed(0))
    if args.method == "anomalyclip":  # untrained prompts cost what trained ones do
        detector.keep_prompts(detector.new_learner(), {"note": "untrained, for timing"})
    if detector.uses_normal_images:
        detector.fit(images[:4])  # K = 4 references
    detector.predict(images[:args.batch])  # warm-up: weights built, kernels chosen
    begin = time.perf_counter()
    detector.predict(images)
    seconds = (time.perf_counter() - begin) / args.images
    append(args.out, {"cell": "clip cost", "method": args.method, "backbone": backbone, "image_size": size,
                      "seconds_per_image": round(seconds, 3), "peak_rss_mb": round(peak_rss_mb()), **start})


def posed(args: argparse.Namespace) -> None:
    print(write_mvtec_layout(args.folder, **POSED))


def table(args: argparse.Namespace) -> None:
    rows = [json.loads(line) for line in (args.out / "results.jsonl").read_text().splitlines()]
    lines = ["| trained on | scored zero-shot | method | image AUROC | pixel AUROC | AUPRO | training s | images/s | "
             "peak RSS MB | load avg |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in (r for r in rows if r["cell"] in ("prompts", "testbatch")):
        method = "prompts (effnet-lite0)" if r["cell"] == "prompts" else "testbatch (the batch itself)"
        trained = " + ".join(r["train"]) or "–"
        seconds = r.get("train_seconds", "–")
        lines.append(f"| {trained} | {r['test']} | {method} | {r['image_auroc']:.3f} | {r['pixel_auroc']:.3f} | "
                     f"{r['aupro']:.3f} | {seconds} | {r['images_per_second']} | {r['peak_rss_mb']} | "
                     f"{r['load_average']} |")
    cost = [r for r in rows if r["cell"] == "clip cost"]
    if cost:
        lines += ["", "| method | backbone (random weights) | input px | s / image | peak RSS MB | load avg |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {r['method']} | {r['backbone']} | {r['image_size']} | {r['seconds_per_image']} | "
                  f"{r['peak_rss_mb']} | {r['load_average']} |" for r in cost]
    text = f"torch threads: {rows[0]['threads']}\n\n" + "\n".join(lines) + "\n"
    (args.out / "results.md").write_text(text)
    print(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="step", required=True)
    for name in ("transfer", "testbatch", "clip", "table"):
        p = sub.add_parser(name)
        p.add_argument("--out", type=Path, required=True)
        if name in ("transfer", "testbatch"):
            p.add_argument("--test", type=Path, required=True)
        if name == "transfer":
            p.add_argument("--train", type=Path, action="append", required=True)
            p.add_argument("--local-weight", type=float, default=1.0)
            p.add_argument("--seed", type=int, default=0)
        if name == "clip":
            p.add_argument("--method", choices=sorted(CLIP_SIZES), required=True)
            p.add_argument("--images", type=int, default=8)
            p.add_argument("--batch", type=int, default=4)
    sub.add_parser("posed").add_argument("folder", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    {"transfer": transfer, "testbatch": testbatch, "clip": clip_cost, "posed": posed, "table": table}[args.step](args)


if __name__ == "__main__":
    main()
