"""``lineguard train-encoder``: the category-agnostic Siamese encoder for few-shot detection."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lineguard.cli.app import app, console, out, report_failures
from lineguard.cli.options import DEFAULT_BACKBONE, BackboneOpt, BatchSizeOpt, SeedOpt, ShotsOpt, WeightsOpt


@app.command("train-encoder")
def train_encoder_command(
        data: Annotated[list[Path], typer.Option(help="Dataset folder of one category (repeat for several).")],
        out_dir: Annotated[Path, typer.Option("--out", help="Encoder folder to write (then: fewshot "
                                                            "--param encoder=FOLDER).")],
        backbone: BackboneOpt = None, image_size: Annotated[int, typer.Option(help="Working resolution.")] = 256,
        weights: WeightsOpt = None, epochs: int = 10, lr: float = 0.05, batch_size: BatchSizeOpt = 16,
        seed: SeedOpt = 0,
        device: Annotated[str, typer.Option(help="cpu, cuda, or auto (CUDA when present).")] = "auto",
        resume: Annotated[bool, typer.Option(help="Continue the interrupted run in OUT/checkpoint.")] = False,
        shots: ShotsOpt = None,
        brightness_delta: Annotated[float, typer.Option(help="The second image of a pair is lit by a factor in "
                                                             "[1 − delta, 1 + delta].")] = 0.1) -> None:
    """Train the Siamese category-agnostic encoder on the good images of several categories (checkpointed
    every epoch in OUT/checkpoint), for few-shot detection on categories it has not seen."""
    from lineguard.evaluation import select_support
    from lineguard.io.datasets import load_dataset
    from lineguard.io.images import load_batch
    from lineguard.methods.siamese import EncoderConfig, save_encoder, train_encoder

    config = EncoderConfig(backbone=backbone or DEFAULT_BACKBONE, image_size=image_size,
                           weights=str(weights) if weights else None)
    categories = []
    for folder in data:
        images, loaded, failed = load_batch(select_support(load_dataset(folder), shots, seed), size=image_size)
        report_failures(failed)
        console.print(f"{folder}: {len(loaded)} good images")
        categories.append(images)
    encoder = train_encoder(categories, config, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
                            brightness_delta=brightness_delta, checkpoint_dir=out_dir / "checkpoint", resume=resume,
                            device=device)
    save_encoder(encoder, out_dir)
    out.print(f"encoder trained on {len(data)} categories; saved to {out_dir}")
