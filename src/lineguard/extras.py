"""Optional dependencies, imported where they are used: an install for inspection on a line takes only what it
needs (``pip install lineguard``), and a feature whose package is missing says which extra brings it."""

from __future__ import annotations

import importlib
from types import ModuleType

from lineguard.errors import LineguardError

#: The extra of ``pyproject.toml`` that installs each optional module.
EXTRAS = {"faiss": "faiss", "open_clip": "clip", "fastapi": "serve", "uvicorn": "serve", "ray": "ray", "onnx": "export",
          "onnxruntime": "export", "openvino": "export"}


class MissingExtraError(LineguardError, ImportError):
    """A feature needs a package that is not installed; the message names the extra to install."""


def require(module: str, feature: str) -> ModuleType:
    """Import ``module`` for ``feature``, or say how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(f"{feature} needs the package {module!r}: pip install "
                                f"'lineguard[{EXTRAS[module]}]'") from None
