"""One loaded, calibrated detector serving inspections to many request threads.

Uploads are decoded and results encoded in the request threads, in parallel; only ``predict`` runs under a
lock, one call at a time, because a detector builds caches lazily (feature extractor, search index) and its
backbone already uses every core. Recent results are kept in a bounded ring, so memory stays flat however
long the service runs.
"""

from __future__ import annotations

import base64
import io
import itertools
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from lineguard.io.images import ImageError, image_size, read_image, resize
from lineguard.methods.base import Detector, NotCalibratedError
from lineguard.report.overlay import NORMALIZED_RANGE, mask_image, overlay
from lineguard.report.runs import to_uint8
from lineguard.scoring.regions import find

#: ``map_png`` holds the normalised map as 8-bit grey: value = clip(map / MAP_PNG_SCALE, 0, 1) · 255.
MAP_PNG_SCALE = 4.0


class UploadError(ValueError):
    """An upload cannot be inspected; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str):
        self.status = status
        super().__init__(message)


@dataclass
class Limits:
    max_upload_bytes: int = 20 * 2**20  # per file
    max_pixels: int = 40_000_000  # per image, checked from the header before decoding
    max_batch: int = 32  # files per /v1/inspect-batch request


def png_base64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


class Inspector:
    """Decode → predict (locked) → normalise → regions → PNGs, for one detector loaded once."""

    def __init__(self, detector: Detector, *, limits: Limits, history: int = 50):
        detector.check_fitted()
        if detector.thresholds is None:
            raise NotCalibratedError(f"the {detector.name} model has no thresholds: run `lineguard "
                                     "calibrate` on it before serving")
        self.detector = detector
        self.limits = limits
        self.size = int(getattr(detector, "image_size", 256))
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._recent: deque[dict] = deque(maxlen=history)
        if detector.uses_normal_images:  # build lazy caches now: the first request is not the slow one
            self._predict(torch.zeros(1, 3, self.size, self.size))

    def decode(self, filename: str, data: bytes) -> torch.Tensor:
        """Uploaded bytes -> (3, H, W) in [0, 1]; size and pixel limits first, then a full decode."""
        if len(data) > self.limits.max_upload_bytes:
            raise UploadError(413, f"{filename}: {len(data)} bytes exceeds the limit of "
                                   f"{self.limits.max_upload_bytes} bytes")
        with tempfile.NamedTemporaryFile(prefix="lineguard-upload-") as tmp:
            tmp.write(data)
            tmp.flush()
            try:
                height, width = image_size(tmp.name)
                if height * width > self.limits.max_pixels:
                    raise UploadError(413, f"{filename}: {width}x{height} = {width * height} pixels exceeds "
                                           f"the limit of {self.limits.max_pixels}")
                return read_image(tmp.name, max_pixels=self.limits.max_pixels)
            except ImageError as exc:
                raise UploadError(400, f"{filename}: {exc.reason}") from None

    def _predict(self, images: torch.Tensor):
        with self._lock, torch.inference_mode():
            return self.detector.predict(images)

    def inspect(self, uploads: list[tuple[str, bytes]], *, images: bool = True) -> list[dict]:
        """(filename, bytes) pairs -> one result dict each (the API's ``InspectResult``), kept as recent."""
        start = time.perf_counter()
        decoded = [self.decode(name, data) for name, data in uploads]  # (3, H_i, W_i) each
        batch = torch.stack([resize(image, self.size) for image in decoded])  # (N, 3, S, S)
        try:
            prediction = self._predict(batch)
        except ValueError as exc:  # e.g. a test-batch method given too few images
            raise UploadError(400, str(exc)) from None
        normalized = self.detector.normalize(prediction)
        normalized_maps = normalized.maps.numpy()  # (N, S, S)
        seconds = (time.perf_counter() - start) / len(uploads)
        results = []
        found = find(prediction.scores.numpy(), normalized.scores.numpy(), normalized_maps)
        for (name, _), image, finding, values, picture in zip(uploads, decoded, found, normalized_maps, batch,
                                                              strict=True):
            result = {"id": next(self._ids), "filename": name, "width": image.shape[2],
                      "height": image.shape[1], **finding.to_dict(tuple(image.shape[1:])),
                      "seconds": round(seconds, 4), "received": time.time()}
            if images:
                grey = (np.clip(values / MAP_PNG_SCALE, 0, 1) * 255).round().astype(np.uint8)  # (S, S)
                result["overlay_png"] = png_base64(Image.fromarray(overlay(to_uint8(picture), values,
                                                                           *NORMALIZED_RANGE)))
                result["map_png"] = png_base64(Image.fromarray(grey))
                result["mask_png"] = png_base64(mask_image(finding.mask, finding.mask.shape))
            self._recent.append(result)
            results.append(result)
        return results

    def recent(self) -> list[dict]:
        """Newest first."""
        return list(reversed(self._recent))

    def result(self, result_id: int) -> dict | None:
        return next((r for r in self._recent if r["id"] == result_id), None)
