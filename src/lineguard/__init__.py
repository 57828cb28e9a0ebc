"""lineguard: industrial visual anomaly detection with little or no training data.

    detector = lineguard.create("knn", backbone="effnet-lite0")
    detector.fit(normal_images)           # (N, 3, H, W) floats in [0, 1]
    result = detector.predict(images)     # result.scores (N,), result.maps (N, H, W)
    detector.save("model/"); lineguard.load("model/")

The detector API is imported on first use, so the parts that need no PyTorch (``lineguard.export.runtime``,
``lineguard.io.images``, ``lineguard.scoring.threshold``) import without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lineguard.methods import Detector, Prediction, available_methods, create, load

__version__ = "0.1.0"
__all__ = ["Detector", "Prediction", "__version__", "available_methods", "create", "load"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from lineguard import methods

        return getattr(methods, name)
    raise AttributeError(f"module 'lineguard' has no attribute {name!r}")
