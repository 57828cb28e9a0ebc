"""Zero-data detection on whole test sets and on 200-image batches from a line, against its peers.

Rows: ``testbatch`` (the default settings), ``mutual`` (MuSc's mutual scoring), the leave-one-out rows (every
patch against its nearest patch in each other image of the batch, image score the map's maximum of the k-th
closest image, k = 1, 3: what the batch's own information gives with nothing learned) and full-shot
``patchcore`` (fitted on the training images, through ``lineguard evaluate``) as the reference.
Datasets are folders in the MVTec AD layout, named by their folder; the posed synthetic parts are written with
``posed-data``. Every image goes through the backbone (effnet-lite0, 256 px) once (``zero_data_cache``); each
run scores the cached levels in its own process (``zero_data_runs``). Rows are appended to
``results/test_batch/<part>.jsonl`` as they finish and a rerun skips them; each part writes its table beside.

    python benchmarks/test_batch.py posed-data /tmp/data/posed    # write the posed synthetic parts
    python benchmarks/test_batch.py all --data BOTTLE --data MAGNETIC_TILE --data /tmp/data/posed
    python benchmarks/test_batch.py whole ...          # whole test set (peers on MuSc's subsets)
    python benchmarks/test_batch.py contamination ...  # 200-image batches, 0/5/10/20 % defective
    python benchmarks/test_batch.py reference ...      # full-shot PatchCore
    python benchmarks/test_batch.py stream ...         # the line monitor over a 2,000-image stream

``--methods testbatch`` limits a part to those methods; ``--threads`` sets each run's torch threads.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch

from lineguard import benchmarking
from lineguard.cli import run_subprocess
from lineguard.synthetic import write_mvtec_layout
from zero_data_cache import extract

OUT = Path(__file__).parent / "results" / "test_batch"
FRACTIONS = [0.0, 0.05, 0.10, 0.20]  # 0: a clean batch, where only the false alarms can be counted
DRAWS = 5  # per cell and row (seeds 0, 1, …): a 5 % batch holds 10 defects, one draw is a noisy estimate
# the posed synthetic parts, as benchmarked: 320 good training images, 40 good and 120 defective test images
POSED = {"kind": "posed", "size": 512, "n_train": 320, "n_test_good": 40, "n_test_defective": 120, "seed": 0}
COLUMNS = ("image_auroc", "pixel_auroc", "aupro")
REPORT_ONLY = False  # --report-only: tables from the rows on file, nothing run


def run_specs(part: str, specs: list[dict], data: dict[str, Path], threads: int) -> list[dict]:
    """Run the specs not yet in ``<part>.jsonl``, each in a child process (none with ``--report-only``);
    return all rows of ``specs`` done."""
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{part}.jsonl"
    done = {}
    if path.exists():
        for line in path.read_text().splitlines():
            row = json.loads(line)
            done[json.dumps(row["spec"], sort_keys=True)] = row
    todo = [] if REPORT_ONLY else [s for s in specs if json.dumps(s, sort_keys=True) not in done]
    for number, spec in enumerate(todo, 1):
        key = json.dumps(spec, sort_keys=True)
        print(f"{part} {number}/{len(todo)}: {key}", flush=True)
        child = subprocess.run([sys.executable, __file__, "run", key, "--threads", str(threads),
                                *data_arguments(data)], capture_output=True, text=True)
        if child.returncode != 0:
            print(f"  failed:\n{child.stderr[-2000:]}", flush=True)
            continue
        row = {"spec": spec, **json.loads(child.stdout.strip().splitlines()[-1])}
        print(f"  {json.dumps(row)[:400]}", flush=True)
        with open(path, "a") as f:
            f.write(json.dumps(row) + "\n")
        done[key] = row
    return [done[k] for k in (json.dumps(s, sort_keys=True) for s in specs) if k in done]


def data_arguments(data: dict[str, Path]) -> list[str]:
    return [arg for folder in data.values() for arg in ("--data", str(folder))]


def whole(data: dict[str, Path], methods: list[str], threads: int) -> None:
    specs = [{"part": "whole", "dataset": name, "method": m} for name in data for m in methods]
    rows = run_specs("whole", specs, data, threads)
    lines = ["| dataset | row | images (subsets) | image AUROC | pixel AUROC | AUPRO | scoring s/img | "
             "× backbone | peak RSS MB |", "|" + "---|" * 9]
    for r in rows:
        for row, metrics in r["rows"].items():
            lines.append(f"| {r['spec']['dataset']} | {row} | {r['images']} ({r['subsets']}) | "
                         + " | ".join(f"{metrics[c]:.3f}" for c in COLUMNS)
                         + f" | {r['scoring_s']:.3f} | {r['scoring_s'] / r['backbone_now_s']:.1f} | "
                         f"{r['peak_rss_mb']:.0f} |")
    write_table("whole", lines, f"whole test set; peers on MuSc's subsets; torch threads: {threads}")


def contamination(data: dict[str, Path], methods: list[str], threads: int, draws: int) -> None:
    specs = []  # draw by draw, so that an interrupted run has every cell at a draw or two
    for seed in range(draws):
        for method in methods:
            fractions = FRACTIONS if method == "testbatch" else FRACTIONS[1:]
            specs += [{"part": "batch", "dataset": name, "method": method, "fraction": f, "batch": 200,
                       "seed": seed} for f in [*fractions[1:], fractions[0]] for name in data]
    rows = run_specs("contamination", specs, data, threads)
    cells: dict[tuple, list[dict]] = {}
    for r in rows:
        for row, metrics in r["rows"].items():
            entry = {**metrics, "defects": r["defects"], "images": r["images"],
                     "ratio": r["scoring_s"] / r["backbone_now_s"]}
            cells.setdefault((r["spec"]["dataset"], row, r["spec"]["fraction"]), []).append(entry)
    names = sorted({(d, row) for d, row, _ in cells}, key=lambda k: (k[0], k[1] != "testbatch", k[1]))
    head = "| dataset | row | " + " | ".join(f"{f:.0%} defective" for f in FRACTIONS[1:])
    tables = []
    for metric in COLUMNS:
        lines = [head + " | scoring / backbone |", "|" + "---|" * (3 + len(FRACTIONS[1:]))]
        for name, row in names:
            found = [cells.get((name, row, f), []) for f in FRACTIONS[1:]]
            ratios = [e["ratio"] for f in FRACTIONS for e in cells.get((name, row, f), [])]
            lines.append(f"| {name} | {row} | " + " | ".join(benchmarking.mean_sd([e[metric] for e in c], count=True)
                                                            for c in found)
                         + f" | {min(ratios):.1f}–{max(ratios):.1f} |")
        tables += [f"### {metric.replace('_', ' ')}", "", *lines, ""]
    decisions = ["| dataset | row | " + " | ".join(f"{f:.0%} defective" for f in FRACTIONS) + " |",
                 "|" + "---|" * (2 + len(FRACTIONS))]
    for name, row in names:
        decisions.append(f"| {name} | {row} | " + " | ".join(decision_cell(cells.get((name, row, f), []))
                                                            for f in FRACTIONS) + " |")
    write_table("contamination", tables + ["### decisions of each batch on itself", "",
                                           "Rule `mad`, as `lineguard predict` makes them: false alarms per 100 "
                                           "good images; defects found, of all drawn.", "", *decisions],
                f"200-image batches, mean ± sd over draws (n), seeds {list(range(draws))}, the same batches for every "
                f"row. Last column: scoring time over the backbone forward time of the same images measured in the "
                f"same process (a batch takes 1 + that × backbone); torch threads: {threads}")


def decision_cell(entries: list[dict]) -> str:
    """False alarms per 100 good images and defects found of all drawn, summed over a cell's draws."""
    if not entries:
        return "–"
    good = sum(e["images"] - e["defects"] for e in entries)
    text = f"{100 * sum(e['flagged_good'] for e in entries) / good:.1f} false alarms"
    defects = sum(e["defects"] for e in entries)
    return text + (f", {sum(e['flagged_defects'] for e in entries)} of {defects} found" if defects else "")


