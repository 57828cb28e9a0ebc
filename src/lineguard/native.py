"""Detectors that read images at their own size and bring them to the working size themselves.

A wrapped detector scores inputs at its working size; a wrapper (tiles: :mod:`lineguard.tiling`; letterbox:
:mod:`lineguard.letterbox`) turns each image at its own size into those inputs and the inputs' maps back
into one map at the image's own size. The pipeline sees ``image_size`` None, so it hands the wrapper images
as they are, one per batch, and gets maps (and regions) in the images' own pixels. Fit, update, calibrate,
thresholds and save are the same for every wrapper and live here; a saved wrapper is its detector's folder
plus one JSON file of its settings, which :func:`read_wrapper` reads back.

Letters: N images, H × W an image's own size.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor

from lineguard.methods.base import Detector, ImageInput, Prediction, as_batches
from lineguard.scoring.threshold import Thresholds


@dataclass
class NativeSizePrediction:
    """Scores (N,) and maps of images of different sizes: one (H_i, W_i) map each."""

    scores: Tensor
    maps: list[Tensor]


def gathered(scores: list[Tensor], maps: list[Tensor]) -> Prediction | NativeSizePrediction:
    """One :class:`Prediction` when all maps share one size, else a :class:`NativeSizePrediction`."""
    if len({m.shape for m in maps}) == 1:
        return Prediction(torch.stack(scores), torch.stack(maps))
    return NativeSizePrediction(torch.stack(scores), maps)


class NativeSizeDetector:
    """Base of the wrappers: a subclass sets ``settings_file``, gives :meth:`settings` (saved as JSON) and
    :meth:`inputs` (an image's working-size inputs), and predicts."""

    image_size = None  # the pipeline reads images at their native size
    array_input = False  # it takes tensors, as the detector it wraps
    settings_file: ClassVar[str]
    wrapping: ClassVar[str]  # what the wrapper does to images, as messages name it

    def __init__(self, detector: Detector):
        self.detector = detector

    name = property(lambda self: self.detector.name)
    uses_normal_images = property(lambda self: self.detector.uses_normal_images)
    thresholds = property(lambda self: self.detector.thresholds)

    def settings(self) -> dict[str, Any]:
        """What the wrapper adds to the detector's parameters (saved in ``settings_file``)."""
        raise NotImplementedError

    @classmethod
    def from_settings(cls, detector: Detector, settings: dict[str, Any]) -> NativeSizeDetector:
        """The wrapper of ``detector`` that :meth:`settings` describes (read back from a model folder)."""
        raise NotImplementedError

    def get_params(self) -> dict[str, Any]:
        return {**self.detector.get_params(), **self.settings()}

    def inputs(self, image: Tensor) -> Iterator[Tensor]:
        """(3, H, W) -> the (3, h, w) inputs at the working size that stand for it."""
        raise NotImplementedError

    def input_batches(self, images: ImageInput, counted: list[int]) -> Iterator[Tensor]:
        """(B, 3, h, w) batches of the inputs of all ``images``, ``batch_size`` at a time across images (images
        come one per batch at their own size); ``counted`` gets the number of images."""
        size = self.detector.batch_size
        pending: list[Tensor] = []
        for batch in as_batches(images, size):
            for image in batch:
                counted[0] += 1
                pending += list(self.inputs(image.float()))
                while len(pending) >= size:
                    yield torch.stack(pending[:size])
                    pending = pending[size:]
        if pending:
            yield torch.stack(pending)

    def fit(self, images: ImageInput):
        self.detector.fit(self.input_batches(images, [0]))
        return self

    def check_growable(self) -> None:
        self.detector.check_growable()

    def update(self, images: ImageInput):
        self.detector.update(self.input_batches(images, [0]))
        return self

    def calibrate(self, prediction: Prediction | NativeSizePrediction, **rule: Any):
        """``Detector.calibrate`` (the pixel threshold comes from each map's maximum, which maps of any size
        have)."""
        maxima = torch.stack([m.max() for m in prediction.maps])[:, None, None]  # (N, 1, 1)
        self.detector.calibrate(Prediction(prediction.scores, maxima), **rule)
        return self

    def set_thresholds(self, thresholds: Thresholds):
        self.detector.set_thresholds(thresholds)
        return self

    def save(self, folder: str | Path) -> Path:
        """The detector's folder, plus ``settings_file`` so that loading it wraps it again."""
        folder = self.detector.save(folder)
        (Path(folder) / self.settings_file).write_text(json.dumps(self.settings()))
        return folder


def read_wrapper(folder: Path, detector: Detector) -> Detector | NativeSizeDetector:
    """``detector`` loaded from ``folder``, wrapped as its settings file says (as it is without one)."""
    from lineguard.letterbox import LetterboxDetector
    from lineguard.methods.model_folder import ModelFolderError
    from lineguard.tiling import TiledDetector

    for wrapper in (TiledDetector, LetterboxDetector):
        path = folder / wrapper.settings_file
        if path.is_file():
            try:
                return wrapper.from_settings(detector, json.loads(path.read_text(encoding="utf-8")))
            except (ValueError, TypeError, KeyError) as exc:  # a wrapper's own errors are ValueErrors
                raise ModelFolderError(f"{path}: not a {wrapper.settings_file} file ({exc})") from None
    return detector
