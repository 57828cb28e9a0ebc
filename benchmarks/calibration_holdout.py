"""False alarms of `fit`'s calibration rules against the number of held-out good images.

`lineguard fit` holds out a share of the good training images and sets the threshold from their scores. With
few images the threshold is itself a noisy estimate, and a threshold set too low rejects good parts. This
measures how often, per rule and per number of held-out images n:

1. For each dataset and seed, PatchCore (effnet-lite0, 256 px, defaults) is fitted on ``--fit`` random good
   training images; every other good image (the rest of train/good and test/good, at most ``--pool``) and up
   to ``--defects`` defective test images are scored once. Scores land in
   ``results/calibration/scores.jsonl`` (a rerun reuses them).
2. For each n, ``--draws`` random sets of n of the good images are the held-out calibration set; each rule's
   threshold is set on them and its false-alarm rate measured on the remaining good images (a good image
   is a false alarm when its score is at or above the threshold, as `predict` decides), its miss rate on the
   defective ones.

The table gives, per rule and n, the mean false-alarm rate over every seed and draw, the share of
calibrations whose false-alarm rate exceeds 5 % (how often a line calibrated this way rejects one good part
in twenty or more), and the mean share of defective parts passed: what the safer threshold costs.

    OMP_NUM_THREADS=1 python benchmarks/calibration_holdout.py --data path/to/mvtec_ad/bottle \\
        --data path/to/mtd/magnetic_tile
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import numpy as np
import torch

import lineguard
from lineguard.io.batches import ImageBatches
from lineguard.io.datasets import load_dataset
from lineguard.scoring.threshold import calibrate

RESULTS = Path(__file__).resolve().parent / "results" / "calibration"
RULES = {"t3sigma": {"rule": "t3sigma"}, "mu3sigma": {"rule": "mu3sigma"}, "mad": {"rule": "mad"},
         "quantile 0.01": {"rule": "quantile", "false_alarm_rate": 0.01}}
HELD_OUT = (2, 3, 4, 6, 10, 15, 20, 30, 40)
BAD_CALIBRATION = 0.05  # a calibration that rejects more good parts than this is counted as failed


def score_pool(data: Path, seed: int, fit_count: int, pool: int, defects: int) -> dict:
    """Fit on ``fit_count`` random good training images; score up to ``pool`` other good images and up to
    ``defects`` defective ones."""
    dataset = load_dataset(data, check_masks=False)
    train = dataset.good_train
    rng = random.Random(seed)
    fit_paths = sorted(rng.sample(train, fit_count))
    rest = [p for p in train if p not in set(fit_paths)] + [s.path for s in dataset.test if s.label == 0]
    rest = sorted(rng.sample(rest, min(pool, len(rest))))
    defective = [s.path for s in dataset.test if s.label == 1]
    defective = sorted(rng.sample(defective, min(defects, len(defective))))
    detector = lineguard.create("patchcore", backbone="effnet-lite0", seed=seed)
    detector.fit(ImageBatches(fit_paths, size=256))
    batches = ImageBatches(rest + defective, size=256)
    scores = detector.predict(batches).scores
    labels = [int(p in set(defective)) for p in batches.loaded]
    return {"data": dataset.name, "seed": seed, "fit": fit_count, "paths": [str(p) for p in batches.loaded],
            "labels": labels, "scores": scores.tolist()}


def rates(record: dict, n: int, draws: int) -> dict[str, list[tuple[float, float]]]:
    """Per rule: (false-alarm rate on the other good images, miss rate on the defective ones) for ``draws``
    random calibration sets of n good images."""
    scores, labels = np.array(record["scores"]), np.array(record["labels"])
    good, defective = scores[labels == 0], scores[labels == 1]
    rng = np.random.default_rng(record["seed"])
    found: dict[str, list[tuple[float, float]]] = {name: [] for name in RULES}
    for _ in range(draws):
        chosen = np.zeros(len(good), dtype=bool)
        chosen[rng.choice(len(good), size=n, replace=False)] = True
        held_out = torch.from_numpy(good[chosen])
        for name, options in RULES.items():
            try:  # the map maxima are not measured here: the scores stand in for them
                threshold = calibrate(held_out, held_out[:, None, None], **options).image_threshold
            except ValueError:  # e.g. equal scores: no threshold can be set
                continue
            found[name].append((float((good[~chosen] >= threshold).mean()),
                                float((defective < threshold).mean()) if len(defective) else float("nan")))
    return found


HEADER = """# False alarms of `fit`'s calibration rules against the number of held-out good images

Written by `benchmarks/calibration_holdout.py` (PatchCore, effnet-lite0, 256 px; see its docstring). `t3sigma`
(the default) is mean + 3 sd widened by the Student-t prediction bound for the n images it is estimated from;
`mu3sigma` is plain mean + 3 sd, `mad` median + 3 robust sd, `quantile 0.01` the 99th percentile.
"""


def table(records: list[dict], draws: int) -> str:
    lines = [HEADER]
    for data in sorted({r["data"] for r in records}):
        runs = [r for r in records if r["data"] == data]
        good = sum(1 for label in runs[0]["labels"] if label == 0)
        lines += [f"### {data}: fitted on {runs[0]['fit']} good images, {len(runs)} seeds × {draws} draws; "
                  f"false alarms among the other {good} good images, misses among "
                  f"{len(runs[0]['labels']) - good} defective ones", "",
                  "Each cell: mean false-alarm rate / share of calibrations with more than "
                  f"{BAD_CALIBRATION:.0%} false alarms / mean miss rate.", "",
                  "| held out n | " + " | ".join(RULES) + " |", "|---:|" + "---:|" * len(RULES)]
        for n in HELD_OUT:
            found = [rates(r, n, draws) for r in runs]
            cells = []
            for rule in RULES:
                pairs = np.array([pair for f in found for pair in f[rule]])  # (draws, 2)
                cells.append(f"{pairs[:, 0].mean():.3f} / {(pairs[:, 0] > BAD_CALIBRATION).mean():.2f} / "
                             f"{pairs[:, 1].mean():.3f}")
            lines.append(f"| {n} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, action="append", required=True, help="MVTec-layout folder")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--fit", type=int, default=24, help="good images fitted on")
    parser.add_argument("--pool", type=int, default=300, help="most other good images scored")
    parser.add_argument("--defects", type=int, default=150, help="most defective images scored")
    parser.add_argument("--draws", type=int, default=200, help="calibration sets drawn per seed and n")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    cache = RESULTS / "scores.jsonl"
    records = [json.loads(line) for line in cache.read_text().splitlines()] if cache.exists() else []
    for data in args.data:
        for seed in range(args.seeds):
            name = load_dataset(data, check_masks=False).name
            if any(r["data"] == name and r["seed"] == seed and r["fit"] == args.fit for r in records):
                continue
            record = score_pool(data, seed, args.fit, args.pool, args.defects)
            records.append(record)
            with cache.open("a") as f:
                f.write(json.dumps(record) + "\n")
            print(f"{name} seed {seed}: {len(record['scores'])} images scored", flush=True)
    text = table([r for r in records if r["fit"] == args.fit], args.draws)
    (RESULTS / "README.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
