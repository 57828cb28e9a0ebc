"""Running an export folder without PyTorch: onnxruntime or OpenVINO behind the shape of a detector.

:class:`ExportedModel` is a :class:`lineguard.inspect.Scorer` as a :class:`lineguard.methods.Detector` is —
``name``, ``image_size``, ``uses_normal_images``, ``get_params()``, ``thresholds``, ``predict(images)`` (scores
(N,), maps (N, S, S)) — with numpy arrays instead of tensors (``array_input``), so predict, the service and the
reports take either. This module and everything it imports need only numpy, SciPy and Pillow (and the runtime
asked for): never torch.

Input: float32 RGB in [0, 1], (N, 3, H, W) or (3, H, W), numpy or anything numpy can read (a CPU tensor
too), or an iterable of such batches; images not at the working size are resized the way the model's own
``predict`` resizes them (``io.images.resize_array``). Work goes to the runtime ``batch_size`` images at a time.
A tiled export (``spec.tiling``) has ``image_size`` None, as a tiled model: each image is cut at its own size
into tiles, which go to the runtime ``batch_size`` at a time, and maps come back at the image's size.

OpenVINO is asked for float32 inference: on CPUs with bfloat16 units (this one has them) it would otherwise
compute in bfloat16 and scores would move in the third digit.

Letters: N images, S working size.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from lineguard.errors import ParameterError
from lineguard.export.spec import INPUT_NAME, OUTPUT_NAMES, ExportFolderError, read_spec
from lineguard.extras import MissingExtraError
from lineguard.io.images import resize_array, size_hw
from lineguard.scoring.threshold import Thresholds
from lineguard.tile_geometry import Box, Tiling, TilingError, stitch

RUNTIMES = ("onnxruntime", "openvino")
#: Images per graph run. A graph's temporaries grow with the batch while a CPU gains nothing past a few images:
#: PatchCore bottle, 2 threads, 32 images handed at once — batches of 4 against 16: the same images/s (OpenVINO
#: 11.4–11.6 against 11.2–11.4, onnxruntime 10.5–10.6 against 9.9–10.0, contended) at peak RSS 374 against 605 MB
#: (OpenVINO) and 287 against 541 MB (onnxruntime).
RUNTIME_BATCH = 4
Session = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]  # (B, 3, S, S) -> (B,), (B, S, S)


@dataclass
class ArrayPrediction:
    """What :meth:`ExportedModel.predict` returns: one score and one map per image, as numpy arrays."""

    scores: np.ndarray  # (N,)
    maps: np.ndarray | list[np.ndarray]  # (N, S, S); a tiled export's: (N, H, W), or (H_i, W_i) each when they differ

    def __post_init__(self) -> None:
        shapes = [m.shape for m in self.maps]
        if self.scores.ndim != 1 or any(len(shape) != 2 for shape in shapes) or len(self.scores) != len(shapes):
            raise ValueError(f"scores (N,) and maps (N, H, W) disagree: {self.scores.shape} vs {shapes}")


class ExportedModel:
    """An export folder loaded on ``runtime`` ("onnxruntime" or "openvino"; default: the folder's own format's
    runtime). ``threads`` caps the runtime's threads (None: its default, every core)."""

    uses_normal_images = True  # a fitted model: images are scored one batch at a time, never against each other
    array_input = True  # numpy in and out: files and uploads are read without PyTorch

    def __init__(self, folder: str | Path, *, runtime: str | None = None, threads: int | None = None,
                 batch_size: int = RUNTIME_BATCH):
        self.folder = Path(folder)
        self.spec = read_spec(self.folder)
        self.runtime = runtime or ("openvino" if self.spec.format == "openvino" else "onnxruntime")
        if self.runtime not in RUNTIMES:
            raise ParameterError(f"runtime must be one of {', '.join(RUNTIMES)}, got {self.runtime!r}")
        if self.runtime == "onnxruntime" and self.spec.format != "onnx":
            raise ExportFolderError(f"{self.folder} holds an OpenVINO export: onnxruntime cannot run it (use "
                                    "runtime 'openvino', or export with --format onnx)")
        if batch_size < 1:
            raise ParameterError(f"batch_size must be at least 1, got {batch_size}")
        self.batch_size = batch_size
        try:
            self.tiling = None if self.spec.tiling is None else Tiling(**self.spec.tiling)
        except (TilingError, TypeError) as error:
            raise ExportFolderError(f"{self.folder}: tiling {self.spec.tiling!r} in its spec cannot work ({error})") \
                from None
        graph = self.folder / self.spec.graph
        self._run = onnxruntime_session(graph, threads) if self.runtime == "onnxruntime" else \
            openvino_session(graph, threads)

    @property
    def name(self) -> str:
        return self.spec.method

    @property
    def image_size(self) -> int | list[int] | None:
        """The working size; None for a tiled export, which takes images at their own size (as a tiled model)."""
        return None if self.tiling else self.spec.image_size

    @property
    def is_fitted(self) -> bool:
        return True

    def get_params(self) -> dict[str, Any]:
        return dict(self.spec.params)

    @property
    def thresholds(self) -> Thresholds | None:
        return None if self.spec.thresholds is None else Thresholds(**self.spec.thresholds)

    def __repr__(self) -> str:
        return f"ExportedModel({str(self.folder)!r}, method={self.name!r}, runtime={self.runtime!r})"

    def predict(self, images: Any) -> ArrayPrediction:
        """Raw scores (N,) and maps (N, S, S), in the units of the model the export came from; a tiled export's
        maps at each image's own size."""
        if self.tiling:
            return self._predict_tiled(images)
        scores, maps = [], []
        for batch in self._batches(images):
            batch_scores, batch_maps = self._run(batch)
            scores.append(batch_scores)
            maps.append(batch_maps)
        return ArrayPrediction(np.concatenate(scores) if scores else np.empty(0, np.float32),
                               np.concatenate(maps) if maps else np.empty((0, *size_hw(self.spec.image_size)),
                                                                          np.float32))

    def _predict_tiled(self, images: Any) -> ArrayPrediction:
        """Each image cut into tiles at its own size, tiles at the working size scored ``batch_size`` at a time,
        their maps stitched (as ``tiling.TiledDetector.predict``)."""
        scores, maps = [], []
        for array in self._arrays(images):
            for image in array:  # (3, H, W)
                def run_tiles(boxes: list[Box], image: np.ndarray = image) -> tuple[np.ndarray, np.ndarray]:
                    tiles = np.stack([image[:, rows, columns] for rows, columns in boxes])  # (B, 3, h, w)
                    return self._run(self._at_working_size(tiles))

                score, stitched = stitch(self.tiling, *image.shape[-2:], self.batch_size, run_tiles)
                scores.append(score)
                maps.append(stitched)
        same_size = len({m.shape for m in maps}) == 1
        return ArrayPrediction(np.array(scores, np.float32), np.stack(maps) if same_size else maps)

    def _arrays(self, images: Any) -> Iterator[np.ndarray]:
        """float32 (N, 3, H, W) arrays of ``images`` (an array or an iterable of them), checked."""
        single = isinstance(images, np.ndarray) or getattr(images, "ndim", None) in (3, 4)
        for group in [images] if single else images:
            array = np.asarray(group, dtype=np.float32)
            array = array[None] if array.ndim == 3 else array
            if array.ndim != 4 or array.shape[1] != 3:
                raise ValueError(f"images must be (N, 3, H, W) floats in [0, 1], got shape {array.shape}")
            yield array

    def _at_working_size(self, array: np.ndarray) -> np.ndarray:
        """(B, 3, H, W) -> contiguous (B, 3, S, S), resized as the model's own ``predict`` resizes."""
        if array.shape[-2:] != size_hw(self.spec.image_size):
            array = resize_array(array, self.spec.image_size)
        return np.ascontiguousarray(array)

    def _batches(self, images: Any) -> Iterator[np.ndarray]:
        """Contiguous float32 (≤ batch_size, 3, S, S) batches of ``images`` (an array or an iterable of them)."""
        for array in self._arrays(images):
            array = self._at_working_size(array)
            for start in range(0, len(array), self.batch_size):
                yield array[start:start + self.batch_size]


