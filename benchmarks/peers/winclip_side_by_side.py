#!/usr/bin/env python
"""lineguard's WinCLIP against anomalib's on the same open_clip weights and images: scores and maps.

No pretrained CLIP weights exist here, so both tools get the same *seeded random* weights of WinCLIP's own
architecture (open_clip ``ViT-B-16-plus-240``, the whole model), the same images (synthetic parts, 240 px)
and anomalib's prompt templates (lineguard's default list differs: see ``prompts/ensemble.py``). anomalib
2.7.0 runs in its anchor venv with the open_clip it supports (2.24; ``pip install "open-clip-torch<2.26.1"``
there), lineguard with this environment's (3.3). Zero-shot and few-shot (K = 2 references) are compared.

    python benchmarks/peers/winclip_side_by_side.py prepare /tmp/winclip          # weights, images
    /tmp/venv-anomalib/bin/python benchmarks/peers/winclip_side_by_side.py anomalib /tmp/winclip
    python benchmarks/peers/winclip_side_by_side.py compare /tmp/winclip \\
        --out benchmarks/results/zero_shot/winclip_anomalib.md

The ``anomalib`` step imports nothing from lineguard.
"""

import argparse
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

ARCH = "ViT-B-16-plus-240"
SIZE = 240
CLASS_NAME = "object"
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
REFERENCES = 2


def prepare(folder: Path, seed: int) -> None:
    import numpy as np
    import open_clip

    from lineguard.synthetic import make_batch

    torch.manual_seed(seed)
    model = open_clip.CLIP(**open_clip.get_model_config(ARCH))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "clip.safetensors"))
    items = make_batch(REFERENCES + 4, 4, kind="part", size=SIZE, seed=seed)
    images = torch.from_numpy(np.stack([it.image for it in items])).permute(0, 3, 1, 2).float() / 255
    save_file({"references": images[:REFERENCES].contiguous(), "test": images[REFERENCES:].contiguous()},
              str(folder / "images.safetensors"))


def run_anomalib(folder: Path) -> None:
    from anomalib.models.image.winclip import prompting, torch_model

    torch_model.PRETRAINED = None  # no download: the weights come from the prepared file
    images = load_file(str(folder / "images.safetensors"))
    mean, std = torch.tensor(OPENAI_MEAN).view(1, 3, 1, 1), torch.tensor(OPENAI_STD).view(1, 3, 1, 1)
    normalized = {k: (v - mean) / std for k, v in images.items()}
    results = {}
    for mode, references in (("zero-shot", None), ("few-shot", normalized["references"])):
        model = torch_model.WinClipModel()
        model.clip.load_state_dict(load_file(str(folder / "clip.safetensors")))
        model.setup(CLASS_NAME, references)
        model.eval()
        out = model(normalized["test"])
        results[f"{mode}.scores"] = out.pred_score.contiguous()
        results[f"{mode}.maps"] = out.anomaly_map.contiguous()
    save_file(results, str(folder / "anomalib.safetensors"))
    (folder / "templates.json").write_text(json.dumps(list(prompting.TEMPLATES)))


def compare(folder: Path, out: Path | None) -> None:
    import lineguard

    images = load_file(str(folder / "images.safetensors"))
    theirs = load_file(str(folder / "anomalib.safetensors"))
    common = {"backbone": "clip-vit-b16-plus-240", "weights": str(folder / "clip.safetensors"),
              "templates": json.loads((folder / "templates.json").read_text()), "class_name": CLASS_NAME,
              "image_size": SIZE}
    rows = []
    runs = (("zero-shot", "winclip", common), ("few-shot", "winclip+", common),
            ("zero-shot", "winclip with its own 22 templates (sensitivity)", {**common, "templates": None}))
    for mode, label, params in runs:
        detector = lineguard.create(label.split()[0], **params)
        if detector.uses_normal_images:
            detector.fit(images["references"])
        ours = detector.predict(images["test"])
        score_diff = (ours.scores - theirs[f"{mode}.scores"]).abs().max().item()
        map_diff = (ours.maps - theirs[f"{mode}.maps"]).abs().max().item()
        rows.append(f"| {mode} ({label}) | {len(ours.scores)} | {score_diff:.2e} | {map_diff:.2e} | "
                    f"{theirs[f'{mode}.scores'].min():.4f} … {theirs[f'{mode}.scores'].max():.4f} |")
    table = "\n".join(["| mode | images | max abs score difference | max abs map difference | anomalib scores |",
                       "|---|---|---|---|---|", *rows])
    print(table)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(f"WinCLIP, lineguard against anomalib 2.7.0 ({ARCH}, seeded random weights, {SIZE} px "
                       f"synthetic parts, anomalib's templates, K = {REFERENCES}); "
                       "`benchmarks/peers/winclip_side_by_side.py`\n\n" + table + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=["prepare", "anomalib", "compare"])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    args.folder.mkdir(parents=True, exist_ok=True)
    if args.step == "prepare":
        prepare(args.folder, args.seed)
    elif args.step == "anomalib":
        run_anomalib(args.folder)
    else:
        compare(args.folder, args.out)


if __name__ == "__main__":
    main()
