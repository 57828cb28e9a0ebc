"""A tiny open_clip CLIP built from a config dict (two layers, width 64, random weights; no download), and
small labelled synthetic datasets (images, masks, labels) to learn prompts on."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from functools import cache
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from lineguard.backbones.vit import open_clip_model
from lineguard.training import seeded

from lineguard.prompts.training import LabelledImages
from lineguard.synthetic import make_batch
from tests.conftest import to_tensor

TINY_CLIP = {"embed_dim": 32,
             "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
             "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}}


@cache
def tiny_weights() -> str:
    """A file of seeded random weights for TINY_CLIP, so that every detector built on it is the same model."""
    folder = Path(tempfile.mkdtemp(prefix="lineguard-tiny-clip-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    with seeded(0):
        model = open_clip_model(TINY_CLIP)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "clip.safetensors"))
    return str(folder / "clip.safetensors")


def tiny(**params) -> dict:
    """Detector parameters for a CLIP method on the tiny model (64 px: a 4 × 4 patch grid)."""
    return {"clip_config": TINY_CLIP, "weights": tiny_weights(), "image_size": 64, **params}


def labelled(kind: str, size: int, seed: int, n: int = 8) -> LabelledImages:
    """``n`` good then ``n`` defective synthetic images of ``kind``, as uint8 with masks and labels."""
    items = make_batch(n, n, kind=kind, size=size, seed=seed)
    images = (to_tensor(items) * 255).round().to(torch.uint8)
    masks = torch.from_numpy(np.stack([it.mask for it in items]))
    labels = torch.tensor([int(it.defect != "good") for it in items])
    return LabelledImages(images, masks, labels, [f"synthetic {kind}"])


def interrupt_after_epoch(monkeypatch, epoch: int) -> None:
    """Make the shared training loop stop (as on Ctrl-C) right after writing the checkpoint of ``epoch``."""
    import lineguard.training as training

    save = training.save_checkpoint

    def save_then_stop(folder, model, optimizer, generator, identity, losses, device):
        save(folder, model, optimizer, generator, identity, losses, device)
        if len(losses) == epoch:
            raise KeyboardInterrupt

    monkeypatch.setattr(training, "save_checkpoint", save_then_stop)
