"""Every detector, registered by name. Importing this package fills the registry."""

from lineguard.methods import knn  # noqa: F401  (registers "knn")
from lineguard.methods import mutual  # noqa: F401  (registers "mutual")
from lineguard.methods import testbatch  # noqa: F401  (registers "testbatch")
from lineguard.methods import fewshot  # noqa: F401  (registers "fewshot")
from lineguard.methods import fastrecon  # noqa: F401  (registers "fastrecon")
from lineguard.methods import autoencoder  # noqa: F401  (registers "autoencoder")
from lineguard.methods import dfr  # noqa: F401  (registers "dfr")
from lineguard.methods import cse  # noqa: F401  (registers "cse")
from lineguard.methods import patchcore  # noqa: F401  (registers "patchcore")
from lineguard.methods import padim  # noqa: F401  (registers "padim")
from lineguard.methods import spade  # noqa: F401  (registers "spade")
from lineguard.methods import prompt_learning  # noqa: F401  (registers "prompts")
from lineguard.methods import anomalyclip  # noqa: F401  (registers "anomalyclip")
from lineguard.methods import winclip  # noqa: F401  (registers "winclip", "winclip+")
from lineguard import DEFAULT_METHOD
from lineguard.methods.base import (CannotGrowError, Detector, NotFittedError, Prediction, available_methods, create,
                                    load, method_class, register)

__all__ = ["DEFAULT_METHOD", "CannotGrowError", "Detector", "NotFittedError", "Prediction", "available_methods",
           "create", "load", "method_class", "register"]
