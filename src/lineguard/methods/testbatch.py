"""Test-batch detection: find the defective images of an unlabeled batch with no normal set at all.

Letters: N images, L patches per image (of one level), D their dimension, K look-alike images, m rows an image
offers as a reference.

In a batch from a line normal patterns recur while a given defect is rare. But a normal pattern recurs only in
the images that show the part the same way: a part lying at any rotation shows a given patch of its thread in
the few images that share its pose, a surface lit in one of several set-ups shows its lit texture in the images
of that set-up. A reference seeded from a few images and grown with patches that recur as well as the median
patch, or MuSc's demand that a patch recur in 30 % of all images, takes those for defects: on posed parts both
fell to chance. So every image is compared with the images that look like it:

1. **Look-alikes**: each image's ``look_alikes`` closest other images by overall look
   (:func:`lineguard.scoring.batch.look_alikes`: the last level pooled to ``cells`` × ``cells`` cells, a
   chamfer distance that ignores where a part lies but not how it is turned or lit).
2. **Recurrence among them**: each patch's distance to the nearest patch of each look-alike, through that
   image's k-center coreset of ``reference_ratio`` of its patches (most of an image's patches repeat one
   another); the patch score is the mean of its ``match_images`` smallest distances, so a pattern is normal
   when several look-alikes show it, and a defect that recurs in one or two of them still stands out. Per
   LNAMD radius and level, maps averaged. An image is never its own reference.
3. **Image score**: the mean of the ``top_k`` highest patch scores less the mean of all the image's patch
   scores (``above_own_mean``), optionally steadied over similar images (RsCIN re-scoring,
   ``rescore_k``). An image whose look is rare in the batch (a lighting or a pose few others share) has every
   patch far from its look-alikes; a defect raises only its own patches.

The backbone runs once per image; the scoring costs N · K · L · m per view, about (K / N) · ``reference_ratio``
of mutual scoring's N² · L².
"""

from __future__ import annotations

import torch
from torch import Tensor

from lineguard.errors import ParameterError
from lineguard.features.lnamd import as_patch_rows, lnamd
from lineguard.memory.coreset import coreset_size, image_coresets
from lineguard.methods.base import Prediction, register
from lineguard.methods.zero_data import ZeroDataDetector
from lineguard.params import FRACTION, POSITIVE, Each, Interval
from lineguard.scoring.batch import closest_mean, look_alikes, nearest_in_look_alikes
from lineguard.scoring.image import top_k_mean
from lineguard.scoring.maps import combine_views


