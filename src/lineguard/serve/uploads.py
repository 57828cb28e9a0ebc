"""The door of the service: every request body is bounded, timed and spooled before the API sees it.

An ASGI middleware in front of the API, so that no request costs the server more than its limits allow:

* the API key is checked from the headers, before a byte of the body is read (401);
* a declared ``Content-Length`` over the path's limit (:meth:`Limits.request_bytes`) is refused at once, and
  a body sent without one (chunked) is counted as it arrives and refused as soon as it passes it (413);
* the body must arrive within ``Limits.upload_timeout_s``, so a stalled or trickling upload ends (408);
* the body goes to a spool file (in memory up to :data:`SPOOL_IN_MEMORY`, then on disk) and is handed on from
  there, so it is never held whole in memory; the multipart parser then spools each file part the same way.

Answers are ``{"detail": "..."}`` like every other error of the API.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import tempfile
from collections.abc import Awaitable, Callable
from typing import Any

from lineguard.serve.inspector import Limits

SPOOL_IN_MEMORY = 256 * 2**10  # bytes of a body kept in memory before the spool moves to disk
CHUNK = 64 * 2**10  # bytes handed on per message
API_KEY_HEADER = "X-API-Key"
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})

Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def key_ok(api_key: str | None, given: str | None) -> bool:
    """No key configured, or the given one matches (in constant time)."""
    return not api_key or (given is not None and hmac.compare_digest(given.encode(), api_key.encode()))


class Refused(Exception):
    """A request body the guard will not take; ``status`` and ``detail`` are the answer."""

    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status, self.detail = status, detail


class UploadGuard:
    """ASGI middleware: key before body, bounded and timed body, spooled to a file (see the module docstring)."""

    def __init__(self, app: Callable[..., Awaitable[None]], *, limits: Limits, api_key: str | None = None):
        self.app, self.limits, self.api_key = app, limits, api_key

    async def __call__(self, scope: Message, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            if scope["path"].startswith("/v1/") and not key_ok(self.api_key, headers.get(API_KEY_HEADER.lower())):
                raise Refused(401, f"missing or wrong API key (header {API_KEY_HEADER})")
            if scope["method"] not in BODY_METHODS:
                return await self.app(scope, receive, send)
            limit = self.limits.request_bytes(scope["path"])
            length = headers.get("content-length")
            if length is not None and (not length.isdigit() or int(length) > limit):
                raise Refused(413, f"request of {length} bytes exceeds the limit of {limit} bytes")
            with tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY, prefix="lineguard-body-") as spool:
                if not await self._spool(receive, spool, limit):
                    return  # the client left
                await self.app(scope, _replay(spool, receive), send)
        except Refused as refused:
            await _answer(send, refused.status, refused.detail)

    async def _spool(self, receive: Receive, spool: Any, limit: int) -> bool:
        """Copy the body into ``spool`` within the limits; False if the client disconnected."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.limits.upload_timeout_s
        total, more = 0, True
        while more:
            try:
                message = await asyncio.wait_for(receive(), timeout=max(deadline - loop.time(), 0.0))
            except TimeoutError:
                raise Refused(408, f"the upload did not arrive within {self.limits.upload_timeout_s:g} s "
                                   f"({total} bytes received)") from None
            if message["type"] == "http.disconnect":
                return False
            body = message.get("body", b"")
            total += len(body)
            if total > limit:
                raise Refused(413, f"request of more than {limit} bytes exceeds the limit of {limit} bytes")
            spool.write(body)
            more = message.get("more_body", False)
        return True


def _replay(spool: Any, receive: Receive) -> Receive:
    """A ``receive`` that hands on the spooled body in chunks, then waits on the client (disconnects)."""
    size = spool.tell()
    spool.seek(0)
    finished = False

    async def replay() -> Message:
        nonlocal finished
        if finished:
            return await receive()
        chunk = spool.read(CHUNK)
        finished = spool.tell() >= size
        return {"type": "http.request", "body": chunk, "more_body": not finished}

    return replay


async def _answer(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"connection", b"close")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
