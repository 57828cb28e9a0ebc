"""The one interface every detector follows, and the registry that names them.

A detector is built from explicit keyword parameters (stored unchanged, checked at ``fit``), learns state in
attributes ending in ``_`` and does no I/O: it takes image tensors and returns a :class:`Prediction`.
Saving is generic: tensors of the learned state (and dicts of tensors, such as a trained network's
``state_dict``) go to ``state.safetensors``, everything else to ``config.json`` — no pickles, so a model
folder from anyone is safe to load.

Letters: N images, H × W image size.
"""

from __future__ import annotations

import inspect
import json
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar, Self

from safetensors.torch import load_file, save_file
from torch import Tensor

from lineguard.scoring.threshold import NotCalibratedError, Thresholds
from lineguard.scoring.threshold import calibrate as calibrate_thresholds

FORMAT_VERSION = 1
ImageInput = Tensor | Iterable[Tensor]  # (N, 3, H, W) floats in [0, 1], or an iterable of such batches


@dataclass
class Prediction:
    """What every detector returns: one score per image and one map per image (higher = more anomalous)."""

    scores: Tensor  # (N,)
    maps: Tensor  # (N, H, W)

    def __post_init__(self) -> None:
        if self.scores.ndim != 1 or self.maps.ndim != 3 or len(self.scores) != len(self.maps):
            raise ValueError(f"scores (N,) and maps (N, H, W) disagree: {tuple(self.scores.shape)} vs "
                             f"{tuple(self.maps.shape)}")


class NotFittedError(RuntimeError):
    """``predict`` or ``save`` was called before ``fit``."""


#: Learned state written by :meth:`Detector.calibrate`: saved with the model, but not what makes it fitted.
THRESHOLD_STATE = tuple(f"{field.name}_" for field in fields(Thresholds))


class Detector(ABC):
    """Base of all methods. Subclasses set ``name`` and implement ``fit`` and ``predict``."""

    name: ClassVar[str]
    #: False for test-batch (zero-data) methods: they score the batch given to ``predict`` against itself.
    uses_normal_images: ClassVar[bool] = True

    @classmethod
    def param_names(cls) -> list[str]:
        return [p for p in inspect.signature(cls.__init__).parameters if p != "self"]

    def get_params(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.param_names()}

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({params})"

    @abstractmethod
    def fit(self, images: ImageInput) -> Self:
        """Learn from normal images (few-shot: the support set). Test-batch methods accept nothing here."""

    @abstractmethod
    def predict(self, images: ImageInput) -> Prediction:
        """Score images; maps come at the detector's working resolution."""

    # -- learned state ------------------------------------------------------------------------------------
    def learned_attributes(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if k.endswith("_") and not k.startswith("_")}

    @property
    def is_fitted(self) -> bool:
        fitted = set(self.learned_attributes()) - set(THRESHOLD_STATE)
        return bool(fitted) or not self.uses_normal_images

    def check_fitted(self) -> None:
        if not self.is_fitted:
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet: call fit(normal_images) first")

    # -- thresholds ---------------------------------------------------------------------------------------
    @property
    def thresholds(self) -> Thresholds | None:
        """The image and pixel thresholds learned by :meth:`calibrate` (or set by hand), None before."""
        if not hasattr(self, THRESHOLD_STATE[0]):
            return None
        return Thresholds(**{name[:-1]: getattr(self, name) for name in THRESHOLD_STATE})

    def set_thresholds(self, thresholds: Thresholds) -> Self:
        for name in THRESHOLD_STATE:
            setattr(self, name, getattr(thresholds, name[:-1]))
        return self

    def calibrate(self, prediction: Prediction, *, rule: str = "mu3sigma", false_alarm_rate: float = 0.01,
                  labels: Tensor | None = None) -> Self:
        """Learn thresholds from the prediction on held-out images (good ones; labelled ones for ``f1``);
        see :mod:`lineguard.scoring.threshold` for the rules. Never calibrate on the images given to ``fit``,
        and calibrate again after fitting again: ``fit`` leaves old thresholds in place."""
        return self.set_thresholds(calibrate_thresholds(prediction.scores, prediction.maps, rule=rule,
                                                        false_alarm_rate=false_alarm_rate, labels=labels))

    def normalize(self, prediction: Prediction) -> Prediction:
        """Scores and maps on the normalised scale: a typical good part 0, the threshold 1.0, for every method."""
        thresholds = self.thresholds
        if thresholds is None:
            raise NotCalibratedError(f"this {type(self).__name__} has no thresholds: calibrate it first "
                                     "(`lineguard calibrate MODEL_DIR ...`)")
        return Prediction(thresholds.normalize_scores(prediction.scores),
                          thresholds.normalize_maps(prediction.maps))

    def save(self, folder: str | Path) -> Path:
        """Write ``config.json`` (method, parameters, non-tensor state) and ``state.safetensors``."""
        self.check_fitted()
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        learned = self.learned_attributes()
        tensors = {k: v.detach().cpu().contiguous() for k, v in flatten_tensors(learned).items()}
        others = {k: v for k, v in learned.items() if not (isinstance(v, Tensor) or is_tensor_dict(v))}
        save_file(tensors, str(folder / "state.safetensors"))
        config = {"format_version": FORMAT_VERSION, "method": self.name, "params": self.get_params(),
                  "state": others}
        (folder / "config.json").write_text(json.dumps(config, indent=2, default=str))
        return folder

    def _restore(self, tensors: dict[str, Tensor], state: dict[str, Any]) -> None:
        for key, value in {**unflatten_tensors(tensors), **state}.items():
            setattr(self, key, value)


