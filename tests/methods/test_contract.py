"""Every registered method fits, finds planted defects, saves and loads to identical scores, and exports to
ONNX with the same answers on onnxruntime and OpenVINO (or refuses, saying why)."""

from __future__ import annotations

import copy

import pytest
import torch

import lineguard
from lineguard.export import RUNTIMES, export_detector, load_export
from lineguard.export.graphs import NotExportableError, refusal
from lineguard.methods import NotFittedError, available_methods, method_class
from lineguard.metrics import image_auroc
from lineguard.scoring.threshold import calibrate
from tests.conftest import SIZE
from tests.export.parity import assert_same_answers

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


@pytest.mark.slow
def test_export_gives_the_models_answers(fitted, parts, tmp_path):
    """Same scores, maps, decisions and regions from the exported graph, on both runtimes, in batches of 5 (the
    graph was traced on 1). Thresholds: the model's, or calibrated on the test batch's good images."""
    images, labels = parts[1], parts[2]
    detector, result = fitted
    reason = refusal(detector.name, detector.uses_normal_images)
    if reason:
        with pytest.raises(NotExportableError, match="cannot export"):
            export_detector(detector, tmp_path / "export")
        return
    good = labels == 0
    thresholds = detector.thresholds or calibrate(result.scores[good], result.maps[good])
    model = copy.copy(detector).set_thresholds(thresholds)  # the fixture's detector stays as it is
    export_detector(model, tmp_path / "export")
    scores, maps = result.scores.numpy(), result.maps.numpy()
    decisions = thresholds.normalize_scores(scores) >= 1
    assert decisions.any() and not decisions.all(), "the decisions to compare must include both kinds"
    for runtime in RUNTIMES:
        exported = load_export(tmp_path / "export", runtime=runtime, batch_size=5)
        assert exported.thresholds == thresholds and exported.name == detector.name
        got = exported.predict(images.numpy())
        assert_same_answers(got.scores, got.maps, scores, maps, thresholds, f"{detector.name} on {runtime}")


@pytest.mark.parametrize("name", [m for m in available_methods() if method_class(m).uses_normal_images])
def test_predict_before_fit_is_a_clear_error(name, parts):
    with pytest.raises(NotFittedError, match="fit"):
        build(name).predict(parts[1])


def test_unknown_method_and_parameter():
    with pytest.raises(ValueError, match="unknown method 'nope'.*knn"):
        lineguard.create("nope")
    with pytest.raises(TypeError, match="no parameter.*bogus"):
        lineguard.create("knn", bogus=1)
