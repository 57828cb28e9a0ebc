"""Memory-bank methods (PatchCore, PaDiM, SPADE) on MVTec AD bottle and Magnetic Tile.

Two parts, each one command:

* ``grid``: ``lineguard benchmark`` runs (one process per run, resumable, ``results.jsonl`` + ``results.md``
  in the output folder): full-shot PatchCore, PaDiM and SPADE, and PatchCore fitted on K = 1, 2, 4, 8 good
  images (three support draws each). Columns: image AUROC, pixel AUROC, AUPRO, fit seconds, images/s (end
  to end: decoding included) and peak RSS.
* ``throughput``: in one process, on test images decoded once beforehand, the backbone's own forward
  throughput (the levels PatchCore uses) against PatchCore's whole ``predict`` (backbone, neighbourhood
  aggregation, search, re-weighting, maps). The target is predict ≥ 0.7 × backbone.

    python benchmarks/memory_bank.py grid
    python benchmarks/memory_bank.py grid --backbone effnet-lite0 --backbone effnet-lite2
    python benchmarks/memory_bank.py throughput
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from lineguard import benchmarking
from lineguard.cli import run_subprocess
from lineguard.evaluation import select_support
from lineguard.io.batches import ImageBatches
from lineguard.io.datasets import load_dataset
from lineguard.methods import create

DATA = [Path("/work/shared/datasets/mvtec_ad/bottle"), Path("/work/shared/datasets/mtd/magnetic_tile")]
OUT = Path(__file__).parent / "results" / "memory_bank"
FULL_SHOT = ["patchcore", "padim", "spade"]
K_SHOT = [1, 2, 4, 8]
SEEDS = [0, 1, 2]


def grid(data: list[Path], backbones: list[str], out: Path) -> None:
    runs = (benchmarking.plan(data=data, methods=FULL_SHOT, backbones=backbones, shots=[None], seeds=[0],
                              params=[], image_size=None)
            + benchmarking.plan(data=data, methods=["patchcore"], backbones=backbones, shots=K_SHOT, seeds=SEEDS,
                                params=[], image_size=None))
    rows = benchmarking.run_all(runs, out, runner=run_subprocess)
    print(benchmarking.write_table(rows, out / "results.md"))


def images_per_second(batches: list[torch.Tensor], work) -> float:
    start = time.perf_counter()
    for batch in batches:
        work(batch)
    return sum(len(b) for b in batches) / (time.perf_counter() - start)


def throughput(data: list[Path], backbones: list[str], out: Path, batch_size: int = 16) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for root in data:
        dataset = load_dataset(root)
        for backbone in backbones:
            detector = create("patchcore", backbone=backbone)
            detector.fit(ImageBatches(select_support(dataset, None, 0), size=detector.image_size,
                                      batch_size=batch_size))
            test = list(ImageBatches([s.path for s in dataset.test], size=detector.image_size,
                                     batch_size=batch_size))
            detector.predict(test[0])  # warm-up: builds the search index
            backbone_rate = images_per_second(test, detector.extractor.levels_of)
            predict_rate = images_per_second(test, detector.predict)
            row = {"data": dataset.name, "backbone": backbone, "n_images": sum(len(b) for b in test),
                   "bank_rows": len(detector.memory_bank_), "search": detector._index.backend,
                   "threads": torch.get_num_threads(), "backbone_images_per_s": round(backbone_rate, 2),
                   "predict_images_per_s": round(predict_rate, 2), "ratio": round(predict_rate / backbone_rate, 3)}
            print(json.dumps(row), flush=True)
            with open(out / "throughput.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=["grid", "throughput"])
    parser.add_argument("--data", type=Path, action="append", help="dataset folder (repeatable)")
    parser.add_argument("--backbone", action="append", help="backbone name (repeatable; default effnet-lite0)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    data, backbones = args.data or DATA, args.backbone or ["effnet-lite0"]
    (grid if args.part == "grid" else throughput)(data, backbones, args.out)


if __name__ == "__main__":
    main()