def is_tensor_dict(value: Any) -> bool:
    """A trained network's ``state_dict`` kept as learned state, e.g. ``network_ = {"0.weight": …}``."""
    return isinstance(value, dict) and bool(value) and all(isinstance(v, Tensor) for v in value.values())


def flatten_tensors(learned: dict[str, Any]) -> dict[str, Tensor]:
    """Tensor attributes as they are, tensor dicts as ``"<attribute>.<key>"`` (attribute names have no dot)."""
    flat = {k: v for k, v in learned.items() if isinstance(v, Tensor)}
    for name, value in learned.items():
        if is_tensor_dict(value):
            flat.update({f"{name}.{key}": tensor for key, tensor in value.items()})
    return flat


def unflatten_tensors(flat: dict[str, Tensor]) -> dict[str, Tensor | dict[str, Tensor]]:
    """Inverse of :func:`flatten_tensors`."""
    learned: dict[str, Tensor | dict[str, Tensor]] = {}
    for key, tensor in flat.items():
        name, dot, inner = key.partition(".")
        if dot:
            learned.setdefault(name, {})[inner] = tensor  # type: ignore[index]
        else:
            learned[key] = tensor
    return learned


_REGISTRY: dict[str, type[Detector]] = {}


def register(cls: type[Detector]) -> type[Detector]:
    """Class decorator: make a detector available by its ``name`` to ``create``, the CLI and benchmarks."""
    if cls.name in _REGISTRY:
        raise ValueError(f"method name {cls.name!r} registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def available_methods() -> list[str]:
    return sorted(_REGISTRY)


def method_class(name: str) -> type[Detector]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; available: {', '.join(available_methods())}") from None


def create(name: str, **params: Any) -> Detector:
    """Build a detector by registry name, e.g. ``create("knn", backbone="effnet-lite0")``."""
    cls = method_class(name)
    unknown = sorted(set(params) - set(cls.param_names()))
    if unknown:
        raise TypeError(f"{name} has no parameter(s) {', '.join(unknown)}; "
                        f"its parameters are: {', '.join(cls.param_names())}")
    return cls(**params)


def load(folder: str | Path) -> Detector:
    """Load a detector saved with :meth:`Detector.save` (safetensors + JSON only)."""
    folder = Path(folder)
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{folder} is not a lineguard model folder: {config_path.name} is missing")
    config = json.loads(config_path.read_text())
    if config.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{config_path}: unsupported model format {config.get('format_version')!r}")
    detector = create(config["method"], **config["params"])
    state_path = folder / "state.safetensors"
    tensors = load_file(str(state_path)) if state_path.is_file() else {}
    detector._restore(tensors, config.get("state", {}))
    return detector


def as_batches(images: ImageInput, batch_size: int) -> Iterable[Tensor]:
    """Yield (B, 3, H, W) batches from a tensor or pass an iterable of batches through."""
    if isinstance(images, Tensor):
        if images.ndim == 3:
            images = images[None]
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (N, 3, H, W), got {tuple(images.shape)}")
        return images.split(batch_size)
    return images
