"""Every detector, registered by name. Importing this package fills the registry."""

from lineguard.methods import knn  # noqa: F401  (registers "knn")
from lineguard.methods.base import (Detector, NotFittedError, Prediction, available_methods, create, load,
                                    method_class, register)

DEFAULT_METHOD = "knn"  # what `lineguard demo` and a bare `evaluate` use

__all__ = ["DEFAULT_METHOD", "Detector", "NotFittedError", "Prediction", "available_methods", "create", "load",
           "method_class", "register"]
