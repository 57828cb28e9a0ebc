"""Every endpoint of the service, bad input, auth, concurrency and the OpenAPI schema."""

from __future__ import annotations

import base64
import io
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from openapi_spec_validator import validate
from PIL import Image

from lineguard.methods.base import Detector, NotCalibratedError, Prediction
from lineguard.scoring.threshold import Thresholds
from lineguard.serve import Limits, create_app
from tests.serve.conftest import free_port, png


@pytest.fixture(scope="module")
def client(model):
    return TestClient(create_app(model))


def inspect(client, data: bytes, name: str = "part.png", **params):
    return client.post("/v1/inspect", files={"file": (name, data, "image/png")}, params=params)


def read_image_bytes(data: bytes) -> torch.Tensor:
    """PNG bytes -> (3, H, W) in [0, 1]."""
    return torch.from_numpy(np.array(Image.open(io.BytesIO(data)))).permute(2, 0, 1).float() / 255


def decode_png(text: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(text))))


def test_healthz_and_model(client, model):
    assert client.get("/healthz").json() == {"status": "ok"}
    info = client.get("/v1/model").json()
    assert info["method"] == "knn" and info["image_size"] == 128 and info["auth"] is False
    assert info["thresholds"]["image_threshold"] == model.thresholds.image_threshold
    assert info["normalized_threshold"] == 1.0 and "t3sigma" in info["calibration"]


def test_inspect_agrees_with_the_library(client, model, uploads):
    for data in (uploads[0], uploads[3]):
        body = inspect(client, data).json()
        expected = model.normalize(model.predict(read_image_bytes(data)[None]))
        assert body["normalized_score"] == pytest.approx(float(expected.scores[0]), rel=1e-5)
        assert body["decision"] == ("defect" if body["normalized_score"] >= 1.0 else "ok")
        mask = decode_png(body["mask_png"]) > 0
        assert mask.shape == (128, 128) and mask.sum() == sum(r["area"] for r in body["regions"])
        assert decode_png(body["overlay_png"]).shape == (128, 128, 3)
        grey = decode_png(body["map_png"]).astype(float) / 255 * 4.0
        assert np.allclose(grey, expected.maps[0].clamp(0, 4).numpy(), atol=4.0 / 255)
    good, defective = inspect(client, uploads[0]).json(), inspect(client, uploads[3]).json()
    assert good["decision"] == "ok" and good["regions"] == []
    assert defective["decision"] == "defect" and defective["regions"]


def test_boxes_are_in_the_pixels_of_the_uploaded_image(client, uploads):
    big = np.asarray(Image.open(io.BytesIO(uploads[3])).resize((256, 192)))
    small, large = inspect(client, uploads[3]).json(), inspect(client, png(big)).json()
    assert (large["width"], large["height"]) == (256, 192)
    box = large["regions"][0]
    assert 0 <= box["x0"] < box["x1"] <= 256 and 0 <= box["y0"] < box["y1"] <= 192
    # the map of the resized upload differs a little, so boxes agree to a few working pixels
    assert box["x0"] == pytest.approx(small["regions"][0]["x0"] * 2, abs=8)
    assert box["y1"] == pytest.approx(small["regions"][0]["y1"] * 1.5, abs=8)


def test_without_images_and_recent_results(client, uploads):
    body = inspect(client, uploads[4], name="no-images.png", images="false").json()
    assert body["overlay_png"] is None and body["map_png"] is None and body["decision"] == "defect"
    recent = client.get("/v1/recent").json()
    assert recent[0]["id"] == body["id"] and recent[0]["filename"] == "no-images.png"
    assert [r["id"] for r in recent] == sorted((r["id"] for r in recent), reverse=True)
    assert client.get(f"/v1/results/{body['id']}").json()["score"] == body["score"]
    missing = client.get("/v1/results/999999")
    assert missing.status_code == 404 and "999999" in missing.json()["detail"]


def test_batch(client, uploads):
    files = [("files", (f"{i}.png", data, "image/png")) for i, data in enumerate(uploads)]
    results = client.post("/v1/inspect-batch", files=files, params={"images": False}).json()["results"]
    assert [r["filename"] for r in results] == [f"{i}.png" for i in range(6)]
    assert [r["decision"] for r in results] == ["ok"] * 3 + ["defect"] * 3


