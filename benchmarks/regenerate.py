"""Regenerate every committed benchmark table from the dataset folders given: one command, resumable.

    python benchmarks/regenerate.py --data path/to/mvtec_ad/bottle --data path/to/mtd/magnetic_tile
    python benchmarks/regenerate.py --data ... --data ... --only kshot --only trained   # some of them
    python benchmarks/regenerate.py --data ... --data ... --dry-run                     # print the commands

Each step is one benchmark script, run in its own process with the folders as arguments, writing its tables
under ``benchmarks/results/`` (see the README's table of scripts); the scripts keep finished rows, so an
interrupted regeneration resumes, and a row already on file is not run again (delete a results file to measure
it anew). The committed tables were measured on the MVTec AD bottle and MTD Magnetic Tile folders, in that
order. ``results/memory_bank/augmentations.md`` is not regenerated: it records view sets under earlier few-shot
defaults. Timings depend on the machine and its load; ``--threads`` is passed to the scripts that take it.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
LITE = ["--backbone", "effnet-lite0", "--backbone", "effnet-lite2"]


def data_args(folders: list[Path]) -> list[str]:
    return [arg for folder in folders for arg in ("--data", str(folder))]


# name -> (script, arguments given the dataset folders and the thread count)
STEPS: dict[str, tuple[str, Callable[[list[Path], int], list[str]]]] = {
    "grid": ("memory_bank.py", lambda d, t: ["grid", *data_args(d), *LITE]),
    "kshot": ("memory_bank.py", lambda d, t: ["kshot", *data_args(d), *LITE, "--threads", str(t)]),
    "throughput": ("memory_bank.py", lambda d, t: ["throughput", *data_args(d[:1]), "--threads", "2"]),
    "coreset": ("coreset_scale.py", lambda d, t: []),
    "calibration": ("calibration_holdout.py", lambda d, t: data_args(d)),
    "trained": ("trained.py", lambda d, t: [*data_args(d), "--threads", str(t)]),
    "test_batch": ("test_batch.py", lambda d, t: ["all", *data_args(d), "--threads", "2"]),
    "load_service": ("load_service.py", lambda d, t: []),
    "abuse_service": ("abuse_service.py", lambda d, t: []),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, action="append", required=True,
                        help="dataset folder (repeatable; the tables used bottle, then Magnetic Tile)")
    parser.add_argument("--only", action="append", choices=list(STEPS), help="run only these steps (repeatable)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the accuracy runs")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    args = parser.parse_args()
    missing = [folder for folder in args.data if not folder.is_dir()]
    if missing:
        raise SystemExit(f"no such dataset folder: {', '.join(map(str, missing))}")
    for name in args.only or list(STEPS):
        script, arguments = STEPS[name]
        command = [sys.executable, str(HERE / script), *arguments(args.data, args.threads)]
        print(f"[{name}] {' '.join(command)}", flush=True)
        if not args.dry_run:
            subprocess.check_call(command)


if __name__ == "__main__":
    main()
