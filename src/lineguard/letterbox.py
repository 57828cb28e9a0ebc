"""Letterbox: each image resized with its aspect ratio kept to fit the working size, the rest padded, and its
map cropped back to the image before it is resized to the image's own size.

The default squash stretches a 600 × 245 Magnetic Tile frame 2.4 times more along one axis than along the
other, so a round blowhole becomes an ellipse whose shape depends on the frame. Letterboxed, the frame is
scaled by one factor (its longest side to the working size's) and centred; the padding is black (0), the
background of most inspection images, and is the same for normal and tested images, so the reference learns
the content's edge against it as normal. The padding never reaches a map or a region: the map is cropped to
the content first, then resized to the image.

Letters: N images, H × W an image's own size, S_h × S_w the working size, h × w the content inside it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from lineguard.io.images import resize, size_hw
from lineguard.methods.base import Detector, ImageInput, Prediction, as_batches
from lineguard.native import NativeSizeDetector, NativeSizePrediction, gathered
from lineguard.scoring.maps import resize_maps

LETTERBOX_FILE = "letterbox.json"
FILL = 0.0  # the padding's pixel value: black


def content_box(height: int, width: int, size: tuple[int, int]) -> tuple[slice, slice]:
    """Where an H × W image lies inside the working size once letterboxed: (rows, columns), centred."""
    scale = min(size[0] / height, size[1] / width)
    inner = (max(1, min(size[0], round(height * scale))), max(1, min(size[1], round(width * scale))))
    top, left = ((s - i) // 2 for s, i in zip(size, inner, strict=True))
    return slice(top, top + inner[0]), slice(left, left + inner[1])


def letterbox(image: Tensor, size: tuple[int, int]) -> Tensor:
    """(3, H, W) -> (3, S_h, S_w): resized by one factor to fit, centred, padded with :data:`FILL`."""
    rows, columns = content_box(*image.shape[-2:], size)
    content = resize(image, (rows.stop - rows.start, columns.stop - columns.start))  # (3, h, w)
    return F.pad(content, (columns.start, size[1] - columns.stop, rows.start, size[0] - rows.stop), value=FILL)


def unbox(working_map: Tensor, shape: tuple[int, int]) -> Tensor:
    """(S_h, S_w) map of a letterboxed image -> (H, W) map of the image: the padding cropped, then resized."""
    rows, columns = content_box(*shape, tuple(working_map.shape[-2:]))
    return resize_maps(working_map[rows, columns][None].cpu(), shape)[0]


class LetterboxDetector(NativeSizeDetector):
    """Any detector fed letterboxed images: fit, update, predict, calibrate and save as a detector does, with
    images read at their own size (``image_size`` None) and maps at it."""

    settings_file = LETTERBOX_FILE
    wrapping = "letterboxed (--keep-aspect)"

    def settings(self) -> dict[str, Any]:
        return {"keep_aspect": True}

    @classmethod
    def from_settings(cls, detector: Detector, settings: dict[str, Any]) -> LetterboxDetector:
        if settings.get("keep_aspect") is not True:
            raise ValueError(f"keep_aspect must be true, got {settings.get('keep_aspect')!r}")
        return cls(detector)

    def inputs(self, image: Tensor) -> Iterator[Tensor]:
        yield letterbox(image, size_hw(self.detector.image_size))

    @torch.no_grad()
    def predict(self, images: ImageInput) -> Prediction | NativeSizePrediction:
        """Scores (N,) and maps at each image's own size, from one call of the detector's ``predict`` (a
        test-batch method scores the whole batch against itself, as unwrapped)."""
        shapes: list[tuple[int, int]] = []

        def noted(batches: ImageInput) -> Iterator[Tensor]:
            for batch in batches:
                shapes.extend(tuple(image.shape[-2:]) for image in batch)
                yield batch

        prediction = self.detector.predict(self.input_batches(noted(as_batches(images, self.detector.batch_size)),
                                                              [0]))
        return gathered(list(prediction.scores.cpu()), [unbox(m, s) for m, s in zip(prediction.maps, shapes,
                                                                                       strict=True)])


def letterboxed(detector: Detector, keep_aspect: bool) -> Detector | LetterboxDetector:
    """``detector`` fed letterboxed images (``keep_aspect``), or as it is."""
    return LetterboxDetector(detector) if keep_aspect else detector
