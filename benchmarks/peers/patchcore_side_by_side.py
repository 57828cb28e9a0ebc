#!/usr/bin/env python
"""lineguard's PatchCore maps and anomalib's, each scored against both ground-truth conventions.

The anchor's pixel figures are not measured on lineguard's ground truth: anomalib resizes a mask with
torchvision's ``Resize`` on a ``Mask`` (nearest neighbour), lineguard with antialiased bilinear interpolation
kept at > 0.5 (``evaluation.load_masks``); on bottle 9,864 of about 314,000 defect pixels differ. So this
script scores both map sets against both mask sets, with lineguard's metrics (anomalib's own AUROC and AUPRO
classes give the same figures on the same maps and masks, to six decimals on bottle).

    # 1. with the anchor venv's python (../shared/anchors/anomalib/setup_venv.sh):
    python benchmarks/peers/anomalib_fast_kcenter.py --model patchcore --dataset bottle \\
        --out /tmp/pc_bottle.json --maps-out /tmp/pc_bottle.npz
    # 2. here: fits lineguard's PatchCore (Lite0, 256 px, seed 0) and writes the table's JSON
    python benchmarks/peers/patchcore_side_by_side.py ../shared/datasets/mvtec_ad/bottle /tmp/pc_bottle.npz \\
        /tmp/pc_bottle.scores.csv --out benchmarks/results/memory_bank/anomalib/side_by_side_bottle.json
"""

import argparse
import csv
import json
from pathlib import Path

import numpy as np
import torch

from lineguard.evaluation import evaluate_detector
from lineguard.io.datasets import load_dataset
from lineguard.methods import create
from lineguard.metrics import aupro, pixel_auroc

SIZE = 256  # the anchor's image size, at which both tools' maps and masks are compared


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", type=Path, help="the category folder both runs used")
    parser.add_argument("anomalib_maps", type=Path, help="--maps-out of anomalib_fast_kcenter.py")
    parser.add_argument("anomalib_scores", type=Path, help="its .scores.csv (the order of its maps)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    result = evaluate_detector(create("patchcore", backbone="effnet-lite0", seed=args.seed),
                               load_dataset(args.dataset), image_size=SIZE)
    with open(args.anomalib_scores) as f:
        position = {row["image"]: i for i, row in enumerate(csv.DictReader(f))}
    order = [position[f"{s.path.parent.name}/{s.path.name}"] for s in result.samples]
    peer = np.load(args.anomalib_maps)
    maps = {"anomalib": torch.from_numpy(peer["maps"]).reshape(len(position), SIZE, SIZE)[order],
            "lineguard": result.prediction.maps}
    masks = {"anomalib": torch.from_numpy(peer["masks"]).reshape(len(position), SIZE, SIZE)[order],
             "lineguard": result.masks}
    rows = {f"{m} maps, {g} masks": {"pixel_auroc": pixel_auroc(masks[g], maps[m]), "aupro": aupro(masks[g], maps[m])}
            for m in maps for g in masks}
    out = {"dataset": str(args.dataset), "seed": args.seed, "lineguard_metrics": result.metrics,
           "mask_pixels_differing": int((masks["anomalib"] ^ masks["lineguard"]).sum()), "rows": rows}
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    for name, row in rows.items():
        print(f"{name:32s} pixel AUROC {row['pixel_auroc']:.5f}  AUPRO {row['aupro']:.5f}")


if __name__ == "__main__":
    main()