def reference(data: dict[str, Path]) -> None:
    """Full-shot PatchCore, end to end through `lineguard evaluate`."""
    runs = benchmarking.plan(data=list(data.values()), methods=["patchcore"], backbones=["effnet-lite0"],
                             shots=[None], seeds=[0], params=[], image_size=256)
    rows = benchmarking.run_all(runs, OUT / "reference", runner=run_subprocess)
    print(benchmarking.write_table(rows, OUT / "reference" / "results.md"))


def stream(data: dict[str, Path], threads: int) -> None:
    specs = [{"part": "stream", "dataset": name, "length": 2000, "defect_rate": 0.1} for name in data
             if name != "bottle"]  # bottle has 229 images in all: a 2,000-image stream would repeat each ~9 times
    lines = ["| dataset | images | scoring ms/image | backbone ms/image | RSS MB |", "|---|---|---|---|---|"]
    notes = []
    for r in run_specs("stream", specs, data, threads):
        name = r["spec"]["dataset"]
        for window, ms in r["ms_per_image_scoring"].items():
            rss = r["rss_mb"].get(window.split("-")[1], float("nan"))
            lines.append(f"| {name} | {window} | {ms:.1f} | {r['backbone_ms']:.1f} | {rss:.0f} |")
        notes.append(f"{name}: {r['reference_images']} images in the reference, peak RSS {r['peak_rss_mb']:.0f} MB; "
                     f"image AUROC of the scores {r['image_auroc']:.3f}; {r['flagged']} flagged, precision "
                     f"{r['flag_precision']:.2f}, recall {r['flag_recall']:.2f}")
    write_table("stream", lines + [""] + notes, "line monitor: good images with 10 % test defects mixed in")


