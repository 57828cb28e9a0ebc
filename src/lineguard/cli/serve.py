"""``lineguard serve``: the REST service and web page over one model, loaded once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from lineguard.cli.app import app, console
from lineguard.cli.options import RuntimeOpt
from lineguard.errors import ParameterError


@app.command("serve")
def serve_command(
        model_dir: Annotated[Path, typer.Argument(help="Calibrated model folder, or an export folder.")],
        host: Annotated[str, typer.Option(help="Interface to listen on (0.0.0.0: all).")] = "127.0.0.1",
        port: Annotated[int, typer.Option(help="TCP port (1–65535).")] = 8000,
        api_key: Annotated[str | None, typer.Option(envvar="LINEGUARD_API_KEY", show_default=False,
                                                    help="Require this key in the X-API-Key header.")] = None,
        max_upload_mb: Annotated[float, typer.Option(help="Largest accepted file.")] = 20.0,
        max_pixels: Annotated[int, typer.Option(help="Largest accepted image, width x height.")] = 40_000_000,
        max_batch: Annotated[int, typer.Option(help="Most files per /v1/inspect-batch call.")] = 32,
        upload_timeout: Annotated[float, typer.Option(help="Seconds a request's upload may take; a slower "
                                                          "or stalled one gets 408.")] = 60.0,
        runtime: RuntimeOpt = None) -> None:
    """Serve a model or an export: REST API (/v1/inspect, /v1/inspect-batch, /v1/model, /healthz, /docs) and
    the web page at /. The model is loaded once."""
    from lineguard import load
    from lineguard.extras import require

    for module in ("fastapi", "uvicorn"):
        require(module, "lineguard serve")
    from lineguard.serve import Limits, create_app, serve

    if not 1 <= port <= 65535:
        raise ParameterError(f"--port must be between 1 and 65535, got {port}")
    if not max_upload_mb > 0:
        raise ParameterError(f"--max-upload-mb must be positive, got {max_upload_mb:g}")
    limits = Limits(max_upload_bytes=int(max_upload_mb * 2**20), max_pixels=max_pixels, max_batch=max_batch,
                    upload_timeout_s=upload_timeout)
    # loaded and warm before it says so
    service = create_app(load(model_dir, runtime=runtime), api_key=api_key, limits=limits)
    key_note = " (API key required)" if api_key else ""
    console.print(escape(f"serving {model_dir} on http://{host}:{port}/{key_note}"))
    serve(service, host=host, port=port)
