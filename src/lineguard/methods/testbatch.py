"""Test-batch coreset learning: find the defective images of an unlabeled batch with no normal set at all.

Letters: N images, L patches per image (of one level), D their dimension, R radii, M coreset size,
K candidate patches, S judging images.

In a batch from a line, normal patterns recur in many images while a given defect is rare. Mutual scoring
(``mutual``) uses that by comparing every patch with every other image — N² work. Here the batch instead
*learns a small reference* (a coreset of its own patches) and every patch is compared with that:

1. **Initialisation by stepwise down-sampling**: first ``sample_size`` images spread over the batch, then their
   pooled patches less those that recur least among the sampled images, then a greedy k-center coreset of the
   rest (``coreset_ratio``). k-center keeps rare patterns, which is what a reference needs — but it also picks
   defects first, since they are the farthest points; hence the filter before it and the rounds after it.
2. **Learning rounds** (at most ``rounds``). A patch's *reach* is the distance within which it finds a match
   in ``support_fraction`` of the other images: small for a pattern that recurs, large for a rare one. The
   reach of random patches (mostly normal) up to its ``1 − exclusion_fraction`` quantile is the bound for
   "normal"; it depends on the batch only, so it is measured once. Each round scores the patches of
   ``support_images`` judging images against the coreset, then
   * keeps out coreset patches whose reach exceeds the bound: a defect recurs in few images, so the defects
     k-center picked leave the reference (else a defect seen in two images would hide in both);
   * grows the coreset with judged patches that are far from it (the top ``exclusion_fraction`` of the
     round's scores) yet recur at least as well as a typical patch (reach within the ``grow_quantile`` of the
     random patches' reaches): normal variation the first sample missed. The bar to join is higher than the
     bar to stay, because one defect patch let in hides every similar defect of the batch.
   Learning stops when fewer than ``tolerance`` of the coreset would change. Rounds and reaches look at the
   judging images only, so their cost does not grow with N.
3. **Scoring**: a patch scores its mean distance to the ``k_images`` closest *other* images, each through its
   nearest coreset patch (an image is never its own reference), per LNAMD radius and level, maps averaged;
   the image score is the mean of its ``top_k`` highest patch scores, then steadied over its most similar
   batch images (RsCIN re-scoring). On textured surfaces ``baseline_quantile`` helps: the image score is then
   measured from the image's own low-quantile patch score, since a normal look the batch shows rarely (one of
   several lightings) raises every patch of an image, a defect only its own.

The cost is one pass of N · L · M plus rounds over S images, instead of N² · L²; the backbone runs once per
image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from lineguard.features.lnamd import as_patch_rows, lnamd
from lineguard.memory.coreset import coreset_size, greedy_coreset
from lineguard.methods.base import Prediction, register
from lineguard.methods.zero_data import ZeroDataDetector
from lineguard.scoring.batch import match_bank, nearest_images, nearest_in_each_image
from lineguard.scoring.image import above_baseline, check_baseline_quantile, top_k_mean
from lineguard.scoring.maps import combine_views


@dataclass(frozen=True)
class Round:
    """What one learning round saw and did, for one level (``BatchCoreset.history``)."""

    level: int
    size: int  # coreset size scored in this round
    reach: float  # how far a patch may need to reach to recur and still count as normal
    removed: int
    added: int


def spread_sample(n: int, count: int, generator: torch.Generator) -> Tensor:
    """``count`` of ``range(n)``, one random index in each of ``count`` equal strata: spread over the batch
    order (a line's time order) yet not tied to a fixed stride."""
    starts = torch.arange(count) * n // count
    ends = (torch.arange(count) + 1) * n // count
    return starts + (torch.rand(count, generator=generator) * (ends - starts)).long()


def recurrence_radius(distances: Tensor, fraction: float) -> Tensor:
    """(K, J) distances of K patches to the nearest patch of J images (+inf: the patch's own image) -> (K,):
    the distance within which a patch finds a match in ``fraction`` of the other images (at least one).

    Small for a pattern that recurs across the batch, large for one that is rare — a defect."""
    others = torch.isfinite(distances).sum(1, keepdim=True)  # (K, 1)
    need = (others * fraction).ceil().clamp(1, distances.shape[1]).long()
    return distances.sort(dim=1).values.gather(1, need - 1)[:, 0]


@register
class BatchCoreset(ZeroDataDetector):
    """Parameters (defaults and why):

    - ``radii`` LNAMD radii, None: (1, 3, 5) — thin to several-cell defects, each scored on its own;
    - ``sample_size`` 16 images seed the coreset — enough to cover a part's common views, small enough that
      the first k-center stays cheap; the rounds add what they miss;
    - ``coreset_ratio`` 0.1 of the sample's patches — PatchCore's ratio, coverage within a few percent;
    - ``rounds`` 3 updates at most — the coreset settles in one or two on real batches;
    - ``exclusion_fraction`` 0.1 of patch reaches and scores count as anomalous-looking — above the share of
      defect area in a batch even when most images are defective (0.2 lost 0.02 image AUROC on Magnetic Tile);
    - ``support_fraction`` 0.3 of the other images must show a pattern for it to count as normal — MuSc's
      30 %: a defect type may recur in up to that share of images and still stay anomalous;
    - ``grow_quantile`` 0.5: a candidate joins only if it recurs as well as the median random patch;
    - ``support_images`` 32 images judge each candidate — a fraction estimated from 32 is within ±0.15, and
      the cost stays independent of N;
    - ``max_candidates`` 2048 far patches judged per round — bounds a round's cost; the rest wait a round;
    - ``tolerance`` 0.01: stop when under 1 % of the coreset would change;
    - ``k_images`` 3 other images averaged per patch score, each by its nearest coreset patch — a defect that
      slipped into the reference, or recurs in one other image, is matched once, not 3 times, while normal
      patterns recur in many images (1 is the plain nearest neighbour). Counting images, not coreset patches
      (which may all come from one image) raised Magnetic Tile image AUROC from 0.733 to 0.741 on the whole
      set and by 0.002–0.006 in batches of 50–400, bottle within 0.001;
    - ``top_k`` 3 highest patch scores averaged per image ("max-N") — one noisy cell does not decide, yet a
      small defect covering a few of 32 × 32 cells does (10 and 40 lost image AUROC on Magnetic Tile);
    - ``baseline_quantile`` None (off): else the image score less that quantile of the image's own patch
      scores (``scoring.image.above_baseline``). At 0.1 (session 4), +0.015 image AUROC on Magnetic Tile
      (0.733 → 0.748, each of 3 seeds) and within 0.001 on bottle, but on synthetic parts on a plain
      background (6 batches) 0.90 against 0.95: there the low quantile is background, and its noise enters the
      image score;
    - ``rescore_k`` None: (1, 2, 3) neighbour counts of the image re-scoring ([] turns it off);
    - ``sigma`` 0 px: no map blur, as MuSc — the 32 × 32 grid upsampled bilinearly is smooth already, and
      4 px (PatchCore's) lowered AUPRO on both benchmark sets (whole test set: bottle 0.953 → 0.949, Magnetic
      Tile 0.673 → 0.670; image scores do not depend on it); ``seed`` for the image samples and k-center starts.
    """

    name = "testbatch"

    def __init__(self, *, backbone: str = "effnet-lite0", levels: list[int] | None = None, image_size: int = 256,
                 radii: list[int] | None = None, sample_size: int = 16, coreset_ratio: float = 0.1,
                 rounds: int = 3, exclusion_fraction: float = 0.1, support_fraction: float = 0.3,
                 grow_quantile: float = 0.5, support_images: int = 32, max_candidates: int = 2048,
                 tolerance: float = 0.01, k_images: int = 3, top_k: int = 3,
                 baseline_quantile: float | None = None, rescore_k: list[int] | None = None, sigma: float = 0.0,
                 seed: int = 0,
                 weights: str | None = None, device: str = "cpu", batch_size: int = 16):
        self.backbone = backbone
        self.levels = levels
        self.image_size = image_size
        self.radii = radii
        self.sample_size = sample_size
        self.coreset_ratio = coreset_ratio
        self.rounds = rounds
        self.exclusion_fraction = exclusion_fraction
        self.support_fraction = support_fraction
        self.grow_quantile = grow_quantile
        self.support_images = support_images
        self.max_candidates = max_candidates
        self.tolerance = tolerance
        self.k_images = k_images
        self.top_k = top_k
        self.baseline_quantile = baseline_quantile
        self.rescore_k = rescore_k
        self.sigma = sigma
        self.seed = seed
        self.weights = weights
        self.device = device
        self.batch_size = batch_size
        self.history: list[Round] = []  # the learning rounds of the last predict, for inspection

    def check_params(self) -> None:
        for name in ("coreset_ratio", "exclusion_fraction", "support_fraction", "grow_quantile"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in (0, 1], got {getattr(self, name)}")
        for name in ("support_images", "max_candidates", "k_images", "top_k"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.sample_size < 2:  # an image is never its own reference: the first coreset needs two images
            raise ValueError(f"sample_size must be at least 2, got {self.sample_size}")
        check_baseline_quantile(self.baseline_quantile)
        if self.rounds < 0 or self.tolerance < 0:
            raise ValueError(f"rounds and tolerance must be non-negative, got {self.rounds}, {self.tolerance}")

    def predict_levels(self, levels: list[Tensor]) -> Prediction:
        self.check_params()
        n = len(levels[0])
        if n < 2:
            raise ValueError(f"testbatch needs at least 2 images in the batch, got {n}")
        generator = torch.Generator().manual_seed(self.seed)
        self.history = []
        view_scores = []
        for index, level_views in enumerate(lnamd(levels, self.radius_list)):
            scores = self.learn(index, [as_patch_rows(v) for v in level_views], generator)  # R × (N, L)
            view_scores.append([s.view(n, *v.shape[-2:]) for s, v in zip(scores, level_views, strict=True)])
        grid = combine_views(view_scores)  # (N, h, w)
        image_scores = top_k_mean(grid, self.top_k)
        if self.baseline_quantile is not None:
            image_scores = above_baseline(image_scores, grid.flatten(1), self.baseline_quantile)
        return self.finish(grid, image_scores, levels)

    def learn(self, level: int, rows: list[Tensor], generator: torch.Generator) -> list[Tensor]:
        """Coreset learning on one level's R views (N, L, D_r); returns the final patch scores, R × (N, L)."""
        n, patches, _ = rows[0].shape
        flat = [r.reshape(n * patches, -1) for r in rows]  # R × (N * L, D)
        owner = torch.arange(n).repeat_interleave(patches)  # (N * L,) image of each patch
        coreset = self.initial_coreset(flat, n, patches, generator)  # (M,) indices into N * L
        judges = Judges(rows, flat, owner, spread_sample(n, min(n, self.support_images), generator),
                        self.support_fraction)
        # how far typical patches must reach to recur: the bound for "normal" (random patches: mostly normal)
        typical = judges.reach(torch.randperm(n * patches, generator=generator)[:self.max_candidates])
        normal_reach = quantile(typical, 1 - self.exclusion_fraction)
        grow_reach = quantile(typical, self.grow_quantile)
        for _ in range(self.rounds):
            # the rounds look at the judging images only: their cost does not grow with N
            matched = [match_bank(r, f[coreset], judges.position[owner[coreset]])
                       for r, f in zip(judges.rows, flat, strict=True)]
            scores = torch.stack([m[0] for m in matched]).mean(0).flatten()  # (S * L,)
            keep = recurrence_radius(torch.stack([m[1] for m in matched]).mean(0), self.support_fraction)
            keep = keep <= normal_reach
            far = judges.patches[scores > quantile(scores, 1 - self.exclusion_fraction)]
            far = far[~torch.isin(far, coreset)]
            far = far[torch.randperm(len(far), generator=generator)[:self.max_candidates]]
            added = far[judges.reach(far) <= grow_reach]
            removed = int((~keep).sum())
            self.history.append(Round(level, len(coreset), normal_reach, removed, len(added)))
            if removed + len(added) <= self.tolerance * len(coreset) or int(keep.sum()) + len(added) == 0:
                break
            coreset = torch.cat([coreset[keep], added])
        return [nearest_images(r, f[coreset], owner[coreset], self.k_images) for r, f in zip(rows, flat, strict=True)]

    def initial_coreset(self, flat: list[Tensor], n: int, patches: int, generator: torch.Generator) -> Tensor:
        """Stepwise down-sampling: images spread over the batch; their patches that do not recur among the
        sampled images are dropped; a k-center coreset (all radii jointly) of the rest."""
        chosen = spread_sample(n, min(n, self.sample_size), generator)  # (r,)
        pool = (chosen[:, None] * patches + torch.arange(patches)).flatten()  # (r * L,)
        nearest = torch.stack([nearest_in_each_image(f[pool].view(len(chosen), patches, -1))
                               for f in flat]).mean(0)  # (r, L, r)
        reach = recurrence_radius(nearest.view(len(pool), -1), self.support_fraction)  # (r * L,)
        pool = pool[reach <= quantile(reach, 1 - self.exclusion_fraction)]
        joint = torch.cat([f[pool] for f in flat], dim=1)  # (r' * L, R * D)
        seed = int(torch.randint(2**31 - 1, (1,), generator=generator))
        picked = greedy_coreset(joint, coreset_size(len(pool), self.coreset_ratio), seed=seed, progress=False)
        return pool[picked]


class Judges:
    """A fixed set of S images against which a patch's recurrence is measured (the cost does not grow
    with N); a patch is never judged by its own image."""

    def __init__(self, rows: list[Tensor], flat: list[Tensor], owner: Tensor, images: Tensor, fraction: float):
        self.rows = [r[images] for r in rows]  # R × (S, L, D)
        self.flat = flat
        self.owner = owner
        self.images = images
        self.fraction = fraction
        self.position = torch.full((len(rows[0]),), -1, dtype=torch.long)
        self.position[images] = torch.arange(len(images))  # a patch's own image, if it judges, is skipped
        patches = rows[0].shape[1]
        self.patches = (images[:, None] * patches + torch.arange(patches)).flatten()  # (S * L,) into N * L

    def reach(self, patches: Tensor) -> Tensor:
        """(K,) patch indices into N * L -> (K,) recurrence radius over the judging images (mean of radii)."""
        if len(patches) == 0:
            return torch.empty(0)
        distances = torch.stack([match_bank(r, f[patches], self.position[self.owner[patches]], directions="bank")[1]
                                 for r, f in zip(self.rows, self.flat, strict=True)]).mean(0)  # (K, S)
        return recurrence_radius(distances, self.fraction)


def quantile(values: Tensor, q: float) -> float:
    """The ``q`` quantile of a 1-D tensor (lower value; torch.quantile caps the input size)."""
    return float(values.kthvalue(max(1, min(len(values), math.ceil(len(values) * q)))).values)
