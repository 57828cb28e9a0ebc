"""Memory-bank methods (PatchCore, PaDiM, SPADE, few-shot, FastRecon) on MVTec AD bottle and Magnetic Tile.

Three parts, each one command:

* ``grid``: full-shot PatchCore, PaDiM and SPADE, each a ``lineguard evaluate`` in its own process
  (``lineguard.benchmarking``: resumable, ``results.jsonl`` + ``results.md`` in the output folder). Columns:
  image AUROC, pixel AUROC, AUPRO, fit seconds, images/s (end to end: decoding included) and peak RSS.
* ``kshot``: few-shot, FastRecon and PatchCore fitted on K = 1, 2, 4, 8 good images, three support draws each
  (seeds 0, 1, 2), in one process (``kshot.jsonl`` + ``kshot.md``, resumable). Each test set is decoded once
  and each test batch goes through the backbone once per backbone; every run reuses those features (the same
  tensors it would compute itself), so a row costs its own fit (support features included) and scoring.
  Columns: the accuracies (mean ± std over the draws), fit seconds, and scoring images/s (backbone excluded).
* ``throughput``: in one process, on test images decoded once beforehand, the backbone's own forward
  throughput (the levels PatchCore uses) against PatchCore's whole ``predict`` (backbone, neighbourhood
  aggregation, search, re-weighting, maps). The target is predict ≥ 0.7 × backbone.

    D="--data path/to/mvtec_ad/bottle --data path/to/mtd/magnetic_tile"    # every part takes the folders
    python benchmarks/memory_bank.py grid $D
    python benchmarks/memory_bank.py kshot $D --backbone effnet-lite0 --backbone effnet-lite2 --threads 1
    python benchmarks/memory_bank.py kshot $D --shots 4                  # one K only
    python benchmarks/memory_bank.py kshot $D --method fewshot --param brightness_views=2   # one variant
    python benchmarks/memory_bank.py throughput --data path/to/mvtec_ad/bottle
    python benchmarks/memory_bank.py grid $D --param device=cuda      # on a GPU (rows keep the parameter)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from functools import cache
from pathlib import Path

import torch
from torch import Tensor

from lineguard import benchmarking
from lineguard.cli import parse_param, run_subprocess
from lineguard.evaluation import load_masks, select_support
from lineguard.features.extractor import PatchExtractor
from lineguard.io.batches import ImageBatches
from lineguard.io.datasets import load_dataset
from lineguard.methods import Detector, create
from lineguard.metrics import evaluate
from lineguard.progress import track

OUT = Path(__file__).parent / "results" / "memory_bank"
FULL_SHOT = ["patchcore", "padim", "spade"]
FEW_SHOT = ["fewshot", "fastrecon", "patchcore"]
K_SHOT = [1, 2, 4, 8]
SEEDS = [0, 1, 2]
SIZE = 256


def grid(data: list[Path], backbones: list[str], out: Path, params: list[str]) -> None:
    runs = benchmarking.plan(data=data, methods=FULL_SHOT, backbones=backbones, shots=[None], seeds=[0],
                             params=params, image_size=None)
    benchmarking.run_all(runs, out, runner=run_subprocess)
    every = benchmarking.read_rows(out / "results.jsonl").values()  # every row on file, not only this call's
    print(benchmarking.write_table(list(every), out / "results.md"))


def head_digest(head: torch.nn.Module | None) -> str | None:
    """Identifies a trained feature head by its weights, so runs loading the same encoder share features."""
    if head is None:
        return None
    digest = hashlib.sha1()
    for tensor in head.state_dict().values():
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class SharedFeatures(PatchExtractor):
    """A detector's extractor that looks each batch up in ``store`` (by extractor settings and the batch's
    bytes) before computing it, so runs on one test set pay for the backbone once."""

    def __init__(self, extractor: PatchExtractor, store: dict[tuple, Tensor]):
        self.__dict__.update(extractor.__dict__)
        self.store = store
        self.head_key = head_digest(self.head)  # the head is fixed: its digest once, not per batch

    def __call__(self, images: Tensor) -> Tensor:
        digest = hashlib.sha1(images.contiguous().numpy().tobytes()).hexdigest()
        key = (self.backbone_name, tuple(self.levels or ()), self.patch_size, self.image_size, self.head_key, digest)
        if key not in self.store:
            self.store[key] = super().__call__(images)
        return self.store[key]


def share_features(detector: Detector, store: dict[tuple, Tensor]) -> Detector:
    detector._extractor = SharedFeatures(detector.extractor, store)
    return detector


@cache
def test_set(root: Path) -> tuple[list[Tensor], Tensor, Tensor, dict[tuple, Tensor]]:
    """A dataset's test split decoded once: batches, labels, masks, and the store their features go in."""
    dataset = load_dataset(root)
    batches = ImageBatches([s.path for s in dataset.test], size=SIZE)
    test = list(batches)
    by_path = {s.path: s for s in dataset.test}
    samples = [by_path[p] for p in batches.loaded]
    labels = torch.tensor([s.label for s in samples])
    return test, labels, load_masks(samples, SIZE, dataset.mask_threshold), {}