@register
class BatchLookAlikes(ZeroDataDetector):
    """Parameters (defaults and why):

    - ``radii`` LNAMD radii, None: (1, 3, 5) — thin to several-cell defects, each scored on its own;
    - ``look_alikes`` 64 images per image: enough that the few sharing a part's pose or lighting are among
      them in a batch of a few hundred; with ``reference_ratio`` a query meets 8 images' worth of rows, a 25th
      of comparing every patch with all 200 images of a batch;
    - ``cells`` 8: the look-alikes are found on an 8 × 8 grid of the last level, coarse enough that a defect
      moves an image's look little, fine enough to tell how a part is turned;
    - ``reference_ratio`` 0.125 of an image's patches (a k-center coreset) stand for it as a reference: a
      plain background or a uniform surface repeats, so an eighth keeps the patterns. The rows per query are
      spread over more look-alikes rather than denser references: against 32 look-alikes × a quarter (the
      same work), 200-image batches, 5 draws, 5 / 10 / 20 % defective, Magnetic Tile 0.798 / 0.829 / 0.795 →
      0.803 / 0.841 / 0.804, posed parts +0.002 to +0.003, bottle 1.000 both, at up to 0.009 of Magnetic
      Tile's pixel AUROC; a sixteenth lost 0.002–0.006 on the posed parts' fine thread;
    - ``match_images`` 5 look-alikes averaged per patch score: a normal pattern recurs in most look-alikes,
      a defect in one or two (MuSc's 30 %, here of the look-alikes: 1 let recurring defects hide on a
      Magnetic Tile batch with 20 % defects, 8 cost the batches with 5 %);
    - ``top_k`` 3 highest patch scores averaged per image — one noisy cell does not decide, a small defect
      covering a few of 32 × 32 cells does;
    - ``above_own_mean`` True: the image score is measured from the mean of the image's own patch scores (maps
      keep the absolute ones). 200-image batches, 5 draws, 5 / 10 / 20 % defective: Magnetic Tile +0.014 /
      +0.007 / +0.004, posed parts +0.001 / +0.003 / +0.004, bottle unchanged (1.000); the lower quartile
      instead (few-shot's baseline) gained 0.002–0.005 more on Magnetic Tile but lost 0.001 on posed parts;
    - ``rescore_k`` None: no re-scoring ([1, 2, 3] is RsCIN's setting) — the look-alikes already compare
      an image with its kind, and averaging a score with its similar images lowered posed parts by 0.06;
    - ``sigma`` 0 px: no map blur, as MuSc — the 32 × 32 grid upsampled bilinearly is smooth already.
    """

    name = "testbatch"
    parameter_constraints = {"look_alikes": [POSITIVE], "cells": [POSITIVE], "reference_ratio": [FRACTION],
                             "match_images": [POSITIVE], "top_k": [POSITIVE], "rescore_k": [Each(POSITIVE)],
                             "radii": [Each(Interval(int, 1, None, odd=True))]}

    def __init__(self, *, backbone: str = "effnet-lite0", levels: list[int] | None = None,
                 image_size: int | tuple[int, int] = 256,
                 radii: list[int] | None = None, look_alikes: int = 64, cells: int = 8,
                 reference_ratio: float = 0.125, match_images: int = 5, top_k: int = 3,
                 above_own_mean: bool = True, rescore_k: list[int] | None = None, sigma: float = 0.0,
                 weights: str | None = None, device: str = "cpu", batch_size: int = 16):
        self.backbone = backbone
        self.levels = levels
        self.image_size = image_size
        self.radii = radii
        self.look_alikes = look_alikes
        self.cells = cells
        self.reference_ratio = reference_ratio
        self.match_images = match_images
        self.top_k = top_k
        self.above_own_mean = above_own_mean
        self.rescore_k = rescore_k
        self.sigma = sigma
        self.weights = weights
        self.device = device
        self.batch_size = batch_size

    @property
    def rescore_list(self) -> tuple[int, ...]:
        return tuple(self.rescore_k or ())

    def predict_levels(self, levels: list[Tensor]) -> Prediction:
        self.validate_params()  # also here: benchmarks score cached levels without predict()
        n = len(levels[0])
        if n < 2:
            raise ParameterError(f"testbatch needs at least 2 images in the batch, got {n}")
        neighbours = look_alikes(levels[-1], self.look_alikes, self.cells)  # (N, K)
        view_scores = []
        for level_views in lnamd(levels, self.radius_list):
            rows = [as_patch_rows(v) for v in level_views]  # R × (N, L, D_r)
            kept = image_coresets(torch.cat(rows, dim=2), coreset_size(rows[0].shape[1], self.reference_ratio))
            view_scores.append([self.patch_scores(r, neighbours, kept).view(n, *v.shape[-2:])
                                for r, v in zip(rows, level_views, strict=True)])
        grid = combine_views(view_scores)  # (N, h, w)
        scores = top_k_mean(grid, self.top_k)
        if self.above_own_mean:
            scores = scores - grid.flatten(1).mean(1)
        return self.finish(grid, scores, levels)

    def patch_scores(self, rows: Tensor, neighbours: Tensor, kept: Tensor) -> Tensor:
        """(N, L, D) patches -> (N, L): mean distance to the ``match_images`` closest look-alikes."""
        return closest_mean(nearest_in_look_alikes(rows, neighbours, kept), self.match_images)  # (N, L, K) -> (N, L)
