"""Zero-data methods on MVTec AD bottle and Magnetic Tile: test-batch coreset learning, mutual scoring, the monitor.

Every image goes through the backbone (effnet-lite0, 256 px) once; its levels are cached (safetensors, with the
decode and forward seconds they cost), and each run scores the cached levels in its own process, so its peak
memory is its own. Rows are appended to ``<part>.jsonl`` as they finish and a rerun skips them (resumable);
each part writes a markdown table beside its rows. Seconds per image = decode + backbone forward + scoring.
``BENCH_METHODS=testbatch`` and ``BENCH_DATASETS=bottle`` (comma-separated) limit a part to those runs.

    python benchmarks/test_batch.py all            # everything below, in order
    python benchmarks/test_batch.py features       # cache the levels of every test and good training image
    python benchmarks/test_batch.py grid           # testbatch: whole test set as one batch, batches of 50/100/200/400;
                                                   # mutual: the whole test set as MuSc cuts it
    python benchmarks/test_batch.py contamination  # image AUROC and the batch's own decisions against the
                                                   # defect fraction (0–20 %), 200-image batches, 5 draws
    python benchmarks/test_batch.py reference      # full-shot PatchCore via `lineguard evaluate` (few-shot K = 4:
                                                   # benchmarks/results/memory_bank/kshot.jsonl)
    python benchmarks/test_batch.py stream         # the line monitor over a 2,000-image stream

Batches are drawn as MuSc draws its subsets (stratified by defect type, seed 0), so the whole-set mutual row on
Magnetic Tile (8 subsets of about 73 images, re-scoring over all 582) is MuSc's own protocol; its ``musc``
variant turns the map blur off, as MuSc has none, for the comparison with the anchor's figures.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from lineguard import benchmarking
from lineguard.cli import run_subprocess
from lineguard.evaluation import load_masks
from lineguard.features.extractor import PatchExtractor
from lineguard.io.batches import ImageBatches
from lineguard.io.datasets import load_dataset
from lineguard.methods import create
from lineguard.metrics import evaluate, image_auroc
from lineguard.monitor import LineMonitor
from lineguard.scoring.threshold import robust_threshold
from peer_metrics import musc_pixel_metrics

DATA = {"bottle": Path("/work/shared/datasets/mvtec_ad/bottle"),
        "magnetic_tile": Path("/work/shared/datasets/mtd/magnetic_tile")}
OUT = Path(__file__).parent / "results" / "test_batch"
CACHE = Path(os.environ.get("LINEGUARD_BENCH_CACHE", "/tmp/lineguard-bench"))
BACKBONE, SIZE = "effnet-lite0", 256
BATCHES = [None, 50, 100, 200, 400]  # None: the whole test set
GRID_METRICS = ("image_auroc", "pixel_auroc", "aupro", "musc_pixel_auroc", "musc_aupro")
MUSC_SUBSETS = {"bottle": 1, "magnetic_tile": 8}  # MuSc's divide_num on these sets
FRACTIONS = [0.0, 0.05, 0.10, 0.15, 0.20]  # 0: a clean batch, where only the false alarms can be counted
SEEDS = (0, 1, 2, 3, 4)  # draws per contamination cell: a 5 % batch holds 10 defects, one draw is a noisy estimate
# contamination rows time the batch's scoring and the backbone this many times each and keep the fastest: on
# this shared VM one run of the same scoring varied from 0.040 to 0.077 s per image, and the ratio of two
# single runs inherited both spreads (with 2 runs, slow phases of a few minutes still reached both)
TIMING_RUNS = 3
# MuSc on the same Lite0 features (../shared/anchors/musc): image AUROC (RsCIN), pixel AUROC, AUPRO (MuSc's
# own AUPRO implementation), seconds per image
MUSC = {"bottle": (0.995, 0.990, 0.964, 2.3), "magnetic_tile": (0.743, 0.648, 0.642, 1.9)}


# -- cached features ------------------------------------------------------------------------------------------
def cache_file(name: str, split: str) -> Path:
    return CACHE / f"{name}-{split}.safetensors"


def extract(name: str) -> None:
    """Levels of every test and good training image, with the seconds spent decoding and in the backbone."""
    dataset = load_dataset(DATA[name])
    extractor = PatchExtractor(BACKBONE, levels=None, weights=None, device="cpu", image_size=SIZE, radius=1)
    for split, paths in (("test", [s.path for s in dataset.test]), ("good", dataset.good_train)):
        target = cache_file(name, split)
        if target.exists():
            continue
        batches = ImageBatches(paths, size=SIZE, batch_size=16)
        levels, decode, forward = [], 0.0, 0.0
        iterator, start = iter(batches), time.perf_counter()
        for batch in iterator:
            decode += time.perf_counter() - start
            start = time.perf_counter()
            levels.append(extractor.levels_of(batch))
            forward += time.perf_counter() - start
            start = time.perf_counter()
        tensors = {f"level{i}": torch.cat(parts).contiguous() for i, parts in enumerate(zip(*levels, strict=True))}
        target.parent.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(target), metadata={"paths": json.dumps([str(p) for p in batches.loaded]),
                                                   "decode_seconds": str(decode), "forward_seconds": str(forward)})
        print(f"{name} {split}: {len(batches.loaded)} images, decode {decode:.1f} s, forward {forward:.1f} s")


def load_features(name: str, split: str) -> tuple[list[torch.Tensor], list[str], float, float]:
    """Cached levels [(N, C_l, h_l, w_l)], their paths, and decode and forward seconds per image."""
    with safe_open(str(cache_file(name, split)), framework="pt") as f:
        meta = f.metadata()
        levels = [f.get_tensor(f"level{i}") for i in range(len(f.keys()))]
    paths = json.loads(meta["paths"])
    return levels, paths, float(meta["decode_seconds"]) / len(paths), float(meta["forward_seconds"]) / len(paths)


def musc_subsets(types: list[str], count: int, seed: int = 0) -> list[list[int]]:
    """MuSc's split into ``count`` subsets: the types in sorted order, each type's images (in file order)
    shuffled with ``seed``, cut into runs of ``count``; subset j takes the j-th image of every run."""
    random.seed(seed)
    by_type: dict[str, list[int]] = {}
    for i, kind in enumerate(types):
        by_type.setdefault(kind, []).append(i)
    runs = []
    for kind in sorted(by_type):
        members = by_type[kind]
        random.shuffle(members)
        runs += [members[s:s + count] for s in range(0, len(members), count)]
    return [[run[j] for run in runs if len(run) > j] for j in range(count)]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


# -- one run (child process) ----------------------------------------------------------------------------------
def run_grid(spec: dict) -> dict:
    """testbatch or mutual over the test set cut into batches; metrics over all images."""
    name = spec["dataset"]
    levels, paths, decode, forward = load_features(name, "test")
    dataset = load_dataset(DATA[name])
    by_path = {str(s.path): s for s in dataset.test}
    samples = [by_path[p] for p in paths]
    n = len(samples)
    if spec["batch"] is None:  # the whole test set; mutual as MuSc cuts it (N² cost), testbatch in one batch
        count = MUSC_SUBSETS[name] if spec["method"] == "mutual" else 1
    else:
        count = math.ceil(n / spec["batch"])
    subsets = [torch.tensor(s) for s in musc_subsets([s.defect for s in samples], count)]
    detector = create(spec["method"], backbone=BACKBONE, image_size=SIZE, **spec["params"])
    scores, maps = torch.empty(n), torch.empty(n, SIZE, SIZE)
    start = time.perf_counter()
    if spec["method"] == "mutual" and spec["batch"] is None:  # MuSc: subsets compared apart, re-scored together
        prediction = detector.predict_levels(levels, subsets)
        scores, maps = prediction.scores, prediction.maps
    else:
        for subset in subsets:
            prediction = detector.predict_levels([level[subset] for level in levels])
            scores[subset], maps[subset] = prediction.scores, prediction.maps
    scoring = (time.perf_counter() - start) / n
    labels = torch.tensor([s.label for s in samples])
    metrics = evaluate(labels, scores, load_masks(samples, SIZE, dataset.mask_threshold), maps)
    peak = peak_rss_mb()  # before the peer-protocol metrics below, whose arrays are the benchmark's, not the method's
    if spec["batch"] is None:  # the anchor's setting: also its metric protocol, for a like-for-like column
        metrics |= musc_pixel_metrics(samples, maps.numpy(), dataset.mask_threshold)
    return {**{k: float(v) for k, v in metrics.items() if k in GRID_METRICS},
            "batches": [len(s) for s in subsets], "scoring_s": scoring, "backbone_s": forward, "decode_s": decode,
            "seconds_per_image": decode + forward + scoring, "backbone_now_s": backbone_seconds(),
            "peak_rss_mb": peak}


def run_contamination(spec: dict) -> dict:
    """One batch of ``batch`` images, ``fraction`` of them test defects, the rest good (train and test); the
    image scores and labels are kept, and the batch's own decisions (rule ``mad``, as `lineguard predict`
    makes them for a batch scored against itself) are counted."""
    test, test_paths, _, forward = load_features(spec["dataset"], "test")
    good, _, _, _ = load_features(spec["dataset"], "good")
    dataset = load_dataset(DATA[spec["dataset"]])
    label_of = {str(s.path): s.label for s in dataset.test}
    labels = torch.tensor([label_of[p] for p in test_paths])
    pool = [("test", i) for i in torch.nonzero(labels == 0).flatten().tolist()]
    pool += [("good", i) for i in range(len(good[0]))]
    defects = [("test", i) for i in torch.nonzero(labels == 1).flatten().tolist()]
    rng = random.Random(spec["seed"])
    n_defects = round(spec["fraction"] * spec["batch"])
    chosen = rng.sample(defects, n_defects) + rng.sample(pool, spec["batch"] - n_defects)
    rng.shuffle(chosen)
    source = {"test": test, "good": good}
    levels = [torch.stack([source[split][level][i] for split, i in chosen]) for level in range(len(test))]
    batch_labels = torch.tensor([int((split, i) in set(defects)) for split, i in chosen])
    detector = create(spec["method"], backbone=BACKBONE, image_size=SIZE, **spec["params"])
    runs = spec.get("timing_runs", TIMING_RUNS)
    scoring = []
    for _ in range(runs):
        start = time.perf_counter()
        prediction = detector.predict_levels(levels)
        scoring.append((time.perf_counter() - start) / len(chosen))
    backbone = [backbone_seconds() for _ in range(runs)]
    flagged = prediction.scores >= robust_threshold(prediction.scores)
    return {"image_auroc": float(image_auroc(batch_labels, prediction.scores)) if n_defects else None,
            "defects": n_defects, "flagged_defects": int((flagged & (batch_labels == 1)).sum()),
            "flagged_good": int((flagged & (batch_labels == 0)).sum()),
            "scores": prediction.scores.tolist(), "labels": batch_labels.tolist(),
            "scoring_s": min(scoring), "scoring_runs_s": scoring, "backbone_s": forward,
            "backbone_now_s": min(backbone), "backbone_runs_s": backbone, "peak_rss_mb": peak_rss_mb()}


def backbone_seconds(images: int = 32) -> float:
    """Backbone forward seconds per image, measured now in this process (the load of the machine changes
    over a benchmark, so a time ratio is only fair within one process)."""
    extractor = PatchExtractor(BACKBONE, levels=None, weights=None, device="cpu", image_size=SIZE, radius=1)
    batch = torch.rand(16, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    extractor.levels_of(batch)  # warm-up
    start = time.perf_counter()
    for _ in range(images // 16):
        extractor.levels_of(batch)
    return (time.perf_counter() - start) / images


def run_stream(spec: dict) -> dict:
    """The monitor over a stream of good images with ``defect_rate`` test defects mixed in; per-image time
    and resident memory along the stream, and how well its scores and decisions separate the defects."""
    test, test_paths, _, forward = load_features(spec["dataset"], "test")
    good, _, _, _ = load_features(spec["dataset"], "good")
    # the cache is memory-mapped: read it all now, or RSS would grow as the stream first touches each image
    # (it did, 686 → 938 MB over 2,000 images drawn from 1,344, the curve of pages faulted in)
    test, good = [level.clone() for level in test], [level.clone() for level in good]
    dataset = load_dataset(DATA[spec["dataset"]])
    label_of = {str(s.path): s.label for s in dataset.test}
    labels = [label_of[p] for p in test_paths]
    normal = [(good, i) for i in range(len(good[0]))] + [(test, i) for i, y in enumerate(labels) if y == 0]
    defects = [(test, i) for i, y in enumerate(labels) if y == 1]
    rng = random.Random(0)
    monitor = LineMonitor(backbone=BACKBONE, image_size=SIZE)
    seconds, rss, truth, decisions = [], {}, [], []
    for step in range(spec["length"]):
        is_defect = step >= 2 * monitor.warmup and rng.random() < spec["defect_rate"]
        source, i = rng.choice(defects if is_defect else normal)
        flip = rng.random() < 0.5  # mirrored parts: a long stream is not a loop of identical images
        levels = [level[i:i + 1].flip(-1) if flip else level[i:i + 1] for level in source]
        start = time.perf_counter()
        decision = monitor.score_levels(levels)
        seconds.append(time.perf_counter() - start)
        decisions.append(Verdict(decision.score, decision.anomalous))  # not the map: RSS must show the monitor
        truth.append(int(is_defect))
        if (step + 1) % 100 == 0:
            rss[step + 1] = current_rss_mb()
    decided = [(d, y) for d, y in zip(decisions, truth, strict=True) if d.anomalous is not None]
    flagged = [y for d, y in decided if d.anomalous]
    windows = {f"{a}-{a + 100}": 1000 * sum(seconds[a:a + 100]) / 100 for a in (100, len(seconds) // 2,
                                                                              len(seconds) - 100)}
    return {"ms_per_image_scoring": windows, "backbone_ms": 1000 * forward, "rss_mb": rss,
            "bank_rows": sum(b.filled for b in monitor.banks), "peak_rss_mb": peak_rss_mb(),
            "image_auroc": float(image_auroc(torch.tensor([y for _, y in decided]),
                                             torch.tensor([d.score for d, _ in decided]))),
            "flagged": len(flagged), "flag_precision": sum(flagged) / max(1, len(flagged)),
            "flag_recall": sum(flagged) / max(1, sum(y for _, y in decided))}


@dataclass(frozen=True)
class Verdict:
    score: float
    anomalous: bool | None


RUNNERS = {"grid": run_grid, "contamination": run_contamination, "stream": run_stream}


# -- parts (parent process) -----------------------------------------------------------------------------------
def run_specs(part: str, specs: list[dict], threads: int) -> list[dict]:
    """Run the specs not yet in ``<part>.jsonl`` (only those of $BENCH_METHODS and $BENCH_DATASETS, if set), each
    in a child process; return all rows of ``specs`` done so far."""
    only = os.environ.get("BENCH_METHODS")
    datasets = os.environ.get("BENCH_DATASETS")
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{part}.jsonl"
    for name in DATA:
        extract(name)
    done = {}
    if path.exists():
        for line in path.read_text().splitlines():
            row = json.loads(line)
            done[json.dumps(row["spec"], sort_keys=True)] = row
    for spec in specs:
        key = json.dumps(spec, sort_keys=True)
        if (key in done or (only and spec.get("method") not in only.split(","))
                or (datasets and spec.get("dataset") not in datasets.split(","))):
            continue
        print(f"{part}: {key}", flush=True)
        child = subprocess.run([sys.executable, __file__, "run", key, "--threads", str(threads)],
                               capture_output=True, text=True)
        if child.returncode != 0:
            print(f"  failed:\n{child.stderr[-2000:]}", flush=True)
            continue
        row = {"spec": spec, **json.loads(child.stdout.strip().splitlines()[-1])}
        print(f"  {row}", flush=True)
        with open(path, "a") as f:
            f.write(json.dumps(row) + "\n")
        done[key] = row
    return [done[k] for k in (json.dumps(s, sort_keys=True) for s in specs) if k in done]


def grid(threads: int) -> None:
    specs = []
    for name in DATA:
        n = len(load_features(name, "test")[1])
        sizes = [b for b in BATCHES if b is None or b < n]
        specs += [{"part": "grid", "dataset": name, "method": "testbatch", "batch": b, "params": {}} for b in sizes]
        # the option for textured surfaces: image scores measured from each image's own low-quantile patch score
        specs.append({"part": "grid", "dataset": name, "method": "testbatch", "batch": None,
                      "params": {"baseline_quantile": 0.1}})
        # mutual scoring costs N² per batch (about 0.7 s per image at 200 on 1 thread): only the whole set as MuSc
        # cuts it (no blur, as MuSc), within the time this benchmark was given
        specs.append({"part": "grid", "dataset": name, "method": "mutual", "batch": None, "params": {"sigma": 0}})
    rows = run_specs("grid", specs, threads)
    lines = ["| dataset | method | batch (count) | image AUROC | pixel AUROC | AUPRO | pixel AUROC, AUPRO "
             "(MuSc's protocol) | s/img | scoring s/img | backbone s/img (cached / same run) | peak RSS MB |",
             "|" + "---|" * 11]
    for name, (image, pixel, pro, seconds) in MUSC.items():
        lines.append(f"| {name} | MuSc anchor | all | {image:.3f} | – | – | {pixel:.3f}, {pro:.3f} | "
                     f"{seconds:.2f} | – | – | – |")
    for r in rows:
        s = r["spec"]
        label = s["method"] + (" (no blur, as MuSc)" if s["params"].get("sigma") == 0 else "")
        label += "".join(f" {k}={v}" for k, v in s["params"].items() if k != "sigma")
        batch = "all" if s["batch"] is None else str(s["batch"])
        musc = f"{r['musc_pixel_auroc']:.3f}, {r['musc_aupro']:.3f}" if "musc_aupro" in r else "–"
        lines.append(f"| {s['dataset']} | {label} | {batch} ({len(r['batches'])}) | {r['image_auroc']:.3f} | "
                     f"{r['pixel_auroc']:.3f} | {r['aupro']:.3f} | {musc} | {r['seconds_per_image']:.3f} | "
                     f"{r['scoring_s']:.3f} | {r['backbone_s']:.3f} / {r['backbone_now_s']:.3f} | "
                     f"{r['peak_rss_mb']:.0f} |")
    write_table("grid", lines, note=f"torch threads: {threads}")


def contamination(threads: int) -> None:
    specs = [{"part": "contamination", "dataset": name, "method": "testbatch", "fraction": f, "batch": 200,
              "seed": seed, "params": {}} for name in DATA for f in FRACTIONS for seed in SEEDS]
    # mutual scoring takes about 2.5 minutes per 200-image batch on 1 thread: the two ends, three draws, timed once
    # (it takes 10–15× the backbone, so the spread of single runs does not matter to the comparison)
    specs += [{"part": "contamination", "dataset": name, "method": "mutual", "fraction": f, "batch": 200,
               "seed": seed, "params": {}, "timing_runs": 1} for name in DATA for f in (FRACTIONS[-1], FRACTIONS[1])
              for seed in SEEDS[:3]]
    rows = run_specs("contamination", specs, threads)
    cells: dict[tuple, list[dict]] = {}
    for r in rows:
        cells.setdefault((r["spec"]["dataset"], r["spec"]["method"], r["spec"]["fraction"]), []).append(r)
    columns = "| dataset | method | " + " | ".join(f"{f:.0%} defective" for f in FRACTIONS)
    lines = [columns + " | scoring / backbone |", "|" + "---|" * (3 + len(FRACTIONS))]
    decisions = [columns + " |", "|" + "---|" * (2 + len(FRACTIONS))]
    for name in DATA:
        for method in ("testbatch", "mutual"):
            found = [cells.get((name, method, f), []) for f in FRACTIONS]
            ratios = [r["scoring_s"] / r["backbone_now_s"] for c in found for r in c]
            aurocs = [[r["image_auroc"] for r in c if r["image_auroc"] is not None] for c in found]  # none when clean
            lines.append(f"| {name} | {method} | " + " | ".join(benchmarking.mean_sd(a, count=True) for a in aurocs)
                         + (f" | {min(ratios):.2f}–{max(ratios):.2f} |" if ratios else " | – |"))
            decisions.append(f"| {name} | {method} | " + " | ".join(decision_cell(c) for c in found) + " |")
    write_table("contamination", lines + ["", "Decisions of each batch on itself (rule `mad`, as `lineguard predict` "
                                          "makes them): false alarms per 100 good images; defects found, of all "
                                          "drawn", ""] + decisions,
                note=f"image AUROC of 200-image batches, mean ± sd over the draws (n); draws (seeds) {list(SEEDS)} for "
                f"testbatch, {list(SEEDS[:3])} for mutual at 5 % and 20 %. Last column: scoring time over the backbone "
                f"forward time measured in the same process, so a batch takes (1 + that) × backbone (testbatch: "
                f"each the fastest of {TIMING_RUNS} runs; mutual: one run); torch threads: {threads}")


def decision_cell(rows: list[dict]) -> str:
    """False alarms per 100 good images and defects found of all drawn, summed over a cell's draws."""
    if not rows:
        return "–"
    good = sum(len(r["labels"]) - r["defects"] for r in rows)
    alarms = f"{100 * sum(r['flagged_good'] for r in rows) / good:.1f} false alarms"
    defects = sum(r["defects"] for r in rows)
    return alarms + (f", {sum(r['flagged_defects'] for r in rows)} of {defects} found" if defects else "")


