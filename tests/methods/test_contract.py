"""Every registered method fits, finds planted defects, saves and loads to identical scores, scores as the
saved values say it did (a refactoring moves no number beyond rounding), and exports to ONNX with the same
answers on onnxruntime and OpenVINO (or refuses, saying why)."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
import torch

import lineguard
from lineguard.errors import ParameterError
from lineguard.export import RUNTIMES, export_detector, load_export
from lineguard.export.graphs import NotExportableError, refusal
from lineguard.methods import NotFittedError, available_methods, method_class
from lineguard.metrics import image_auroc
from lineguard.prompts.detector import PromptDetector, save_prompts
from lineguard.prompts.training import train_prompts
from lineguard.scoring.threshold import calibrate
from tests.conftest import SIZE
from tests.export.parity import assert_same_answers
from tests.methods.saved_values import DEFAULT_TOLERANCE, PATH, THREADS, TOLERANCE, fingerprint
from tests.prompts.tiny import labelled, tiny

# Settings that keep a method fast on 2 CPU cores; everything else stays at its default.
FAST: dict[str, dict] = {
    "autoencoder": {"epochs": 60, "batch_size": 4, "channels": [16, 32, 64, 64], "lr": 5e-3},
    "dfr": {"epochs": 5, "patch_batch_size": 256},
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


@pytest.fixture(scope="module", autouse=True)
def saved_threads():
    """Every test here runs with the threads the saved values were computed with: sums are taken in the same
    order, so a reloaded or re-run model can be held to identical numbers on any machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module", params=available_methods())
def fitted(request, parts, tmp_path_factory):
    support, test, labels, masks = parts
    return fit_and_predict(request.param, tmp_path_factory.mktemp("prompts"), support, test)


def fit_and_predict(name: str, folder, support: torch.Tensor, test: torch.Tensor):
    """(detector, prediction of ``test``): the method with its fast settings, fitted on ``support`` when it
    learns from normal images (prompt methods' prompts learned into ``folder``)."""
    detector = build(name, learned_prompts(name, folder))
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


def test_scores_and_maps_are_the_saved_ones(fitted):
    detector, result = fitted
    saved = json.loads(PATH.read_text())[detector.name]
    now = fingerprint(result.scores, result.maps)
    tolerance = TOLERANCE.get(detector.name, DEFAULT_TOLERANCE)
    scores, saved_scores = torch.tensor(now["scores"]), torch.tensor(saved["scores"])
    assert (scores - saved_scores).abs().max() <= tolerance * saved_scores.abs().max(), \
        f"{detector.name}: scores {now['scores'][:4]}… against saved {saved['scores'][:4]}…"
    for key in ("maps_max", "maps_mean", "maps_std"):
        assert abs(now[key] - saved[key]) <= tolerance * saved["maps_max"], \
            f"{detector.name}: {key} {now[key]} against saved {saved[key]}"


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
    with pytest.raises(ParameterError, match="no parameter.*bogus"):
        lineguard.create("knn", bogus=1)


def constrained(name: str) -> list[tuple[str, object]]:
    """(parameter, a value its constraints refuse) for every constrained parameter of method ``name``."""
    cls = method_class(name)
    return [(param, constraints[0].invalid_example()) for param, constraints in cls.constraints().items()
            if param in cls.param_names()]


def start_work(detector) -> None:
    """The moment parameters are checked: fit, or predict for a method that learns nothing."""
    images = torch.zeros(2, 3, 32, 32)
    detector.fit(images) if detector.uses_normal_images else detector.predict(images)


@pytest.mark.parametrize(("name", "param", "bad"), [(name, param, bad) for name in available_methods()
                                                    for param, bad in constrained(name)])
def test_a_value_outside_a_parameters_constraints_is_refused_by_name(name, param, bad):
    detector = lineguard.create(name, **{param: bad}, **({"backbone": "no-such-backbone"}
                                                         if "backbone" in method_class(name).param_names() else {}))
    with pytest.raises(ParameterError, match=f"{re.escape(name)} parameter {param} must be .*got "
                                             f"{re.escape(repr(bad))}"):
        start_work(detector)


@pytest.mark.parametrize(("name", "param"), [(name, param) for name in available_methods()
                                             for param in method_class(name).param_names()])
def test_a_value_of_the_wrong_type_is_refused_by_name(name, param):
    bad = {"not": "a value"}  # no parameter takes a dict
    detector = lineguard.create(name, **{param: bad})
    with pytest.raises(ParameterError, match=f"{re.escape(name)} parameter {param} must be .*got "
                                             f"{re.escape(repr(bad))}"):
        start_work(detector)


@pytest.mark.parametrize("name", available_methods())
def test_defaults_pass_the_contract_and_parameters_are_keyword_only(name):
    cls = method_class(name)
    cls().validate_params()
    with pytest.raises(TypeError):
        cls("effnet-lite0")


@pytest.mark.parametrize("name", available_methods())
def test_a_method_built_on_another_keeps_every_parameter_of_it(name):
    cls = method_class(name)
    for base in cls.__mro__[1:]:
        if getattr(base, "name", None) in available_methods() and base is method_class(base.name):
            assert set(base.param_names()) <= set(cls.param_names()), f"{name} drops parameters of {base.name}"


def test_fewshot_takes_patchcores_channel_reduction(parts):
    detector = lineguard.create("fewshot", image_size=64, weights="random", reduce_dim=16, hflip=False, vflip=False,
                                brightness_views=0).fit(parts[0][:1])
    assert detector.memory_bank_.shape[1] == 16
