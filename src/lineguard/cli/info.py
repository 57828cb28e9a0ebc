"""``lineguard methods`` and ``lineguard backbones``: what there is to choose from."""

from __future__ import annotations

from lineguard.cli.app import app, out
from lineguard.params import defaults


@app.command()
def methods() -> None:
    """List the methods and their parameters with defaults."""
    from lineguard.methods import available_methods, method_class

    for name in available_methods():
        cls = method_class(name)
        params = ", ".join(f"{key}={value!r}" for key, value in defaults(cls).items())
        kind = "normal images" if cls.uses_normal_images else "no training data"
        out.print(f"[bold]{name}[/bold] ({kind}): {params}")


@app.command()
def backbones() -> None:
    """List the backbone names."""
    from lineguard.backbones import available_backbones

    for name in available_backbones():
        out.print(name)