@pytest.mark.parametrize(("data", "status", "words"), [
    (b"this is not an image", 400, "not a recognised image format"),
    (b"", 400, "empty"),
    ("truncated", 400, "broken.png"),
    ("too many pixels", 413, "pixels exceeds the limit of 10000"),
    ("too many bytes", 413, "exceeds the limit of 100000 bytes"),
])
def test_bad_uploads_are_clear_4xx(model, uploads, data, status, words):
    client = TestClient(create_app(model, limits=Limits(max_upload_bytes=100_000, max_pixels=100 * 100)))
    small = png(np.asarray(Image.open(io.BytesIO(uploads[0])).resize((64, 64))))
    data = {"truncated": small[: len(small) // 2], "too many pixels": uploads[0],
            "too many bytes": small + b"\0" * 100_001}.get(data, data)
    response = inspect(client, data, name="broken.png")
    assert response.status_code == status, response.text
    assert words in response.json()["detail"]
    assert inspect(client, small).status_code == 200  # and the service still works


def test_missing_field_too_many_files_and_oversized_request(model, uploads):
    client = TestClient(create_app(model, limits=Limits(max_upload_bytes=100_000, max_batch=2)))
    missing = client.post("/v1/inspect", files={"image": ("a.png", uploads[0], "image/png")})
    assert missing.status_code == 422 and "file" in missing.json()["detail"]
    files = [("files", (f"{i}.png", uploads[0], "image/png")) for i in range(3)]
    too_many = client.post("/v1/inspect-batch", files=files)
    assert too_many.status_code == 413 and "limit of 2" in too_many.json()["detail"]
    oversized = client.post("/v1/inspect", content=b"x" * 300_000,
                            headers={"content-type": "multipart/form-data; boundary=x"})
    assert oversized.status_code == 413 and "exceeds the limit" in oversized.json()["detail"]


def test_api_key(model, uploads):
    client = TestClient(create_app(model, api_key="s3cret"))
    assert client.get("/healthz").status_code == 200 and client.get("/").status_code == 200
    for headers in ({}, {"X-API-Key": "wrong"}):
        response = client.get("/v1/model", headers=headers)
        assert response.status_code == 401 and "X-API-Key" in response.json()["detail"]
        assert inspect(client, uploads[0]).status_code == 401
    assert client.get("/v1/model", headers={"X-API-Key": "s3cret"}).json()["auth"] is True
    ok = client.post("/v1/inspect", files={"file": ("a.png", uploads[0], "image/png")},
                     headers={"X-API-Key": "s3cret"})
    assert ok.status_code == 200


def test_openapi_schema_is_valid(client):
    schema = client.get("/openapi.json").json()
    validate(schema)
    assert {"/v1/inspect", "/v1/inspect-batch", "/v1/model", "/healthz"} <= set(schema["paths"])
    schemes = schema["components"]["securitySchemes"].values()
    assert any(s["type"] == "apiKey" and s["name"] == "X-API-Key" for s in schemes)
    body = schema["paths"]["/v1/inspect"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    ref = body["$ref"].rsplit("/", 1)[1]
    assert schema["components"]["schemas"][ref]["required"] == ["file"]
    assert "422" in schema["paths"]["/v1/inspect"]["post"]["responses"]


@pytest.mark.slow
def test_concurrent_requests_get_their_own_answers(live_url, client, uploads):
    """Threads hit a live server at once; every answer matches that image's answer when asked alone."""
    alone = [inspect(client, data, images="false").json()["score"] for data in uploads]
    jobs = [i % len(uploads) for i in range(24)]

    def ask(i: int) -> tuple[int, httpx.Response]:
        with httpx.Client(timeout=120) as http:
            return i, http.post(f"{live_url}/v1/inspect", params={"images": "false"},
                                files={"file": (f"{i}.png", uploads[i], "image/png")})

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(ask, jobs))
    for i, response in answers:
        assert response.status_code == 200
        assert response.json()["score"] == pytest.approx(alone[i], rel=1e-5)
        assert response.json()["filename"] == f"{i}.png"


class BatchMedian(Detector):
    """A tiny test-batch detector: each pixel's distance to the batch's median image."""

    name = "batch-median"
    uses_normal_images = False

    def __init__(self, *, image_size: int = 64):
        self.image_size = image_size

    def _fit(self, images):
        pass

    def _predict(self, images):
        if len(images) < 2:
            raise ValueError("batch-median needs at least 2 images in a batch")
        maps = (images - images.median(dim=0).values).abs().mean(dim=1)  # (N, H, W)
        return Prediction(maps.flatten(1).amax(dim=1), maps)


def test_test_batch_method_uses_the_batch_endpoint(uploads):
    with pytest.raises(NotCalibratedError, match="calibrate"):
        create_app(BatchMedian())
    detector = BatchMedian().set_thresholds(Thresholds(image_threshold=0.2, pixel_threshold=0.2))
    client = TestClient(create_app(detector))
    single = inspect(client, uploads[0])
    assert single.status_code == 400 and "inspect-batch" in single.json()["detail"]
    one = client.post("/v1/inspect-batch", files=[("files", ("a.png", uploads[0], "image/png"))])
    assert one.status_code == 400 and "at least 2" in one.json()["detail"]
    files = [("files", (f"{i}.png", data, "image/png")) for i, data in enumerate(uploads)]
    results = client.post("/v1/inspect-batch", files=files).json()["results"]
    images = torch.stack([torch.nn.functional.interpolate(read_image_bytes(d)[None], size=64, mode="bilinear",
                                                          antialias=True)[0] for d in uploads])
    expected = BatchMedian().predict(images).scores
    assert [r["score"] for r in results] == pytest.approx(expected.tolist(), rel=1e-4)




@pytest.mark.slow
def test_cli_serve_reads_the_api_key_from_the_environment(model, uploads, tmp_path):
    model.save(tmp_path / "model")
    port = free_port()
    env = {**os.environ, "LINEGUARD_API_KEY": "from-env", "LINEGUARD_PROGRESS": "0"}
    process = subprocess.Popen([sys.executable, "-m", "lineguard", "serve", str(tmp_path / "model"), "--port",
                                str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise AssertionError(process.stdout.read().decode() if process.poll() is not None
                                         else "service did not start") from None
                time.sleep(0.2)
        assert httpx.get(f"{url}/v1/model").status_code == 401
        answer = httpx.post(f"{url}/v1/inspect", headers={"X-API-Key": "from-env"},
                            files={"file": ("a.png", uploads[3], "image/png")}, timeout=60)
        assert answer.json()["decision"] == "defect"
    finally:
        process.terminate()
        process.wait(timeout=20)
