"""The one interface every detector follows, and the registry that names them.

A detector is built from explicit keyword-only parameters, stored unchanged and checked when its work starts —
at ``fit``, or at ``predict`` for a method that learns nothing — against their annotations and the declared
``parameter_constraints`` (:mod:`lineguard.params`). It learns state in attributes ending in ``_`` and
does no I/O: it takes image tensors and returns a :class:`Prediction`.
Saving is generic: tensors of the learned state (and dicts of tensors, such as a trained network's
``state_dict``) go to ``state.safetensors``, everything else to ``config.json``, and files the parameters
name are copied in (:mod:`lineguard.methods.model_folder`, which also says what loading checks).

Letters: N images, H × W image size.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Self

from torch import Tensor

from lineguard.errors import LineguardError, ParameterError
from lineguard.methods import model_folder
from lineguard.methods.model_folder import THRESHOLD_STATE
from lineguard.params import POSITIVE, Constraints, Each, Interval, check_names, check_params, param_names
from lineguard.scoring.threshold import DEFAULT_RULE, NotCalibratedError, Thresholds
from lineguard.scoring.threshold import calibrate as calibrate_thresholds

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


class NoImagesError(LineguardError, ValueError):
    """``fit`` or ``predict`` was handed no image (or too few) to work on."""


class NotFittedError(LineguardError, RuntimeError):
    """``predict`` or ``save`` was called before ``fit``."""


class CannotGrowError(LineguardError, TypeError):
    """``update`` on a method whose reference cannot take more normal images without refitting."""


class Detector(ABC):
    """Base of all methods. Subclasses set ``name``, take ``image_size`` and implement ``_fit`` and ``_predict``;
    the public ``fit`` and ``predict`` check the parameters and the fitted state first."""

    name: ClassVar[str]
    image_size: int | tuple[int, int]  # the working resolution S (S × S) or (H, W): maps come at it
    #: Allowed values of parameters, by name (a class's own are merged over its bases'; names a class does not
    #: take are ignored). Types come from the constructor's annotations.
    parameter_constraints: ClassVar[Constraints] = {
        "image_size": [POSITIVE, Each(POSITIVE)], "batch_size": [POSITIVE], "sigma": [Interval(float, 0, None)],
        "patch_size": [Interval(int, 1, None, odd=True)]}
    #: False for test-batch (zero-data) methods: they score the batch given to ``predict`` against itself.
    uses_normal_images: ClassVar[bool] = True
    #: ``predict`` takes tensors (an exported model takes numpy arrays: ``lineguard.inspect.Scorer``).
    array_input: ClassVar[bool] = False
    #: Parameters that name a file or folder the detector reads: a saved model keeps copies inside its folder.
    file_params: ClassVar[tuple[str, ...]] = ("weights",)
    #: Learned tensors (or a network's entries, by their last name) holding indices or counts: int64, not float32.
    integer_state: ClassVar[frozenset[str]] = frozenset({"num_batches_tracked"})
    #: True where ``update`` can add normal images to the fitted reference (a bank, running statistics).
    grows: ClassVar[bool] = False

    @classmethod
    def param_names(cls) -> list[str]:
        return param_names(cls)

    @classmethod
    def constraints(cls) -> Constraints:
        """``parameter_constraints`` of the class and its bases, the class's own winning."""
        merged: dict[str, Any] = {}
        for klass in reversed(cls.__mro__):
            merged.update(vars(klass).get("parameter_constraints", {}))
        return merged

    def validate_params(self) -> None:
        """Raise :class:`ParameterError` naming the first parameter whose type or value is not allowed. A method
        with rules between parameters extends this (calling it first)."""
        check_params(self.name, type(self).__init__, self.get_params(), self.constraints())

    def get_params(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.param_names()}

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({params})"

    def fit(self, images: ImageInput = ()) -> Self:
        """Learn from normal images (few-shot: the support set). Test-batch methods accept nothing here."""
        self.validate_params()
        vars(self).pop("updates_", None)  # a new fit starts a new history
        self._fit(images)
        return self

    def update(self, images: ImageInput) -> Self:
        """Add normal images to the fitted reference without refitting (and without the images it was fitted
        on), and note how many and when in ``updates_``, which is saved with the model. Thresholds stay as they
        were: calibrate again on good images neither fitted nor added."""
        self.check_fitted()
        self.check_growable()
        self.validate_params()
        added = self._update(images)
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        self.updates_ = [*getattr(self, "updates_", []), {"images": added, "at": stamp}]
        return self

    def check_growable(self) -> None:
        """Raise :class:`CannotGrowError` when ``update`` cannot work on this detector."""
        if not self.grows:
            raise CannotGrowError(f"{self.name} cannot add normal images to a fitted model: fit it again on all "
                                  "of them (update works for patchcore, fewshot, knn, spade and padim)")

    def _update(self, images: ImageInput) -> int:
        """Grow the learned state with the normal images; return how many were added."""
        raise NotImplementedError

    def predict(self, images: ImageInput) -> Prediction:
        """Score images; maps come at the detector's working resolution. A test-batch method scores the batch
        against itself (and checks its parameters here, having no fit)."""
        self.check_fitted()
        if not self.uses_normal_images:
            self.validate_params()
        return self._predict(images)

    @abstractmethod
    def _fit(self, images: ImageInput) -> None:
        """Learn the state (attributes ending in ``_``) from the normal images."""

    @abstractmethod
    def _predict(self, images: ImageInput) -> Prediction:
        """Score the images with the learned state."""

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

    def calibrate(self, prediction: Prediction, *, rule: str = DEFAULT_RULE, false_alarm_rate: float = 0.01,
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
        """Write ``config.json`` (method, parameters, non-tensor state) and ``state.safetensors``, and copy the
        files the parameters name into ``folder``."""
        self.check_fitted()
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        learned = self.learned_attributes()
        others = {k: v for k, v in learned.items() if not (isinstance(v, Tensor) or is_tensor_dict(v))}
        params = model_folder.bundle_files(self.get_params(), self.file_params, folder)
        return model_folder.write_folder(folder, self.name, params, flatten_tensors(learned), others)

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
        raise RuntimeError(f"method name {cls.name!r} registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def available_methods() -> list[str]:
    return sorted(_REGISTRY)


def method_class(name: str) -> type[Detector]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ParameterError(f"unknown method {name!r}; available: {', '.join(available_methods())}") from None


def create(name: str, **params: Any) -> Detector:
    """Build a detector by registry name, e.g. ``create("knn", backbone="effnet-lite0")``; a name the constructor
    does not take is refused here, values when the detector starts work (``Detector.validate_params``)."""
    cls = method_class(name)
    check_names(name, cls, list(params))
    return cls(**params)


def load(folder: str | Path) -> Detector:
    """Load a detector saved with :meth:`Detector.save`: safetensors + JSON, from inside ``folder`` only,
    every part checked (:mod:`lineguard.methods.model_folder`); tiled or letterboxed again if it was saved so."""
    folder = Path(folder)
    method, params, state = model_folder.read_config(folder)
    where = folder / model_folder.CONFIG_FILE
    try:
        cls = method_class(method)
        params = model_folder.resolve_files(params, cls.file_params, folder)
        detector = create(method, **params)
        detector.validate_params()
    except ParameterError as exc:
        raise model_folder.ModelFolderError(f"{where}: {exc}") from None
    tensors = model_folder.read_tensors(folder)
    model_folder.check_state(cls, tensors, state, folder)
    detector._restore(tensors, state)
    from lineguard.native import read_wrapper  # tiles and letterbox wrap detectors: imported late

    return read_wrapper(folder, detector)


def as_batches(images: ImageInput, batch_size: int) -> Iterable[Tensor]:
    """Yield (B, 3, H, W) batches from a tensor or pass an iterable of batches through."""
    if isinstance(images, Tensor):
        if images.ndim == 3:
            images = images[None]
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (N, 3, H, W), got {tuple(images.shape)}")
        return images.split(batch_size)
    return images
