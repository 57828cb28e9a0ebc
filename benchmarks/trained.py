"""Benchmark of the trained detectors and of the Siamese encoder, one command, resumable.

1. ``autoencoder``, ``dfr`` and ``cse`` on bottle and magnetic tile (all good training images), each run a
   ``lineguard evaluate`` in its own process: image AUROC, pixel AUROC, AUPRO, fit seconds (feature
   extraction + training), images/s, peak RSS. Default parameters, except the training lengths of
   ``TRAINING_PARAMS`` / ``ENCODER_EPOCHS`` (the 15-minute training budget on magnetic tile's 762 images).
2. The Siamese encoder trained on one dataset (``lineguard train-encoder``, timed), then ``fewshot`` on the
   other at K = 2, 4, 8 (seeds 0, 1, 2: three support draws) with ``--param encoder=…``, against the same
   few-shot method on plain backbone features. These runs go through the K-shot harness of
   ``memory_bank.py`` (test features computed once per dataset; rows in ``results/memory_bank/kshot.jsonl``).

Rows land in ``benchmarks/results/trained/results.jsonl`` as they finish (a rerun skips them) and the table in
``benchmarks/results/trained.md``. Set the thread count for timings that matter:

    D="--data path/to/mvtec_ad/bottle --data path/to/mtd/magnetic_tile"
    python benchmarks/trained.py $D --threads 1          # everything (about 1.5 h on 1 thread of a busy 2-core CPU)
    python benchmarks/trained.py $D --only-methods       # only part 1
    python benchmarks/trained.py $D --threads 2 --work /tmp/lineguard-trained

Datasets are named by their folder's name (``bottle``, ``magnetic_tile``); with two of them the encoder trained
on each is tried on the other.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lineguard import benchmarking

ROOT = Path(__file__).resolve().parent
METHODS = ["autoencoder", "dfr", "cse"]
SHOTS = [2, 4, 8]
KSHOT = ROOT / "memory_bank.py"
BACKBONE = "effnet-lite0"  # the encoders are trained on its features
KSHOT_ROWS = ROOT / "results" / "memory_bank" / "kshot.jsonl"
# Training length per dataset where the defaults would exceed 15 min on this 2-core CPU: magnetic tile has 3.6×
# bottle's good images, so its autoencoder and Siamese encoder take about as many optimiser steps as bottle's.
TRAINING_PARAMS = {("autoencoder", "magnetic_tile"): ["epochs=10"]}
# bottle's 209 images give 13 steps an epoch, magnetic tile's 762 give 48: about 150 optimiser steps each.
ENCODER_EPOCHS = {"bottle": 12, "magnetic_tile": 3}
# The second image of a training pair is lit by a factor in [0.4, 1.6]: the encoder then learns to match a
# patch across lighting, which a few good images shot under one light cannot show the few-shot bank.
ENCODER_BRIGHTNESS = 0.6


def lineguard(args: list[str]) -> int:
    return subprocess.call([sys.executable, "-m", "lineguard", *args])


def lineguard_measured(args: list[str]) -> tuple[int, float]:
    """Run one ``lineguard`` command; (exit code, the child's own peak RSS in MB)."""
    child = subprocess.Popen([sys.executable, "-m", "lineguard", *args])
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    return child.returncode, usage.ru_maxrss / 1024  # Linux: kilobytes


def train_encoders(work: Path, datasets: dict[str, Path], epochs: dict[str, int]) -> dict[str, dict]:
    """Train one encoder per dataset (skipped when its folder is complete); returns name -> record."""
    records = {}
    for name, data in datasets.items():
        folder = work / f"encoder-{name}"
        record_path = folder / "benchmark.json"
        if not record_path.exists():
            start = time.perf_counter()
            code, peak = lineguard_measured(["train-encoder", "--data", str(data), "--out", str(folder),
                                             "--epochs", str(epochs[name]), "--device", "cpu", "--resume",
                                             "--brightness-delta", str(ENCODER_BRIGHTNESS)])
            if code != 0:
                raise SystemExit(f"train-encoder on {data} failed (exit {code})")
            record_path.write_text(json.dumps({
                "trained_on": name, "epochs": epochs[name], "brightness_delta": ENCODER_BRIGHTNESS,
                "train_seconds": round(time.perf_counter() - start, 1),
                "peak_rss_mb": round(peak), "threads": os.environ.get("OMP_NUM_THREADS", "all")}))
        records[name] = json.loads(record_path.read_text())
    return records


def finished_rows(runs: list[benchmarking.Run], out: Path) -> list[dict]:
    """The rows of ``runs`` already in ``out/results.jsonl``, in plan order (``--table-only``: run nothing)."""
    done = benchmarking.read_rows(out / "results.jsonl")
    return [done[run.key] for run in runs if run.key in done]


def finished_encoders(work: Path, datasets: dict[str, Path]) -> dict[str, dict]:
    """The records of the encoders trained so far (``--table-only``)."""
    paths = {name: work / f"encoder-{name}" / "benchmark.json" for name in datasets}
    return {name: json.loads(path.read_text()) for name, path in paths.items() if path.exists()}


def pairs(datasets: dict[str, Path]) -> list[tuple[str, str]]:
    """(encoder trained on, few-shot on): every ordered pair of different datasets."""
    return [(source, target) for source in datasets for target in datasets if source != target]


def fewshot_rows(work: Path, datasets: dict[str, Path], threads: int | None, *, run: bool) -> list[dict]:
    """Few-shot on each dataset at K = 2, 4, 8, plain and with the encoder trained on the other dataset, through
    the K-shot harness (``run=False``: only read the rows on file)."""
    for source, target in pairs(datasets) if run else ():
        for params in ([], [f"encoder={work / f'encoder-{source}'}"]):
            subprocess.check_call([sys.executable, str(KSHOT), "kshot", "--data", str(datasets[target]),
                                   "--method", "fewshot", *[f"--shots={k}" for k in SHOTS],
                                   *[f"--param={p}" for p in params], *([f"--threads={threads}"] if threads else [])])
    rows = [(json.loads(key), row) for key, row in benchmarking.read_rows(KSHOT_ROWS).items()]
    return [row for run, row in rows
            if run["method"] == "fewshot" and run["shots"] in SHOTS and run["backbone"] == BACKBONE]


def encoder_comparison(rows: list[dict], work: Path, datasets: dict[str, Path]) -> list[str]:
    """Few-shot image AUROC with the cross-dataset encoder against plain features, mean ± std over seeds, and
    the difference draw by draw (the same support images either way)."""
    variant = {(): "plain"} | {(f"encoder={work / f'encoder-{source}'}",): source for source in datasets}
    cells: dict[tuple[str, int, str], dict[int, float]] = {}
    for row in rows:
        run = json.loads(row["run"])
        if tuple(run["params"]) in variant:
            key = (Path(run["data"]).name, run["shots"], variant[tuple(run["params"])])
            cells.setdefault(key, {})[run["seed"]] = row["image_auroc"]

    lines = ["| few-shot on | encoder trained on | K | plain features | Siamese encoder | difference | "
             "by draw |", "|---|---|---|---|---|---|---|"]
    for source, target in pairs(datasets):
        for k in SHOTS:
            plain, encoded = cells.get((target, k, "plain"), {}), cells.get((target, k, source), {})
            paired = sorted(plain.keys() & encoded.keys())
            by_draw = " / ".join(f"{encoded[s] - plain[s]:+.4f}" for s in paired) or "–"
            diff = (f"{statistics.fmean(encoded.values()) - statistics.fmean(plain.values()):+.4f}"
                    if plain and encoded else "–")
            lines.append(f"| {target} | {source} | {k} | {benchmarking.mean_sd(list(plain.values()), count=True)} | "
                         f"{benchmarking.mean_sd(list(encoded.values()), count=True)} | {diff} | {by_draw} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, action="append", required=True,
                        help="dataset folder (repeatable), named by the folder's name")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "trained")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "lineguard-trained",
                        help="where trained encoders are kept")
    parser.add_argument("--threads", type=int, default=None, help="torch threads of every run (default: all)")
    parser.add_argument("--encoder-epochs", type=int, default=None, help=f"default: {ENCODER_EPOCHS}")
    parser.add_argument("--skip-encoder", action="store_true")
    parser.add_argument("--only-methods", action="store_true", help="run part 1 only, write no table")
    parser.add_argument("--table-only", action="store_true",
                        help="run nothing: write the tables from the rows finished so far")
    args = parser.parse_args()
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(args.threads)

    datasets = {folder.name: folder for folder in args.data}
    runs = [run for name, data in datasets.items() for method in METHODS
            for run in benchmarking.plan(data=[data], methods=[method], backbones=[BACKBONE], shots=[None],
                                         seeds=[0], params=TRAINING_PARAMS.get((method, name), []),
                                         image_size=None)]
    run_all = finished_rows if args.table_only else lambda plan, out: benchmarking.run_all(plan, out, runner=lineguard)
    runs = run_all(runs, args.out)
    if args.only_methods:
        return
    encoders: dict[str, dict] = {}
    if not args.skip_encoder:
        epochs = {name: args.encoder_epochs or ENCODER_EPOCHS.get(name, 10) for name in datasets}
        encoders = (finished_encoders(args.work, datasets) if args.table_only
                    else train_encoders(args.work, datasets, epochs))
    fewshot = fewshot_rows(args.work, datasets, args.threads, run=not args.table_only) if encoders else []
    table = benchmarking.write_table(runs, args.out / "results.md")
    threads = os.environ.get("OMP_NUM_THREADS", "all")
    lines = [f"Torch threads per run: {threads} (OMP_NUM_THREADS); image AUROC, pixel AUROC and AUPRO on the test "
             "split; fit s = feature extraction + training.", "", table]
    if encoders:
        lines += ["Image AUROC of few-shot PatchCore (its default views and baseline), mean ± std over support "
                  "seeds 0, 1, 2 (rows: `results/memory_bank/kshot.jsonl`):", "",
                  *encoder_comparison(fewshot, args.work, datasets), "",
                  "| encoder trained on | epochs | brightness delta | train-encoder seconds | peak RSS MB | threads |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {r['trained_on']} | {r['epochs']} | {r.get('brightness_delta', 0.1)} | {r['train_seconds']} | "
                  f"{r.get('peak_rss_mb', '–')} | {r.get('threads', '–')} |" for r in encoders.values()]
    lines += ["", "What these rows mean and what was tried: `trained/README.md`."]
    (ROOT / "results" / "trained.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
