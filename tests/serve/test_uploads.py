"""The service's door: key before body, bounded and timed uploads, over-size images, startup limits."""

from __future__ import annotations

import asyncio
import json
import struct
import zlib

import pytest
from fastapi.testclient import TestClient

from lineguard.errors import ParameterError
from lineguard.serve import Limits, create_app


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` × ``height`` in a few dozen bytes (a decompression bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def call(app, path: str, headers: dict[str, str], chunks: list[bytes] | None, *, stall: bool = False):
    """One POST straight to the ASGI app: (status, JSON detail, body bytes the app asked for). ``chunks`` None:
    asking for the body fails the test; ``stall``: the client sends nothing after ``chunks``."""
    pulled = []

    async def receive():
        if chunks is None:
            raise AssertionError("the body was read")
        if pulled and stall and len(pulled) >= len(chunks):
            await asyncio.sleep(3600)
        body = chunks[len(pulled)] if len(pulled) < len(chunks) else b""
        pulled.append(body)
        return {"type": "http.request", "body": body, "more_body": stall or len(pulled) < len(chunks)}

    sent = []

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": path, "raw_path": path.encode(), "query_string": b"",
             "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()], "http_version": "1.1",
             "scheme": "http", "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 1), "root_path": ""}
    asyncio.run(app(scope, receive, send))
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], json.loads(body)["detail"], sum(map(len, pulled))


@pytest.fixture(scope="module")
def guarded(model):
    return create_app(model, api_key="k", limits=Limits(max_upload_bytes=1000, max_batch=2, upload_timeout_s=0.3))


def test_the_key_is_checked_before_the_body_is_read(guarded):
    status, detail, _ = call(guarded, "/v1/inspect", {"content-length": str(600 * 2**20)}, None)
    assert status == 401 and "X-API-Key" in detail


def test_a_declared_length_over_the_limit_is_refused_unread(guarded):
    status, detail, _ = call(guarded, "/v1/inspect", {"x-api-key": "k", "content-length": str(600 * 2**20)}, None)
    assert status == 413 and f"exceeds the limit of {1000 + 2**16} bytes" in detail
    status, _, _ = call(guarded, "/v1/inspect-batch", {"x-api-key": "k", "content-length": str(2001 + 2**16)},
                        None)
    assert status == 413  # a batch may hold max_batch files


def test_a_chunked_upload_is_cut_off_at_the_limit(guarded):
    chunks = [b"x" * 2**14] * 1000  # 16 MB offered, no length declared
    status, detail, read = call(guarded, "/v1/inspect", {"x-api-key": "k"}, chunks)
    assert status == 413 and "exceeds the limit" in detail
    assert read <= 1000 + 2**16 + 2**14  # stopped within one chunk of the limit


def test_a_stalled_upload_times_out(guarded):
    status, detail, read = call(guarded, "/v1/inspect", {"x-api-key": "k"}, [b"--x\r\n"], stall=True)
    assert status == 408 and "did not arrive within 0.3 s (5 bytes received)" in detail


@pytest.mark.parametrize(("width", "height"), [(20000, 20000), (1, 39_000_000), (70_000, 1)])
def test_over_size_images_get_413_from_their_header(model, width, height):
    client = TestClient(create_app(model))
    response = client.post("/v1/inspect", files={"file": ("bomb.png", png_header(width, height), "image/png")})
    detail = response.json()["detail"]
    assert response.status_code == 413 and detail.startswith("bomb.png: "), detail
    assert "a side is longer" in detail or "exceeds Pillow's limit" in detail


@pytest.mark.parametrize(("limits", "words"), [
    ({"max_upload_bytes": -1}, "max_upload_bytes (--max-upload-mb) must be at least 1, got -1"),
    ({"max_pixels": 10**10}, "max_pixels (--max-pixels) must be between 1 and"),
    ({"max_batch": 0}, "max_batch (--max-batch) must be at least 1"),
    ({"upload_timeout_s": 0}, "--upload-timeout"),
])
def test_limits_are_checked_when_made(limits, words):
    with pytest.raises(ParameterError) as raised:
        Limits(**limits)
    assert words in str(raised.value)
