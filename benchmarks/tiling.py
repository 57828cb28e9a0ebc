"""Tiling at native resolution against today's resize to the working size, measured at the original resolution.

Two parts, each one command, each configuration in its own process (so peak RSS is its own):

* ``synthetic``: woven sheets of 768 × 1536 px (``lineguard.synthetic.make_sheets``) whose flaws cover
  0.05–0.5 % of the frame and only disturb the weave, 8 good sheets to fit on, 16 good and 16 flawed to test;
  written once under ``--work`` in the MVTec layout. Target (issue 20): tiled image AUROC ≥ 0.95 where the
  resize to 256 px is ≤ 0.75.
* ``dataset --data FOLDER``: a real dataset (bottle: 900 px) tiled against resized.
* ``aspect --data FOLDER [--shots K]``: frames of many shapes (Magnetic Tile) letterboxed, their aspect ratio
  kept (``--keep-aspect``), against today's squash to a square; ``--shots`` fits both on the same seeded subset of
  the good training images.

Columns: image AUROC, pixel AUROC and AUPRO on maps at each image's original resolution (a resized model's
maps are resized to it, bilinear; images of different sizes are pooled pixel by pixel), the recall of defective
images at a 5 % false-alarm rate of the good test
images (threshold: their 95th percentile score), fit seconds, images/s of predict (decoding included) and the
process's peak RSS.

    python benchmarks/tiling.py synthetic --threads 1
    python benchmarks/tiling.py dataset --data path/to/mvtec_ad/bottle --threads 1
    python benchmarks/tiling.py aspect --data path/to/mtd/magnetic_tile --shots 250 --threads 1
    python benchmarks/tiling.py one --data FOLDER --tile 256 --overlap 32     # one row (what the parts run)
    python benchmarks/tiling.py one --data path/to/bottle --tile 256 --param coreset_ratio=0.01   # bottle, 900 px
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from lineguard import create
from lineguard.cli.options import parse_param
from lineguard.evaluation import evaluate_detector, masks_for
from lineguard.io.datasets import load_dataset
from lineguard.io.images import image_size as image_size_of
from lineguard.letterbox import letterboxed
from lineguard.metrics import evaluate
from lineguard.scoring.maps import resize_maps
from lineguard.synthetic import make_sheets
from lineguard.tiling import tiled

OUT = Path(__file__).parent / "results" / "tiling"
FALSE_ALARM_RATE = 0.05
METRICS = ("image_auroc", "pixel_auroc", "aupro")


def write_sheets(root: Path) -> Path:
    """The synthetic set in the MVTec layout (written once)."""
    if (root / "test").is_dir():
        return root
    splits = {"train": make_sheets(8, 0, seed=0), "test": make_sheets(16, 16, seed=1)}
    for split, items in splits.items():
        for i, item in enumerate(items):
            folder = root / split / item.defect
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(item.image).save(folder / f"{i:03d}.png")
            if item.defect != "good":
                (root / "ground_truth" / item.defect).mkdir(parents=True, exist_ok=True)
                Image.fromarray(item.mask.astype(np.uint8) * 255).save(
                    root / "ground_truth" / item.defect / f"{i:03d}_mask.png")
    return root


def mode_name(tile: int | None, overlap: int, image_size: int, keep_aspect: bool, shots: int | None,
              params: dict | None = None) -> str:
    mode = (f"tiles {tile} px, overlap {overlap}" if tile else
            f"{'letterboxed' if keep_aspect else 'resized'} to {image_size} px")
    mode += "".join(f", {key}={value}" for key, value in (params or {}).items())
    return mode + (f", {shots} good train images (seed 0)" if shots else "")


def one(data: Path, method: str, tile: int | None, overlap: int, image_size: int, out: Path, keep_aspect: bool = False,
        shots: int | None = None, params: dict | None = None) -> None:
    """Fit and score one configuration; append its row (none when its row is on file)."""
    mode = mode_name(tile, overlap, image_size, keep_aspect, shots, params)
    path = out / "tiling.jsonl"
    done = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    if any((r["dataset"], r["method"], r["mode"]) == (data.name, method, mode) for r in done):
        return
    dataset = load_dataset(data)
    detector = letterboxed(tiled(create(method, image_size=image_size, **(params or {})), tile, overlap), keep_aspect)
    result = evaluate_detector(detector, dataset, image_size=detector.image_size, shots=shots)
    labels = torch.tensor([s.label for s in result.samples])
    originals = [image_size_of(s.path) for s in result.samples]  # (H, W) each
    maps = [resize_maps(m[None], shape)[0] for m, shape in zip(result.prediction.maps, originals, strict=True)]
    metrics = evaluate(labels, result.prediction.scores, masks_for(result.samples, maps, dataset.mask_threshold),
                       maps)
    scores = result.prediction.scores
    threshold = torch.quantile(scores[labels == 0], 1 - FALSE_ALARM_RATE)
    shapes = sorted(set(originals))
    row = {"dataset": dataset.name, "method": method, "mode": mode,
           "original": list(shapes[0]) if len(shapes) == 1 else f"{len(shapes)} sizes",
           "threads": torch.get_num_threads(),
           **{k: round(float(metrics[k]), 4) for k in METRICS},
           f"recall_at_{FALSE_ALARM_RATE:g}_false_alarms": round(float((scores[labels == 1] > threshold).float()
                                                                       .mean()), 4),
           "fit_seconds": round(result.fit_seconds, 1), "images_per_second": round(result.images_per_second, 3),
           "peak_rss_mb": round(result.peak_rss_mb)}
    print(json.dumps(row), flush=True)
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


def compare(data: Path, method: str, image_size: int, threads: int | None, out: Path, variant: list[str],
            shots: int | None = None) -> None:
    """The resized configuration and ``variant`` (tiled, or letterboxed), each in its own process."""
    base = [sys.executable, __file__, "one", "--data", str(data), "--method", method, "--image-size",
            str(image_size), "--out", str(out)] + (["--threads", str(threads)] if threads else []) + \
        (["--shots", str(shots)] if shots else [])
    subprocess.run(base, check=True)
    subprocess.run([*base, *variant], check=True)
    table(out)


def table(out: Path) -> None:
    rows = [json.loads(line) for line in (out / "tiling.jsonl").read_text().splitlines()]
    recall = f"recall_at_{FALSE_ALARM_RATE:g}_false_alarms"
    lines = ["Metrics at the images' original resolution; recall of defective images at a 5 % false-alarm rate "
             "of the good test images.", "",
             "| dataset | original H × W | method | mode | image AUROC | pixel AUROC | AUPRO | recall @ 5 % FA | "
             "fit s | images/s | peak RSS MB | threads |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        original = r["original"] if isinstance(r["original"], str) else " × ".join(map(str, r["original"]))
        lines.append(f"| {r['dataset']} | {original} | {r['method']} | {r['mode']} | "
                     f"{r['image_auroc']:.3f} | {r['pixel_auroc']:.3f} | {r['aupro']:.3f} | {r[recall]:.3f} | "
                     f"{r['fit_seconds']:.1f} | {r['images_per_second']:.2f} | {r['peak_rss_mb']} | "
                     f"{r['threads']} |")
    (out / "tiling.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("part", choices=["synthetic", "dataset", "aspect", "one"])
    parser.add_argument("--threads", type=int, help="torch threads (default: all cores)")
    parser.add_argument("--data", type=Path, help="dataset folder (dataset, one)")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "lineguard-sheets",
                        help="where the synthetic set is written")
    parser.add_argument("--method", default="patchcore")
    parser.add_argument("--tile", type=int, default=None)
    parser.add_argument("--overlap", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=256, help="working size (of each tile when tiled)")
    parser.add_argument("--keep-aspect", action="store_true", help="letterbox each image (one)")
    parser.add_argument("--shots", type=int, help="fit on this many good training images, drawn with seed 0")
    parser.add_argument("--param", action="append", default=[], help="method parameter KEY=VALUE (one)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.part == "one":
        one(args.data, args.method, args.tile, args.overlap if args.tile else 0, args.image_size, args.out,
            args.keep_aspect, args.shots, dict(map(parse_param, args.param)))
        return
    data = write_sheets(args.work) if args.part == "synthetic" else args.data
    if data is None:
        parser.error(f"{args.part} needs --data")
    variant = ["--keep-aspect"] if args.part == "aspect" else ["--tile", str(args.tile or 256), "--overlap",
                                                               str(args.overlap)]
    compare(data, args.method, args.image_size, args.threads, args.out, variant, args.shots)


if __name__ == "__main__":
    main()