def kshot(data: list[Path], backbones: list[str], out: Path, shots: list[int], methods: list[str],
          params: list[str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    results = out / "kshot.jsonl"
    done = benchmarking.read_rows(results)
    for root in data:
        dataset = load_dataset(root)
        runs = benchmarking.plan(data=[root], methods=methods, backbones=backbones, shots=shots, seeds=SEEDS,
                                 params=params, image_size=None)
        todo = [run for run in runs if run.key not in done]
        if todo:
            test, labels, masks, store = test_set(root)
        for run in track(todo, f"{dataset.name}: few-shot runs"):
            detector = create(run.method, backbone=run.backbone, seed=run.seed, **dict(map(parse_param, run.params)))
            start = time.perf_counter()
            detector.fit(ImageBatches(select_support(dataset, run.shots, run.seed), size=SIZE))
            fit_seconds = time.perf_counter() - start
            share_features(detector, store)  # after the fit: only test features are shared
            detector.predict(test[:1])  # the first call builds search indexes and fills the feature store
            start = time.perf_counter()
            prediction = detector.predict(test)
            score_seconds = time.perf_counter() - start
            metrics = evaluate(labels, prediction.scores, masks, prediction.maps)
            row = {"run": run.key, **{k: float(v) for k, v in metrics.items()}, "fit_seconds": round(fit_seconds, 2),
                   "score_images_per_second": round(len(labels) / score_seconds, 2),
                   "threads": torch.get_num_threads()}
            with open(results, "a") as f:
                f.write(json.dumps(row) + "\n")
            done[run.key] = row
    columns = {key: name for key, name in benchmarking.COLUMNS.items() if key in benchmarking.ACCURACY}
    columns |= {"fit_seconds": "fit s", "score_images_per_second": "scoring images/s"}
    print(benchmarking.write_table(list(done.values()), out / "kshot.md", columns=columns))  # every row on file


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
    parser.add_argument("part", choices=["grid", "kshot", "throughput"])
    parser.add_argument("--data", type=Path, action="append", required=True, help="dataset folder (repeatable)")
    parser.add_argument("--backbone", action="append", help="backbone name (repeatable; default effnet-lite0)")
    parser.add_argument("--shots", type=int, action="append", help="K of the kshot rows (repeatable; default "
                                                                       "1, 2, 4, 8)")
    parser.add_argument("--method", action="append", help="kshot methods (repeatable; default: fewshot, "
                                                          "fastrecon, patchcore)")
    parser.add_argument("--param", action="append", default=[], help="method parameter KEY=VALUE, e.g. device=cuda "
                                                                      "(repeatable)")
    parser.add_argument("--threads", type=int, help="torch threads (default: all cores)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(args.threads)  # for subprocesses
        torch.set_num_threads(args.threads)
    data, backbones = args.data, args.backbone or ["effnet-lite0"]
    if args.part == "grid":
        grid(data, backbones, args.out, args.param)
    elif args.part == "kshot":
        kshot(data, backbones, args.out, args.shots or K_SHOT, args.method or FEW_SHOT, args.param)
    else:
        throughput(data, backbones, args.out)


if __name__ == "__main__":
    main()