def load_export(folder: str | Path, *, runtime: str | None = None, threads: int | None = None,
                batch_size: int = RUNTIME_BATCH) -> ExportedModel:
    """Load an export folder (see :class:`ExportedModel`)."""
    return ExportedModel(folder, runtime=runtime, threads=threads, batch_size=batch_size)


def require_runtime(name: str) -> ModuleType:
    """Import the runtime ``name``, or say how to install it (on a line PC: the runtime distribution)."""
    try:
        return importlib.import_module(name)
    except ImportError:
        extra = "" if name == "onnxruntime" else "[openvino]"
        raise MissingExtraError(f"running an export on {name} needs the package {name!r}: pip install "
                                f"'./runtime{extra}' (a line PC) or 'lineguard[export]'") from None


def onnxruntime_session(graph: Path, threads: int | None) -> Session:
    onnxruntime = require_runtime("onnxruntime")
    options = onnxruntime.SessionOptions()
    # No memory pattern: with a free batch axis it plans one block per input shape and keeps it. PatchCore bottle,
    # batch 16: peak RSS 457 MB against 601 MB, the same images/s.
    options.enable_mem_pattern = False
    if threads:
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = onnxruntime.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])

    def run(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        scores, maps = session.run(list(OUTPUT_NAMES), {INPUT_NAME: images})
        return scores, maps

    return run


def openvino_session(graph: Path, threads: int | None) -> Session:
    openvino = require_runtime("openvino")
    config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "f32"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    compiled = openvino.Core().compile_model(str(graph), "CPU", config)
    request = compiled.create_infer_request()
    outputs = [compiled.output(name) for name in OUTPUT_NAMES]

    def run(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        results = request.infer({INPUT_NAME: images})
        scores, maps = (np.array(results[output]) for output in outputs)  # copies: the request reuses its buffers
        return scores, maps

    return run

