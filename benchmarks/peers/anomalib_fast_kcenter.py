#!/usr/bin/env python
"""The anomalib anchor (``../shared/anchors/anomalib/run_anomalib.py``, unchanged) with anomalib's k-center
coreset computed to the same bits in a fraction of the time, so its PatchCore can run on Magnetic Tile
(780,288 patches; about 100 min as shipped on this 2-core CPU).

Run it with the anchor venv's python (``setup_venv.sh`` there) and the anchor's arguments:

    python benchmarks/peers/anomalib_fast_kcenter.py --model patchcore --dataset magnetic_tile --out pc_mt.json

Why the picks are anomalib's own: ``KCenterGreedy`` keeps, for every projected row, its distance to the
nearest centre, ``torch.linalg.norm(f - c, dim=1)``, and picks the first row of largest distance.

* Every stored distance is that very expression for one (row, centre) pair, and min() is exact, so the order
  in which centres are applied does not matter. A pair is evaluated only if a GEMM estimate of its squared
  distance (on centred features, with a 1e-4 relative margin, far above float32 error) says it could be
  below the row's current minimum; no other pair can change it.
* Picks are made inside a pool of the 4,096 farthest rows, updated exactly after each pick, while the pool's
  maximum is strictly above the largest distance outside it (stale values only shrink, so they bound it);
  then all rows are brought up to date and the pool is rebuilt. Ties resolve to the first index, as
  ``torch.max`` does.

Checked: on bottle the memory bank's sha256 equals the anchor JSON's (e792ec36…) and so do all metrics;
the coreset took 169 s instead of 463 s.

``--maps-out FILE.npz`` also saves the raw anomaly maps and ground-truth masks the anchor scores (in the
order of its ``.scores.csv``), for ``patchcore_side_by_side.py``.
"""

import sys
import time
import types
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "shared" / "anchors" / "anomalib"))
import run_anomalib  # noqa: E402

POOL = 4096  # rows picked from between full updates
BLOCK = 32768  # rows per GEMM screen


def screen_and_update(F: torch.Tensor, centred: torch.Tensor, sq: torch.Tensor, D: torch.Tensor,
                      centres: list[int]) -> None:
    """Lower D (n,) in place to each row's exact distance to ``centres`` where that is smaller."""
    C = torch.tensor(centres)
    bias = ((1 - 1e-4) * sq[C]).float()[None, :]  # (1, m): (1 − margin)(|x|² + |c|²) − 2 x·c < D² screens
    minus2c = -2 * centred[C].T  # (d, m)
    for s in range(0, len(F), BLOCK):
        e = min(s + BLOCK, len(F))
        limit = (D[s:e].double().pow(2) - (1 - 1e-4) * sq[s:e]).float()[:, None]  # (b, 1)
        pairs = (torch.addmm(bias, centred[s:e], minus2c) < limit).nonzero()
        if len(pairs):
            rows, cols = pairs[:, 0] + s, C[pairs[:, 1]]
            D.scatter_reduce_(0, rows, torch.linalg.norm(F[rows] - F[cols], ord=2, dim=1), reduce="amin")
    D[C] = 0.0


def select_coreset_idxs(self) -> list[int]:
    """Drop-in for ``KCenterGreedy.select_coreset_idxs``: same projection, same random start, same picks."""
    if self.embedding.ndim == 2:
        self.model.fit(self.embedding)
        self.features = self.model.transform(self.embedding)
    else:
        self.features = self.embedding.reshape(self.embedding.shape[0], -1)
    F = self.features.contiguous()
    n, start = len(F), time.perf_counter()
    idx = torch.randint(high=self.n_observations, size=(1,), device=F.device).squeeze()
    centred = (F.double() - F.double().mean(0)).float()
    sq = centred.double().pow(2).sum(1)  # (n,) |x − mean|², float64
    D = torch.linalg.norm(F - F[idx].squeeze(), ord=2, dim=1)  # anomalib's first update
    D[idx] = 0.0
    picks = [int(idx)]
    while len(picks) < self.coreset_size:
        top = torch.topk(D, min(POOL + 1, n)).indices  # D is exact here
        pool = torch.sort(top[:POOL]).values
        outside = float(D[top[POOL]]) if n > POOL else -1.0
        Dp, Fp, centres = D[pool].clone(), F[pool], []
        while len(picks) + len(centres) < self.coreset_size:
            value, j = torch.max(Dp, dim=0)
            if not float(value) > outside:
                break
            centres.append(int(pool[j]))
            Dp = torch.minimum(Dp, torch.linalg.norm(Fp - F[centres[-1]], ord=2, dim=1))
            Dp[j] = 0.0
        if not centres:  # a row outside the pool ties with the pool's maximum: the global first argmax
            centres.append(int(torch.max(D, dim=0)[1]))
        picks += centres
        D[pool] = Dp
        screen_and_update(F, centred, sq, D, centres)
        print(f"k-center: {len(picks)} of {self.coreset_size} after {time.perf_counter() - start:.0f} s",
              file=sys.stderr, flush=True)
    return picks


def use_fast_kcenter() -> None:
    from anomalib.models.components.sampling import k_center_greedy

    k_center_greedy.KCenterGreedy.select_coreset_idxs = select_coreset_idxs


def save_maps_to(path: str) -> None:
    """The anchor hands its raw maps and masks to anomalib's metrics in one ``types.SimpleNamespace``; this
    one also writes them to ``path``."""

    class Saving(types.SimpleNamespace):
        def __init__(self, **fields):
            super().__init__(**fields)
            if "anomaly_map" in fields:
                np.savez(path, maps=fields["anomaly_map"].numpy(), masks=fields["gt_mask"].numpy().astype(bool))

    run_anomalib.types = types.SimpleNamespace(SimpleNamespace=Saving)


run_anomalib.use_chunked_kcenter = use_fast_kcenter  # what --kcenter chunked (the default) switches on
if __name__ == "__main__":
    if "--maps-out" in sys.argv:
        at = sys.argv.index("--maps-out")
        save_maps_to(sys.argv[at + 1])
        del sys.argv[at:at + 2]
    run_anomalib.main()
