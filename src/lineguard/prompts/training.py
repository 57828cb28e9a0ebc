"""Learning prompts on labelled images with masks, through the training loop every trained method shares.

The image encoder is frozen, so its features are computed once and kept when they fit in
``FEATURE_CACHE_BYTES`` (a backbone at 256 px: under 1 MB an image); otherwise (CLIP at 518 px, 4 layers:
about 16 MB an image) each batch is encoded again under ``no_grad``, as AnomalyCLIP trains. Only the learner
gets gradients; Adam with AnomalyCLIP's β = (0.5, 0.999). Seeds, checkpoints after every epoch and exact
resumption come from :func:`lineguard.training.train`.

Letters: N training images, B batch, L layers, D embedding width, h × w grid, S image size.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from lineguard.evaluation import load_masks
from lineguard.io.datasets import Dataset, DatasetError
from lineguard.io.images import load_batch
from lineguard.progress import track
from lineguard.prompts.detector import PromptDetector
from lineguard.prompts.glocal import class_logits, glocal_loss, patch_probabilities
from lineguard.training import TrainingRun, resolve_device, seeded, train

FEATURE_CACHE_BYTES = 2 * 2**30  # keep every image's frozen features in memory up to this much
ADAM_BETAS = (0.5, 0.999)  # AnomalyCLIP's


@dataclass
class LabelledImages:
    """Training images with their ground truth: defects with masks, good images all-normal."""

    images: Tensor  # (N, 3, S, S) uint8
    masks: Tensor  # (N, S, S) bool
    labels: Tensor  # (N,) 0 good, 1 defective
    sources: list[str]  # the datasets they came from, for the record

    def __len__(self) -> int:
        return len(self.labels)


def labelled_images(datasets: Sequence[Dataset], size: int) -> tuple[LabelledImages, list[tuple[Path, str]]]:
    """The labelled test splits of ``datasets`` at ``size`` (unlabelled images are left out), and the files
    that could not be read."""
    images, masks, labels, failed = [], [], [], []
    for dataset in datasets:
        samples = [s for s in dataset.test if s.label >= 0]
        if not samples:
            raise DatasetError(f"{dataset.root}: no labelled test images to learn prompts from")
        batch, loaded, bad = load_batch([s.path for s in samples], size=size)
        by_path = {s.path: s for s in samples}
        kept = [by_path[p] for p in loaded]
        images.append((batch * 255).round().to(torch.uint8))
        masks.append(load_masks(kept, size, dataset.mask_threshold))
        labels.append(torch.tensor([s.label for s in kept]))
        failed += bad
    data = LabelledImages(torch.cat(images), torch.cat(masks), torch.cat(labels),
                          [str(d.root) for d in datasets])
    return data, failed


class FrozenFeatures:
    """``encode`` of image rows, from memory when every image's features fit in ``budget`` bytes."""

    def __init__(self, encode: Callable[[Tensor], tuple[Tensor, Tensor]], images: Tensor, device: torch.device,
                 batch_size: int, budget: int = FEATURE_CACHE_BYTES):
        self.encode, self.images, self.device = encode, images, device
        first = self._encode(torch.arange(min(batch_size, len(images))))
        per_image = sum(t[0].numel() * t.element_size() for t in first)
        self.cache: tuple[Tensor, Tensor] | None = None
        if per_image * len(images) <= budget:
            parts = [first] + [self._encode(rows) for rows in track(
                torch.arange(len(first[0]), len(images)).split(batch_size), "prompts: frozen features")]
            self.cache = (torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]))

    @torch.no_grad()
    def _encode(self, rows: Tensor) -> tuple[Tensor, Tensor]:
        return self.encode(self.images[rows].to(self.device).float() / 255)

    def __call__(self, rows: Tensor) -> tuple[Tensor, Tensor]:
        """(B,) rows -> global (B, D) and patch (B, L, D, h, w) features on the device."""
        if self.cache is None:
            return self._encode(rows)
        return self.cache[0][rows.to(self.cache[0].device)], self.cache[1][rows.to(self.cache[1].device)]


def train_prompts(detector: PromptDetector, data: LabelledImages, *, epochs: int = 15, lr: float = 1e-3,
                  batch_size: int = 8, local_weight: float = 1.0, seed: int = 0,
                  checkpoint_dir: str | Path | None = None, resume: bool = False) -> TrainingRun:
    """Learn ``detector``'s prompts on ``data`` with the glocal loss; the detector keeps them (then
    :func:`~lineguard.prompts.detector.save_prompts`). ``local_weight`` scales the local terms against the
    global one (1: the paper's plain sum)."""
    detector.validate_params()
    if len(data) < 1 or data.labels.unique().numel() < 2:
        raise DatasetError(f"learning prompts needs good and defective images, got labels "
                         f"{sorted(set(data.labels.tolist()))}")
    device = resolve_device(detector.device)
    features = FrozenFeatures(detector.encode, data.images, device, batch_size)
    with seeded(seed, device):
        learner = detector.new_learner()
    learner = learner.to(device)
    optimizer = torch.optim.Adam(learner.parameters(), lr=lr, betas=ADAM_BETAS)
    masks, labels = data.masks.to(device), data.labels.to(device)

    def loss(rows: Tensor, generator: torch.Generator) -> Tensor:
        image_features, patches = features(rows)
        texts = detector.embeddings(learner)  # (2, D)
        return glocal_loss(class_logits(image_features, texts), labels[rows], patch_probabilities(patches, texts),
                           masks[rows], local_weight)

    run = train(learner, optimizer, loss, torch.arange(len(data)), epochs=epochs, batch_size=batch_size,
                seed=seed, checkpoint_dir=checkpoint_dir, resume=resume,
                fingerprint={"method": detector.name, "signature": detector.signature(), "lr": lr,
                             "local_weight": local_weight, "image_size": detector.image_size,
                             "sources": data.sources}, description=f"{detector.name} prompts")
    detector.keep_prompts(learner, {"trained_on": data.sources, "images": len(data),
                                    "image_size": detector.image_size, "epochs": epochs, "lr": lr,
                                    "local_weight": local_weight, "seed": seed, "losses": run.losses,
                                    "seconds": round(run.seconds, 1)})
    return run
