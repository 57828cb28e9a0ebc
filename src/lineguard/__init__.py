"""lineguard: industrial visual anomaly detection with little or no training data.

    detector = lineguard.create("knn", backbone="effnet-lite0")
    detector.fit(normal_images)           # (N, 3, H, W) floats in [0, 1]
    result = detector.predict(images)     # result.scores (N,), result.maps (N, H, W)
    detector.save("model/"); lineguard.load("model/")
"""

from lineguard.methods import Detector, Prediction, available_methods, create, load

__version__ = "0.1.0"
__all__ = ["Detector", "Prediction", "__version__", "available_methods", "create", "load"]
