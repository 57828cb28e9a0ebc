"""A small fitted and calibrated knn model (128 px) and PNG uploads of good and defective parts."""

from __future__ import annotations

import io
import socket
import threading
import time

import numpy as np
import pytest
import uvicorn
from PIL import Image

import lineguard
from lineguard.serve import create_app
from lineguard.synthetic import make_batch
from tests.conftest import SIZE, to_tensor


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="session")
def model(parts):
    """knn fitted on the 12 support parts and calibrated (t3sigma, the default) on 6 other good parts."""
    support, _, _, _ = parts
    detector = lineguard.create("knn", image_size=SIZE).fit(support)
    held_out = to_tensor(make_batch(6, 0, size=SIZE, seed=20))
    return detector.calibrate(detector.predict(held_out))


@pytest.fixture(scope="session")
def uploads():
    """PNG bytes: 3 good parts then 3 defective ones (spot, scratch, crack), 128 x 128."""
    return [png(item.image) for item in make_batch(3, 3, size=SIZE, seed=11)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def live_url(model):
    """The service on a live uvicorn at 127.0.0.1:<free port>, in a background thread."""
    server = uvicorn.Server(uvicorn.Config(create_app(model), host="127.0.0.1", port=free_port(),
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{server.config.port}"
    server.should_exit = True
    thread.join(timeout=10)
