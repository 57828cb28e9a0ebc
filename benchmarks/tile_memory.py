"""Peak memory of tiled prediction on one very large frame (issue 20: an 8000 × 2000 image at 256 px tiles
within 2 GB).

A tiled PatchCore is fitted (``lineguard fit --tile``) on the synthetic woven sheets of ``tiling.py``; then
``lineguard predict`` scores one flawed sheet of ``--width`` × ``--height`` px. Each command runs in its own
process and the row gives its peak RSS (``ru_maxrss``), with the frame's score against the threshold and how much
whether the map peaks in the flaw. Tiles stream through the backbone ``batch_size`` at a time and only the
stitched map is kept, so the peak is torch, the model and a few full-frame maps, not the frame's tiles.

    python benchmarks/tile_memory.py --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from lineguard.synthetic import make_sheets
from tiling import write_sheets

OUT = Path(__file__).parent / "results" / "tiling"
BUDGET_MB = 2048
RUN = ("import resource, sys\nfrom lineguard.cli import main\nsys.argv = ['lineguard', *sys.argv[1:]]\n"
       "try:\n    main()\nfinally:\n"
       "    print('peak_rss_mb', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, file=sys.stderr)")


def lineguard(*args: str, threads: int) -> tuple[float, float]:
    """One lineguard command in its own process -> (its peak RSS in MB, wall seconds)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "LINEGUARD_PROGRESS": "0"}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", RUN, *args], capture_output=True, text=True, env=env)
    if done.returncode:
        raise SystemExit(f"lineguard {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return float(done.stderr.rsplit("peak_rss_mb", 1)[1].split()[0]), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=8000)
    parser.add_argument("--height", type=int, default=2000)
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--overlap", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "lineguard-sheets")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    data, model, frame = write_sheets(args.work), args.work / "tiled-model", args.work / "frame"
    if not (model / "config.json").exists():
        lineguard("fit", "--method", "patchcore", "--data", str(data), "--out", str(model), "--tile",
                  str(args.tile), "--overlap", str(args.overlap), threads=args.threads)
    sheet = make_sheets(0, 1, height=args.height, width=args.width, seed=7)[0]
    frame.mkdir(exist_ok=True)
    image = frame / f"sheet_{args.width}x{args.height}.png"
    Image.fromarray(sheet.image).save(image)
    results = args.work / "frame-results"
    peak, seconds = lineguard("predict", str(model), str(image), "--out", str(results), threads=args.threads)
    row = {"frame": [args.width, args.height], "tile": args.tile, "overlap": args.overlap, "threads": args.threads,
           "flaw_share": round(float(sheet.mask.mean()), 5), "predict_peak_rss_mb": round(peak),
           "predict_seconds": round(seconds, 1), "budget_mb": BUDGET_MB, **verdict(results, sheet.mask)}
    print(json.dumps(row))
    with open(args.out / "tile_memory.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")


def verdict(results: Path, flaw: np.ndarray) -> dict:
    """The frame's row in the results store: its score, decision and regions, and whether its map (at the
    frame's own size) peaks inside the flaw."""
    row = [json.loads(line) for line in (results / "results.jsonl").read_text().splitlines()][-1]
    anomaly_map = np.load(results / row["map"])
    peak = np.unravel_index(anomaly_map.argmax(), anomaly_map.shape)
    return {"score": round(row["score"], 3), "normalized_score": round(row["normalized_score"], 3),
            "decision": row["decision"], "regions": len(row["regions"]), "map_shape": list(anomaly_map.shape),
            "map_peak_in_flaw": bool(flaw[peak])}


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
