"""The inspection service for the line: REST API and web page (FastAPI + uvicorn), one model loaded once."""

from lineguard.serve.app import create_app, serve
from lineguard.serve.inspector import Limits

__all__ = ["Limits", "create_app", "serve"]
