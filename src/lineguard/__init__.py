"""lineguard: industrial visual anomaly detection with little or no training data.

    detector = lineguard.create("knn", backbone="effnet-lite0")
    detector.fit(normal_images)           # (N, 3, H, W) floats in [0, 1]
    result = detector.predict(images)     # result.scores (N,), result.maps (N, H, W)
    detector.save("model/"); lineguard.load("model/")
    lineguard.load("export/")             # a `lineguard export` folder: the same answers, without PyTorch

The detector API is imported on first use, so the parts that need no PyTorch (the inspection pipeline
``lineguard.inspect``, thresholds, regions, the results store, the report's pictures, the export runtime)
import without it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lineguard.export.runtime import ExportedModel
    from lineguard.methods import Detector, Prediction, available_methods, create

__version__ = "0.1.0"
DEFAULT_METHOD = "patchcore"  # what `lineguard demo` and a bare `evaluate` use
__all__ = ["DEFAULT_METHOD", "Detector", "Prediction", "__version__", "available_methods", "create", "load"]
_DETECTOR_API = ("Detector", "Prediction", "available_methods", "create")


def load(folder: str | Path, *, runtime: str | None = None, threads: int | None = None) -> Detector | ExportedModel:
    """A model folder (``Detector.save``) -> its :class:`Detector`; an export folder (``lineguard export``, it
    holds ``export.json``) -> an :class:`~lineguard.export.runtime.ExportedModel` on ``runtime``
    ("onnxruntime" or "openvino", default: the export's own) with at most ``threads`` threads, which needs no
    PyTorch. Both are scorers of the one inspection pipeline (``lineguard.inspect.Scorer``)."""
    from lineguard.export.spec import is_export

    if is_export(folder):
        from lineguard.export.runtime import load_export

        return load_export(folder, runtime=runtime, threads=threads)
    if runtime is not None or threads is not None:
        from lineguard.errors import ParameterError

        raise ParameterError(f"{folder} is a model folder: runtime and threads apply to export folders only "
                             "(make one with `lineguard export`)")
    from lineguard.methods import load as load_model

    return load_model(folder)


def __getattr__(name: str) -> Any:
    if name in _DETECTOR_API:
        from lineguard import methods

        return getattr(methods, name)
    raise AttributeError(f"module 'lineguard' has no attribute {name!r}")
