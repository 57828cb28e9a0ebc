"""One loaded, calibrated detector serving inspections to many request threads, through the one inspection
pipeline (``lineguard.inspect``): the same scores, decisions and regions as ``lineguard predict``'s rows.

The detector is a :class:`lineguard.inspect.Scorer`: a fitted model, or an export run without PyTorch (uploads
are then resized and scored as numpy arrays, and nothing here imports torch). Uploads are decoded and results
encoded in the request threads, in parallel; only ``predict`` runs under a lock, one call at a time, because a
detector builds caches lazily (feature extractor, search index) and its backbone already uses every core.
Recent results are kept in a bounded ring, so memory stays flat however long the service runs.
"""

from __future__ import annotations

import base64
import contextlib
import io
import itertools
import os
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np
from PIL import Image

from lineguard.errors import LineguardError, ParameterError
from lineguard.inspect import Scorer, decide
from lineguard.io.guard import ImageTooLargeError, pillow_pixel_limit
from lineguard.io.images import ImageError, read_image_array, resized_batch, size_hw
from lineguard.io.store import mask_image
from lineguard.report.overlay import NORMALIZED_RANGE, overlay, to_uint8
from lineguard.scoring.threshold import NotCalibratedError

#: ``map_png`` holds the normalised map as 8-bit grey: value = clip(map / MAP_PNG_SCALE, 0, 1) · 255.
MAP_PNG_SCALE = 4.0


class UploadError(LineguardError, ValueError):
    """An upload cannot be inspected; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str):
        self.status = status
        super().__init__(message)


@dataclass
class Limits:
    """What one request may hold; checked when the service starts (the CLI's option names in the messages)."""

    max_upload_bytes: int = 20 * 2**20  # per file
    max_pixels: int = 40_000_000  # per image, checked from the header before decoding
    max_batch: int = 32  # files per /v1/inspect-batch request
    upload_timeout_s: float = 60.0  # for a request's whole body to arrive

    def __post_init__(self) -> None:
        checks = (("max_upload_bytes (--max-upload-mb)", self.max_upload_bytes, 1, None),
                  ("max_pixels (--max-pixels)", self.max_pixels, 1, pillow_pixel_limit()),
                  ("max_batch (--max-batch)", self.max_batch, 1, None))
        for name, value, low, high in checks:
            if not isinstance(value, int) or value < low or (high is not None and value > high):
                limit = f"between {low} and {high} (above it Pillow refuses every image)" if high else \
                    f"at least {low}"
                raise ParameterError(f"{name} must be {limit}, got {value}")
        if not self.upload_timeout_s > 0:
            raise ParameterError(f"upload_timeout_s (--upload-timeout) must be positive, got {self.upload_timeout_s}")

    def request_bytes(self, path: str) -> int:
        """The most bytes a request to ``path`` may send: its files and 64 kB of multipart framing."""
        files = {"/v1/inspect": 1, "/v1/inspect-batch": self.max_batch}.get(path.rstrip("/"), 0)
        return files * self.max_upload_bytes + 2**16


def png_base64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


class Inspector:
    """Decode → predict (locked) → normalise → regions → PNGs, for one detector loaded once."""

    def __init__(self, detector: Scorer, *, limits: Limits, history: int = 50):
        if detector.thresholds is None:
            raise NotCalibratedError(f"the {detector.name} model has no thresholds: run `lineguard "
                                     "calibrate` on it before serving")
        self.detector = detector
        self.limits = limits
        self.size = detector.image_size  # None: a tiled or letterboxed model: images at their own size
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._recent: deque[dict] = deque(maxlen=history)
        self._no_grad = contextlib.nullcontext
        if not detector.array_input:  # a detector's tensors: no autograd records in a long-running service
            import torch

            self._no_grad = torch.inference_mode
        if detector.uses_normal_images:  # build lazy caches now: the first request is not the slow one
            size = size_hw(self.size or 64)
            self._predict(resized_batch([np.zeros((3, *size), np.float32)], size, arrays=detector.array_input))

    def decode(self, filename: str, file: BinaryIO) -> np.ndarray:
        """An uploaded file (spooled, never whole in memory, never written elsewhere to be read back) -> (3, H, W)
        in [0, 1]; its size, then the image's size from its header (the pixel and side limits), then a full
        decode straight from the spooled file."""
        size = file.seek(0, os.SEEK_END)
        if size > self.limits.max_upload_bytes:
            raise UploadError(413, f"{filename}: {size} bytes exceeds the limit of "
                                   f"{self.limits.max_upload_bytes} bytes")
        try:
            return read_image_array(file, max_pixels=self.limits.max_pixels)
        except ImageTooLargeError as exc:
            raise UploadError(413, f"{filename}: {exc.reason}") from None
        except ImageError as exc:
            raise UploadError(400, f"{filename}: {exc.reason}") from None

    def _predict(self, images: Any):
        """(N, 3, S, S) batch (or a tiled model's list of images) -> the prediction, one call at a time."""
        with self._lock, self._no_grad():
            return self.detector.predict(images)

    def inspect(self, uploads: list[tuple[str, BinaryIO]], *, images: bool = True) -> list[dict]:
        """(filename, file) pairs -> one result dict each (the API's ``InspectResult``), kept as recent."""
        start = time.perf_counter()
        decoded = [self.decode(name, data) for name, data in uploads]  # (3, H_i, W_i) each
        if self.size is None:  # tiled or letterboxed: each image at its own size, in a batch of its own
            pictures, inputs = decoded, [image[None] for image in decoded]
            if not self.detector.array_input:
                import torch

                inputs = [torch.from_numpy(image) for image in inputs]
        else:
            pictures = inputs = resized_batch(decoded, self.size, arrays=self.detector.array_input)  # (N, 3, S, S)
        try:
            prediction = self._predict(inputs)
        except ValueError as exc:  # e.g. a test-batch method given too few images
            raise UploadError(400, str(exc)) from None
        seconds = (time.perf_counter() - start) / len(uploads)
        results = []
        found = decide(prediction.scores, prediction.maps, self.detector.thresholds)
        for (name, _), image, finding, picture in zip(uploads, decoded, found, pictures, strict=True):
            size = tuple(image.shape[1:])
            result = {"id": next(self._ids), "filename": name, "width": size[1], "height": size[0],
                      **finding.summary(size), "seconds": round(seconds, 4), "received": time.time()}
            if images:
                grey = (np.clip(finding.normalized_map / MAP_PNG_SCALE, 0, 1) * 255).round().astype(np.uint8)
                result["overlay_png"] = png_base64(Image.fromarray(overlay(to_uint8(picture), finding.normalized_map,
                                                                           *NORMALIZED_RANGE)))
                result["map_png"] = png_base64(Image.fromarray(grey))  # (S, S)
                result["mask_png"] = png_base64(mask_image(finding.mask, finding.mask.shape))
            self._recent.append(result)
            results.append(result)
        return results

    def recent(self) -> list[dict]:
        """Newest first."""
        return list(reversed(self._recent))

    def result(self, result_id: int) -> dict | None:
        return next((r for r in self._recent if r["id"] == result_id), None)
