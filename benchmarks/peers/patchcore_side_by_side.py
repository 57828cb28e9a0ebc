#!/usr/bin/env python
"""lineguard's PatchCore maps and anomalib's, each scored against both ground-truth conventions.

The anchor's pixel figures are not measured on lineguard's ground truth: anomalib resizes a mask with
torchvision's ``Resize`` on a ``Mask`` (nearest neighbour), lineguard with antialiased bilinear interpolation
kept at > 0.5 (``evaluation.load_masks``); on bottle 9,864 of about 314,000 defect pixels differ. So this
script scores both map sets against both mask sets, with lineguard's metrics (anomalib's own AUROC and AUPRO
classes give the same figures on the same maps and masks, to six decimals on bottle). Both tools' coresets
depend on a seed, so it takes several anomalib runs (one ``--peer`` each) and is run once per lineguard seed.

    # 1. with the anchor venv's python (../shared/anchors/anomalib/setup_venv.sh), once per seed:
    python benchmarks/peers/anomalib_fast_kcenter.py --model patchcore --dataset bottle --seed 0 \\
        --out /tmp/pc_bottle_0.json --maps-out /tmp/pc_bottle_0.npz
    # 2. here: fits lineguard's PatchCore (Lite0, 256 px, --seed) and writes the table's JSON
    python benchmarks/peers/patchcore_side_by_side.py run ../shared/datasets/mvtec_ad/bottle --seed 0 \\
        --peer /tmp/pc_bottle_0.json /tmp/pc_bottle_0.npz --peer ... \\
        --out benchmarks/results/memory_bank/anomalib/side_by_side_bottle_0.json
    # 3. every seed of both tools, and their means, as a markdown table
    python benchmarks/peers/patchcore_side_by_side.py table \\
        benchmarks/results/memory_bank/anomalib/side_by_side_bottle_*.json
"""

import argparse
import csv
import json
import statistics
from pathlib import Path

import numpy as np
import torch

from lineguard.evaluation import evaluate_detector
from lineguard.io.datasets import load_dataset
from lineguard.methods import create
from lineguard.metrics import aupro, pixel_auroc

SIZE = 256  # the anchor's image size, at which both tools' maps and masks are compared


def side_by_side(args: argparse.Namespace) -> None:
    result = evaluate_detector(create("patchcore", backbone="effnet-lite0", seed=args.seed),
                               load_dataset(args.dataset), image_size=SIZE)
    maps = {f"lineguard seed {args.seed}": result.prediction.maps}
    masks = {"lineguard": result.masks}
    image_auroc = {f"lineguard seed {args.seed}": result.metrics["image_auroc"]}
    for run, peer_maps in args.peer:
        peer = json.loads(run.read_text())
        name = f"anomalib seed {peer['seed']}"
        with open(run.with_suffix(".scores.csv")) as f:
            position = {row["image"]: i for i, row in enumerate(csv.DictReader(f))}
        order = [position[f"{s.path.parent.name}/{s.path.name}"] for s in result.samples]
        arrays = np.load(peer_maps)
        maps[name] = torch.from_numpy(arrays["maps"]).reshape(len(position), SIZE, SIZE)[order]
        masks.setdefault("anomalib", torch.from_numpy(arrays["masks"]).reshape(len(position), SIZE, SIZE)[order])
        image_auroc[name] = peer["anomalib_metrics"]["image_AUROC"]
    rows = {f"{m} maps, {g} masks": {"pixel_auroc": pixel_auroc(masks[g], maps[m]), "aupro": aupro(masks[g], maps[m])}
            for m in maps for g in masks}
    out = {"dataset": str(args.dataset), "seed": args.seed, "lineguard_metrics": result.metrics,
           "image_auroc": image_auroc,
           "mask_pixels_differing": int((masks["anomalib"] ^ masks["lineguard"]).sum()), "rows": rows}
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    for name, row in rows.items():
        print(f"{name:45s} pixel AUROC {row['pixel_auroc']:.5f}  AUPRO {row['aupro']:.5f}")


def table(args: argparse.Namespace) -> None:
    """One row per run of either tool (anomalib's runs recur in every file: each is read once), then each
    tool's mean; pixel metrics on lineguard's masks, anomalib's in brackets."""
    runs: dict[str, list[float]] = {}
    for path in args.files:
        result = json.loads(path.read_text())
        for name, image_auroc in result["image_auroc"].items():
            own, peer = result["rows"][f"{name} maps, lineguard masks"], result["rows"][f"{name} maps, anomalib masks"]
            runs[name] = [image_auroc, own["pixel_auroc"], peer["pixel_auroc"], own["aupro"], peer["aupro"]]
    means = {f"**{tool} mean (n={len(rows)})**": [statistics.fmean(column) for column in zip(*rows, strict=True)]
             for tool in ("lineguard", "anomalib") if (rows := [v for k, v in runs.items() if k.startswith(tool)])}
    print("| run | image AUROC | pixel AUROC | AUPRO |\n|---|---|---|---|")
    for name, (image, pixel, pixel_peer, pro, pro_peer) in (sorted(runs.items()) + list(means.items())):
        print(f"| {name} | {image:.5f} | {pixel:.5f} ({pixel_peer:.5f}) | {pro:.5f} ({pro_peer:.5f}) |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(required=True)
    run = commands.add_parser("run", help="fit lineguard, score its maps and anomalib's on both mask sets")
    run.add_argument("dataset", type=Path, help="the category folder both runs used")
    run.add_argument("--peer", nargs=2, type=Path, action="append", required=True, metavar=("JSON", "MAPS"),
                     help="an anomalib run: --out and --maps-out of anomalib_fast_kcenter.py (repeatable)")
    run.add_argument("--out", type=Path, required=True)
    run.add_argument("--seed", type=int, default=0)
    run.set_defaults(command=side_by_side)
    summary = commands.add_parser("table", help="a markdown table of the JSON files of one dataset")
    summary.add_argument("files", type=Path, nargs="+")
    summary.set_defaults(command=table)
    args = parser.parse_args()
    args.command(args)


if __name__ == "__main__":
    main()
