"""Options shared by several commands, and how ``--param`` and the common options become a detector.

Method parameters are not re-declared here: ``--param KEY=VALUE`` is checked against the method's own
constructor (``lineguard methods`` lists them), so no flag can go dead when a method changes. Common settings
(backbone, image size, weights, device, seed) are passed only to methods that take them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from lineguard.errors import ParameterError
from lineguard.scoring.threshold import RULES

DEFAULT_BACKBONE = "effnet-lite0"


def _at_least_one(value: int) -> int:
    """``--batch-size``: checked as the options are read, before any model is loaded."""
    if value < 1:
        raise ParameterError(f"--batch-size must be at least 1, got {value}")
    return value


def _device(value: str | None) -> str | None:
    """``--device``: a known device that this machine has (cuda only with a GPU). PyTorch is asked only when
    the option is given (predict on an export runs without it)."""
    if value is None:
        return None
    from lineguard.training import resolve_device

    return str(resolve_device(value))


def _runtime(value: str | None) -> str | None:
    """``--runtime``: one that runs exports."""
    from lineguard.export.runtime import RUNTIMES

    if value is not None and value not in RUNTIMES:
        raise ParameterError(f"--runtime must be one of {', '.join(RUNTIMES)}, got {value!r}")
    return value


def _image_size(value: str | None) -> int | tuple[int, int] | None:
    """``--image-size``: S (square) or HxW, whole numbers of at least 1 pixel."""
    if value is None:
        return None
    parts = value.lower().replace(",", "x").split("x")
    if len(parts) > 2 or not all(p.strip().isdigit() and int(p) >= 1 for p in parts):
        raise ParameterError(f"--image-size must be S or HxW in whole pixels of at least 1 (256, 256x512), "
                             f"got {value!r}")
    sizes = [int(p) for p in parts]
    return sizes[0] if len(sizes) == 1 else (sizes[0], sizes[1])


def _positive_mad_factor(value: float) -> float:
    """Checked as the options are read, so a bad value fails before any image is scored."""
    if not value > 0:
        raise ParameterError(f"--mad-factor must be positive, got {value}")
    return value


MethodOpt = Annotated[str, typer.Option("--method", "-m", help="Method name (see `lineguard methods`).")]
BackboneOpt = Annotated[str | None, typer.Option(help=f"Backbone (default: the method's, mostly {DEFAULT_BACKBONE}).")]
ParamOpt = Annotated[list[str] | None, typer.Option("--param", "-p", help="Method parameter KEY=VALUE (repeatable).")]
ImageSizeOpt = Annotated[str | None, typer.Option(callback=_image_size, metavar="S|HxW",
                                                  help="Working resolution in pixels: S (S × S) or HxW, e.g. "
                                                       "256x512 (default 256).")]
KeepAspectOpt = Annotated[bool, typer.Option("--keep-aspect", help="Letterbox: resize each image with its aspect "
                                                                   "ratio kept to fit the working size and pad "
                                                                   "the rest (maps cropped back; saved with the "
                                                                   "model), instead of squashing it.")]
WeightsOpt = Annotated[Path | None, typer.Option(help="Backbone weight file (skips cache and hub).")]
DeviceOpt = Annotated[str | None, typer.Option(callback=_device, help="cpu or cuda.")]
TrainingDeviceOpt = Annotated[str, typer.Option(callback=_device, help="cpu, cuda, or auto (CUDA when present).")]
TileOpt = Annotated[int | None, typer.Option(help="Cut each image at its own resolution into tiles of this many "
                                                 "pixels, each scored at the working size (patch-feature methods; "
                                                 "saved with the model).")]
OverlapOpt = Annotated[int, typer.Option(help="Pixels neighbouring tiles share; their maps are blended there.")]
BatchSizeOpt = Annotated[int, typer.Option(callback=_at_least_one, help="Images per batch.")]
RuntimeOpt = Annotated[str | None, typer.Option(callback=_runtime, help="An export folder's runtime: onnxruntime "
                                                                      "or openvino (default: its format's).")]
DataOpt = Annotated[Path, typer.Option(help="Dataset folder (MVTec AD, MPDD, VisA, BTAD layout).")]
OutOpt = Annotated[Path, typer.Option("--out", help="Folder to write.")]
ShotsOpt = Annotated[int | None, typer.Option(help="Use only K random good training images.")]
SeedOpt = Annotated[int, typer.Option(help="Seed for the choice of shots and the method's randomness.")]
RuleOpt = Annotated[str, typer.Option(help=f"Threshold rule: {', '.join(RULES)} (f1 needs labelled data).")]
FalseAlarmOpt = Annotated[float, typer.Option(help="Target share of good parts rejected (rule quantile).")]
MadFactorOpt = Annotated[float, typer.Option(callback=_positive_mad_factor,
                                             help="Flag an image whose score lies this many robust sd above the "
                                                  "median score (predict --method: of the batch; watch: of the "
                                                  "recent images).")]

RayOpt = Annotated[bool, typer.Option("--ray", help="Run on a Ray cluster: the one RAY_ADDRESS names, else the one "
                                                  "`ray start` started here, else a new one on this machine (needs "
                                                  "the ray extra).")]
RayAddressOpt = Annotated[str | None, typer.Option("--ray-address", help="Run on the Ray cluster at ADDRESS (auto, "
                                                                        "HOST:PORT, ray://HOST:PORT; local: a new one "
                                                                        "for this run); implies --ray.")]
WorkersOpt = Annotated[int, typer.Option(help="Ray workers (one CPU each).")]
GpusOpt = Annotated[float, typer.Option(help="GPUs per Ray worker (0: CPU only).")]

_WORDS = {"true": True, "false": False, "none": None, "null": None}


def parse_param(text: str) -> tuple[str, Any]:
    """``KEY=VALUE``; the value is read as JSON (numbers, true/false, null, [lists]) or else kept as text.
    True/False/None in any case are the constants too: the text "False" would switch an option on."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ParameterError(f"--param: expected KEY=VALUE, got {text!r}")
    word = value.strip().lower()
    if word in _WORDS:
        return key.strip(), _WORDS[word]
    try:
        return key.strip(), json.loads(value)
    except json.JSONDecodeError:
        return key.strip(), value


