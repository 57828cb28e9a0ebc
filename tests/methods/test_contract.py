"""Every registered method fits, finds planted defects, saves and loads to identical scores."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import lineguard
from lineguard.errors import ParameterError
from lineguard.methods import NotFittedError, available_methods, method_class
from lineguard.metrics import image_auroc
from lineguard.prompts.detector import PromptDetector, save_prompts
from lineguard.prompts.training import train_prompts
from tests.conftest import SIZE
from tests.prompts.tiny import labelled, tiny

# Settings that keep a method fast on 2 CPU cores; everything else stays at its default.
FAST: dict[str, dict] = {
    "autoencoder": {"epochs": 60, "batch_size": 4, "channels": [16, 32, 64, 64], "lr": 5e-3},
    "dfr": {"epochs": 5, "batch_size": 256},
    "cse": {"epochs": 2, "batch_size": 4, "clusters": 32, "pairs": 128, "bank_patches": 512},
    "anomalyclip": {"n_ctx": 4, "deep_depth": 2, "deep_length": 2},
}


# The text-prompt methods run on CLIP, whose weights this environment does not have: they are built on a tiny
# random CLIP (shapes, saving and loading hold; finding defects needs real weights, see README).
RANDOM_CLIP = {"anomalyclip", "winclip", "winclip+"}


def build(name: str, prompts: str | None = None):
    if name in RANDOM_CLIP:
        params = tiny(image_size=SIZE)
    else:
        params = {"image_size": SIZE} if "image_size" in method_class(name).param_names() else {}
    if prompts is not None:
        params["prompts"] = prompts
    return lineguard.create(name, **params, **FAST.get(name, {}))


def learned_prompts(name: str, folder) -> str | None:
    """Prompt-learning methods learn their prompts first, on synthetic parts other than the test's."""
    if not issubclass(method_class(name), PromptDetector):
        return None
    detector = build(name)
    epochs = 2 if name in RANDOM_CLIP else 20  # random CLIP weights: only shapes and saving are checked
    train_prompts(detector, labelled("part", SIZE, seed=21), epochs=epochs, batch_size=4)
    return str(save_prompts(detector, folder))


@pytest.fixture(scope="module", params=available_methods())
def fitted(request, parts, tmp_path_factory):
    support, test, labels, masks = parts
    detector = build(request.param, learned_prompts(request.param, tmp_path_factory.mktemp("prompts")))
    if detector.uses_normal_images:
        detector.fit(support)
    return detector, detector.predict(test)


def test_planted_defects_score_above_clean_images(fitted, parts):
    _, test, labels, masks = parts
    detector, result = fitted
    assert result.scores.shape == (len(test),)
    assert result.maps.shape == (len(test), SIZE, SIZE)
    if detector.name in RANDOM_CLIP:
        pytest.skip("random CLIP weights find nothing; the text-prompt methods need pretrained CLIP")
    assert image_auroc(labels, result.scores) >= 0.9, detector.name
    # the map's peak of each defective image lies on (or within 8 px of) the defect
    for i in torch.nonzero(labels).flatten():
        y, x = divmod(result.maps[i].argmax().item(), SIZE)
        near = torch.nn.functional.max_pool2d(masks[i][None, None].float(), 17, 1, 8)[0, 0]
        assert near[y, x] > 0, f"{detector.name}: image {i} peaks at {(y, x)}, off the defect"


def test_save_load_gives_identical_scores(fitted, parts, tmp_path):
    _, test, _, _ = parts
    detector, result = fitted
    detector.save(tmp_path / "model")
    assert not list(tmp_path.glob("model/*.pkl")) and (tmp_path / "model" / "config.json").exists()
    reloaded = lineguard.load(tmp_path / "model")
    files = set(detector.file_params)  # files the parameters name are copied into the model folder
    assert ({k: v for k, v in reloaded.get_params().items() if k not in files}
            == {k: v for k, v in detector.get_params().items() if k not in files})
    for name in files & set(detector.param_names()):
        if detector.get_params()[name] not in (None, "random"):
            assert Path(reloaded.get_params()[name]).is_relative_to((tmp_path / "model").resolve())
    again = reloaded.predict(test)
    assert torch.equal(again.scores, result.scores)
    assert torch.equal(again.maps, result.maps)


@pytest.mark.parametrize("name", [m for m in available_methods() if method_class(m).uses_normal_images])
def test_predict_before_fit_is_a_clear_error(name, parts):
    with pytest.raises(NotFittedError, match="fit"):
        build(name).predict(parts[1])


def test_unknown_method_and_parameter():
    with pytest.raises(ValueError, match="unknown method 'nope'.*knn"):
        lineguard.create("nope")
    with pytest.raises(ParameterError, match="no parameter.*bogus"):
        lineguard.create("knn", bogus=1)