def write_table(part: str, lines: list[str], note: str = "") -> None:
    text = (f"{note}\n\n" if note else "") + "\n".join(lines) + "\n"
    (OUT / f"{part}.md").write_text(text)
    print(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=["all", "features", "whole", "contamination", "reference", "stream",
                                         "posed-data", "run"])
    parser.add_argument("spec", nargs="?", help="(run) the JSON spec of one run; (posed-data) the folder to write")
    parser.add_argument("--data", type=Path, action="append", default=[], help="a dataset folder (repeat)")
    parser.add_argument("--methods", default="testbatch,peers", help="comma-separated: testbatch, peers")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each run")
    parser.add_argument("--draws", type=int, default=DRAWS, help="batches drawn per cell")
    parser.add_argument("--report-only", action="store_true", help="write the tables from the rows on file")
    args = parser.parse_args()
    global REPORT_ONLY
    REPORT_ONLY = args.report_only
    torch.set_num_threads(args.threads)
    if args.part == "posed-data":
        print(write_mvtec_layout(args.spec, **POSED))
        return
    data = {folder.name: folder for folder in args.data}
    if args.part == "run":
        from zero_data_runs import RUNNERS  # imported here: only the child processes score

        spec = json.loads(args.spec)
        print(json.dumps(RUNNERS[spec["part"]](spec, data)))
        return
    if not data:
        parser.error("give the datasets with --data FOLDER (repeat it)")
    for name, folder in data.items():
        if not args.report_only:
            extract(name, folder)
    methods = args.methods.split(",")
    if args.part in ("all", "whole"):
        whole(data, methods, args.threads)
    if args.part in ("all", "contamination"):
        contamination(data, methods, args.threads, args.draws)
    if args.part in ("all", "reference"):
        reference(data)
    if args.part in ("all", "stream"):
        stream(data, args.threads)


if __name__ == "__main__":
    main()
