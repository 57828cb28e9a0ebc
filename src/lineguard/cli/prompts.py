"""``lineguard train-prompts``: the normal and abnormal prompts of a zero-shot method, learned on labelled
datasets of other categories (then ``predict --method M --param prompts=FOLDER``, no normal images)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lineguard.cli.app import app, console, out, report_failures
from lineguard.cli.options import (BackboneOpt, BatchSizeOpt, ImageSizeOpt, ParamOpt, SeedOpt, TrainingDeviceOpt,
                                   WeightsOpt, build_detector)
from lineguard.errors import ParameterError


@app.command("train-prompts")
def train_prompts_command(
        data: Annotated[list[Path], typer.Option(help="Labelled dataset folder (repeat for several): its test "
                                                      "split's images and masks are learned from.")],
        out_dir: Annotated[Path, typer.Option("--out", help="Prompts folder to write (then: predict --method M "
                                                            "--param prompts=FOLDER).")],
        method: Annotated[str, typer.Option("--method", "-m", help="anomalyclip, or prompts (any backbone).")
                          ] = "anomalyclip",
        backbone: BackboneOpt = None, image_size: ImageSizeOpt = None, weights: WeightsOpt = None,
        param: ParamOpt = None, epochs: int = 15, lr: float = 1e-3, batch_size: BatchSizeOpt = 8,
        local_weight: Annotated[float, typer.Option(help="Weight of the local (map) loss terms against the "
                                                         "global one.")] = 1.0, seed: SeedOpt = 0,
        device: TrainingDeviceOpt = "auto",
        resume: Annotated[bool, typer.Option(help="Continue the interrupted run in OUT/checkpoint.")] = False
        ) -> None:
    """Learn a zero-shot method's normal and abnormal prompts on labelled datasets (checkpointed every epoch
    in OUT/checkpoint), for categories never seen in training."""
    from lineguard.io.datasets import load_dataset
    from lineguard.prompts.detector import PromptDetector, save_prompts
    from lineguard.prompts.training import labelled_images, train_prompts

    detector = build_detector(method, backbone=backbone, image_size=image_size, weights=weights, device=device,
                              seed=None, params=param)
    if not isinstance(detector, PromptDetector):
        raise ParameterError(f"{method} learns no prompts; train-prompts takes anomalyclip or prompts")
    images, failed = labelled_images([load_dataset(folder) for folder in data], detector.image_size)
    report_failures(failed)
    console.print(f"{len(images)} labelled images ({int(images.labels.sum())} defective)")
    run = train_prompts(detector, images, epochs=epochs, lr=lr, batch_size=batch_size, local_weight=local_weight,
                        seed=seed, checkpoint_dir=out_dir / "checkpoint", resume=resume)
    save_prompts(detector, out_dir)
    out.print(f"prompts of {method} learned in {run.seconds:.0f} s (loss {run.losses[0]:.4f} -> "
              f"{run.losses[-1]:.4f}); saved to {out_dir}")
