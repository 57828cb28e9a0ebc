"""Zero-shot detectors whose normal and abnormal embeddings were learned on other, labelled categories.

AnomalyCLIP learns object-agnostic text prompts on CLIP; on a backbone without a text tower the two
embeddings are learned directly in the patch-feature space. Either way a part is then judged with no image of
its own category at all: every patch feature is compared with the two embeddings (``glocal.py``), so
``fit`` has nothing to do. The learned prompts live in a folder (``prompts.safetensors`` + ``prompts.json``,
written by :func:`save_prompts`) that the detector reads on first use; once read they are learned state, so
a saved model carries them and needs the folder no more.

A subclass declares how images become embeddings and what is learned:
``encode`` (images -> global (B, D) and patch (B, L, D, h, w) features, frozen), ``new_learner`` (the
module of learnable prompts), ``embeddings`` (learner -> the (2, D) normal and abnormal embeddings) and
``signature`` (the parameters that define the feature space and the learner: prompts learned under another
signature are refused).

Letters: B images, L layers, D embedding width, h × w feature grid, S image size.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from lineguard.errors import LineguardError
from lineguard.features.extractor import fit_size
from lineguard.methods.base import Detector, ImageInput, NoImagesError, NotFittedError, Prediction, as_batches
from lineguard.progress import track
from lineguard.prompts.glocal import class_logits, patch_probabilities, zero_shot_scores
from lineguard.training import resolve_device

PROMPTS_FILE = "prompts.safetensors"
INFO_FILE = "prompts.json"


class PromptsError(LineguardError, ValueError):
    """A prompts folder that is missing, malformed, or learned for another method or feature space."""


class PromptDetector(Detector):
    """Base of the prompt-learning detectors; subclasses set ``name`` and the four hooks below."""

    uses_normal_images = False
    file_params = ("weights", "prompts")  # a saved model keeps a copy of its prompts folder
    prompts: str | None
    image_size: int
    sigma: float
    device: str
    batch_size: int

    # -- what a subclass declares ------------------------------------------------------------------------
    def encode(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """(B, 3, S, S) in [0, 1], on the device -> global (B, D) and patch (B, L, D, h, w) features."""
        raise NotImplementedError

    def new_learner(self) -> nn.Module:
        raise NotImplementedError

    def embeddings(self, learner: nn.Module) -> Tensor:
        """The learner's (2, D) normal and abnormal embeddings, differentiable in its parameters."""
        raise NotImplementedError

    def signature(self) -> dict[str, Any]:
        raise NotImplementedError

    # -- learned prompts ---------------------------------------------------------------------------------
    def _fit(self, images: ImageInput) -> None:
        """Nothing to learn from normal images: the prompts come from other categories (``train_prompts``)."""

    def learner(self) -> nn.Module:
        """The learned prompts, read from the ``prompts`` folder on first use (then kept as learned state)."""
        if getattr(self, "_learner", None) is None:
            if not hasattr(self, "prompts_"):
                if self.prompts is None:
                    raise NotFittedError(f"{self.name} needs learned prompts: pass prompts=FOLDER, made by "
                                         f"`lineguard train-prompts --method {self.name}`")
                self.prompts_, self.prompts_info_ = read_prompts(self.prompts)
            self._learner = self._checked_learner(self.prompts_, self.prompts_info_)
        return self._learner

    def _checked_learner(self, state: dict[str, Tensor], info: dict[str, Any]) -> nn.Module:
        where = self.prompts or "the saved model"
        if info.get("method") != self.name:
            raise PromptsError(f"{where}: prompts learned for {info.get('method')!r}, not {self.name!r}")
        mine, theirs = json.loads(json.dumps(self.signature())), info.get("signature", {})
        differ = sorted(k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k))
        if differ:
            raise PromptsError(f"{where}: the prompts were learned with "
                               + ", ".join(f"{k}={theirs.get(k)!r}" for k in differ)
                               + "; this detector has " + ", ".join(f"{k}={mine.get(k)!r}" for k in differ))
        learner = self.new_learner()
        try:
            learner.load_state_dict(state)
        except RuntimeError as exc:
            raise PromptsError(f"{where}: the prompt tensors do not fit the learner: {exc}") from exc
        return learner.to(resolve_device(self.device)).eval().requires_grad_(False)

    def keep_prompts(self, learner: nn.Module, info: dict[str, Any]) -> None:
        """Adopt freshly trained prompts (``info``: how they were trained) as learned state."""
        self.prompts_ = {k: v.detach().cpu().clone() for k, v in learner.state_dict().items()}
        self.prompts_info_ = {"method": self.name, "signature": self.signature(), **info}
        self._learner = learner.eval().requires_grad_(False)
        self._text = None

    def text_embeddings(self) -> Tensor:
        """(2, D) normal and abnormal embeddings of the learned prompts, computed once."""
        if getattr(self, "_text", None) is None:
            with torch.no_grad():
                self._text = self.embeddings(self.learner())
        return self._text

    # -- scoring -----------------------------------------------------------------------------------------
    @torch.no_grad()
    def _predict(self, images: ImageInput) -> Prediction:
        texts = self.text_embeddings()
        device = resolve_device(self.device)
        size = (self.image_size, self.image_size)
        scores, maps = [], []
        for batch in track(as_batches(images, self.batch_size), f"{self.name}: scoring"):
            image_features, patches = self.encode(fit_size(batch.float(), self.image_size).to(device))
            image_abnormal = class_logits(image_features, texts).softmax(-1)[:, 1]  # -> (B,)
            patch_abnormal = patch_probabilities(patches, texts)[:, :, 1]  # -> (B, L, h, w)
            s, m = zero_shot_scores(image_abnormal, patch_abnormal, size, self.sigma)
            scores.append(s.cpu())
            maps.append(m.cpu())
        if not scores:
            raise NoImagesError(f"{self.name}: predict needs at least one image")
        return Prediction(torch.cat(scores), torch.cat(maps))

    def save(self, folder: str | Path) -> Path:
        self.learner()  # the prompts become learned state, so the model folder is complete without them
        return super().save(folder)


def save_prompts(detector: PromptDetector, folder: str | Path) -> Path:
    """Write the detector's learned prompts: ``prompts.safetensors`` (tensors) and ``prompts.json``."""
    detector.learner()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in detector.prompts_.items()}, str(folder / PROMPTS_FILE))
    (folder / INFO_FILE).write_text(json.dumps(detector.prompts_info_, indent=2))
    return folder


def read_prompts(folder: str | Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """The tensors and the description of a prompts folder (safetensors + JSON, no pickles)."""
    folder = Path(folder)
    if not (folder / PROMPTS_FILE).is_file() or not (folder / INFO_FILE).is_file():
        raise PromptsError(f"{folder} is not a prompts folder: it needs {PROMPTS_FILE} and {INFO_FILE} (made "
                           "by `lineguard train-prompts`)")
    try:
        info = json.loads((folder / INFO_FILE).read_text())
    except json.JSONDecodeError as exc:
        raise PromptsError(f"{folder / INFO_FILE}: not JSON ({exc})") from exc
    return load_file(str(folder / PROMPTS_FILE)), info
