"""Time and peak memory of the greedy k-center coreset at scale (default: 1,000,000 × 1,536 → 1 %).

The input is random clusters, written chunk by chunk into one preallocated float32 tensor so that the
features themselves (6.1 GB at the default size) are the only large allocation before the coreset runs.
1,000 Gaussian blobs (centres drawn from N(0, I), per-coordinate spread 0.25, so a blob's radius is about a
sixth of the distance between centres): distinct regions, as patch features of different parts of an
object are. Until every blob has a centre, the farthest rows sit in one blob and a round of the coreset adds
few centres (a whole pass for each); afterwards rounds add hundreds. Peak RSS is the process's high-water
mark (input included); the result is appended to a JSON-lines file.

    python benchmarks/coreset_scale.py                      # the issue's size
    python benchmarks/coreset_scale.py --n 200000 --dim 256 # a quick check
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from lineguard.evaluation import peak_rss_mb
from lineguard.memory.coreset import coreset_size, greedy_coreset

RESULTS = Path(__file__).parent / "results" / "coreset_scale.jsonl"


def clustered_features(n: int, dim: int, *, clusters: int, spread: float, seed: int,
                       chunk_size: int = 16_384) -> torch.Tensor:
    """(n, dim) float32: Gaussian blobs around ``clusters`` random centres, filled in place chunk by chunk."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(clusters, dim, generator=generator)  # (C, D)
    features = torch.empty(n, dim)
    for start in range(0, n, chunk_size):
        rows = features[start:start + chunk_size]
        torch.randn(rows.shape, generator=generator, out=rows)
        assignment = torch.randint(clusters, (len(rows),), generator=generator)
        rows.mul_(spread).add_(centres[assignment])
    return features


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=1_536)
    parser.add_argument("--ratio", type=float, default=0.01)
    parser.add_argument("--clusters", type=int, default=1_000)
    parser.add_argument("--spread", type=float, default=0.25)
    parser.add_argument("--projection-dim", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    start = time.perf_counter()
    features = clustered_features(args.n, args.dim, clusters=args.clusters, spread=args.spread,
                                  seed=args.seed)
    generate_seconds = time.perf_counter() - start
    input_rss = peak_rss_mb()
    print(f"input generated in {generate_seconds:.0f} s, peak RSS {input_rss:.0f} MB", flush=True)

    size = coreset_size(args.n, args.ratio)
    start = time.perf_counter()
    indices = greedy_coreset(features, size, seed=args.seed, projection_dim=args.projection_dim)
    coreset_seconds = time.perf_counter() - start

    row = {"n": args.n, "dim": args.dim, "ratio": args.ratio, "coreset_size": size,
           "projection_dim": args.projection_dim, "threads": args.threads,
           "input_gb": round(features.numel() * 4 / 1e9, 2), "generate_seconds": round(generate_seconds, 1),
           "coreset_seconds": round(coreset_seconds, 1), "peak_rss_mb_after_input": round(input_rss),
           "peak_rss_mb": round(peak_rss_mb()), "unique_indices": int(indices.unique().numel())}
    print(json.dumps(row))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "a") as f:
        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