def reference() -> None:
    """Full-shot PatchCore, end to end through `lineguard evaluate`. Few-shot (K = 4) with the same backbone is
    in benchmarks/results/memory_bank/kshot.jsonl (three support draws), not rerun here."""
    runs = benchmarking.plan(data=list(DATA.values()), methods=["patchcore"], backbones=[BACKBONE], shots=[None],
                             seeds=[0], params=[], image_size=SIZE)
    rows = benchmarking.run_all(runs, OUT / "reference", runner=run_subprocess)
    print(benchmarking.write_table(rows, OUT / "reference" / "results.md"))


def stream(threads: int) -> None:
    rows = run_specs("stream", [{"part": "stream", "dataset": "magnetic_tile", "length": 2000, "defect_rate": 0.1}],
                     threads)
    lines = ["| images | scoring ms/image | backbone ms/image | RSS MB |", "|---|---|---|---|"]
    for r in rows:
        for window, ms in r["ms_per_image_scoring"].items():
            end = int(window.split("-")[1])
            rss = r["rss_mb"].get(str(end), r["rss_mb"].get(end, float("nan")))
            lines.append(f"| {window} | {ms:.1f} | {r['backbone_ms']:.1f} | {rss:.0f} |")
        lines.append(f"\nbank rows {r['bank_rows']}, peak RSS {r['peak_rss_mb']:.0f} MB; image AUROC of the scores "
                     f"{r['image_auroc']:.3f}; {r['flagged']} flagged, precision {r['flag_precision']:.2f}, "
                     f"recall {r['flag_recall']:.2f}")
    write_table("stream", lines, note="line monitor, Magnetic Tile good images with 10 % test defects mixed in")


def write_table(part: str, lines: list[str], note: str = "") -> None:
    text = (f"{note}\n\n" if note else "") + "\n".join(lines) + "\n"
    (OUT / f"{part}.md").write_text(text)
    print(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=["all", "features", "grid", "contamination", "reference", "stream", "run"])
    parser.add_argument("spec", nargs="?", help="(run) the JSON spec of one run")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of each run")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.part == "run":
        spec = json.loads(args.spec)
        print(json.dumps(RUNNERS[spec["part"]](spec)))
        return
    if args.part in ("all", "features"):
        for name in DATA:
            extract(name)
    if args.part in ("all", "grid"):
        grid(args.threads)
    if args.part in ("all", "contamination"):
        contamination(args.threads)
    if args.part in ("all", "reference"):
        reference()
    if args.part in ("all", "stream"):
        stream(args.threads)


if __name__ == "__main__":
    main()
