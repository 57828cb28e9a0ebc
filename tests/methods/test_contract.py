"""Every registered method fits, finds planted defects, saves and loads to identical scores, and scores as the
saved values say it did (a refactoring moves no number)."""

from __future__ import annotations

import json

import pytest
import torch

import lineguard
from lineguard.errors import ParameterError
from lineguard.methods import NotFittedError, available_methods, method_class
from lineguard.metrics import image_auroc
from tests.conftest import SIZE
from tests.methods.saved_values import PATH, UNSAVED, fingerprint

# Settings that keep a method fast on 2 CPU cores; everything else stays at its default.
FAST: dict[str, dict] = {
    "autoencoder": {"epochs": 60, "batch_size": 4, "channels": [16, 32, 64, 64], "lr": 5e-3},
    "dfr": {"epochs": 5, "batch_size": 256},
    "cse": {"epochs": 2, "batch_size": 4, "clusters": 32, "pairs": 128, "bank_patches": 512},
}


def build(name: str):
    params = {"image_size": SIZE} if "image_size" in method_class(name).param_names() else {}
    return lineguard.create(name, **params, **FAST.get(name, {}))


@pytest.fixture(scope="module", params=available_methods())
def fitted(request, parts):
    support, test, labels, masks = parts
    detector = build(request.param)
    if detector.uses_normal_images:
        detector.fit(support)
    return detector, detector.predict(test)


def test_planted_defects_score_above_clean_images(fitted, parts):
    _, test, labels, masks = parts
    detector, result = fitted
    assert result.scores.shape == (len(test),)
    assert result.maps.shape == (len(test), SIZE, SIZE)
    assert image_auroc(labels, result.scores) >= 0.9, detector.name
    # the map's peak of each defective image lies on (or within 8 px of) the defect
    for i in torch.nonzero(labels).flatten():
        y, x = divmod(result.maps[i].argmax().item(), SIZE)
        near = torch.nn.functional.max_pool2d(masks[i][None, None].float(), 17, 1, 8)[0, 0]
        assert near[y, x] > 0, f"{detector.name}: image {i} peaks at {(y, x)}, off the defect"


def test_scores_and_maps_are_the_saved_ones(fitted):
    detector, result = fitted
    if detector.name in UNSAVED:
        pytest.skip(f"{detector.name}: no saved values while its algorithm changes")
    saved = json.loads(PATH.read_text())[detector.name]
    now = fingerprint(result.scores, result.maps)
    assert now["scores"] == saved["scores"], detector.name
    assert now == saved, f"{detector.name}: maps differ (max {now['maps_max']} vs {saved['maps_max']}, mean " \
                         f"{now['maps_mean']} vs {saved['maps_mean']})"


def test_save_load_gives_identical_scores(fitted, parts, tmp_path):
    _, test, _, _ = parts
    detector, result = fitted
    detector.save(tmp_path / "model")
    assert not list(tmp_path.glob("model/*.pkl")) and (tmp_path / "model" / "config.json").exists()
    reloaded = lineguard.load(tmp_path / "model")
    assert reloaded.get_params() == detector.get_params()
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