def parameters(accepted: list[str], owner: str, *, backbone: str | None, image_size: int | tuple[int, int] | None,
               weights: Path | None, device: str | None, seed: int | None, params: list[str] | None,
               **others: Any) -> dict[str, Any]:
    """The keyword arguments of a constructor taking ``accepted``: ``--param`` values, then the common options
    it takes (a common option it does not take, but seed, is a mistake). An option not given leaves the
    constructor's own default (CLIP methods default to a CLIP backbone)."""
    values: dict[str, Any] = dict(parse_param(p) for p in params or [])
    common = {"backbone": backbone, "image_size": image_size, "weights": str(weights) if weights else None,
              "device": device, "seed": seed, **others}
    for key, value in common.items():
        if key in accepted and key not in values and value is not None:
            values[key] = value
        elif value is not None and key not in accepted and key != "seed":
            raise ParameterError(f"{owner} takes no {key}")
    return values


def cluster_of(ray: bool, address: str | None, workers: int, gpus_per_worker: float = 0.0):
    """The Ray cluster to run on, or None: this process."""
    from lineguard.distributed.cluster import Cluster

    return Cluster(address, workers, gpus_per_worker) if ray or address else None


def build_detector(method: str, *, backbone: str | None, image_size: int | tuple[int, int] | None,
                   weights: Path | None, device: str | None, seed: int | None, params: list[str] | None,
                   tile: int | None = None, overlap: int = 0, keep_aspect: bool = False):
    """Create ``method`` from the common options plus ``--param`` values (checked when it starts work), tiled
    when ``tile`` is given, letterboxed with ``keep_aspect``."""
    from lineguard.letterbox import letterboxed
    from lineguard.methods import create, method_class
    from lineguard.tiling import tiled

    if tile is not None and keep_aspect:
        raise ParameterError("--keep-aspect does not go with --tile: tiles are cut from the image at its own "
                             "size, so its aspect ratio is kept already")
    accepted = method_class(method).param_names()
    detector = create(method, **parameters(accepted, f"method {method!r}", backbone=backbone, image_size=image_size,
                                           weights=weights, device=device, seed=seed, params=params))
    return letterboxed(tiled(detector, tile, overlap), keep_aspect)
