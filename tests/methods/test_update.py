"""``update`` grows a fitted model's normal set: as a fit on everything would, saved with its history, and
refused by name where a method cannot grow."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

import lineguard
from lineguard.cli import app
from lineguard.methods import CannotGrowError, NotFittedError
from lineguard.metrics import image_auroc
from lineguard.synthetic import write_mvtec_layout
from tests.conftest import SIZE


def grown(name: str, support: torch.Tensor, **params) -> lineguard.Detector:
    """Fitted on half the support, then the rest added in two steps."""
    detector = lineguard.create(name, image_size=SIZE, **params).fit(support[:6])
    return detector.update(support[6:9]).update(support[9:])


@pytest.mark.parametrize(("name", "params", "rtol"), [
    ("knn", {}, 1e-6), ("spade", {}, 1e-6), ("padim", {"n_features": 24}, 1e-3),
    ("patchcore", {"coreset_ratio": 1.0}, 1e-5)])  # a coreset of everything: the same bank
def test_update_scores_as_a_fit_on_everything(name, params, rtol, parts):
    support, test, _, _ = parts
    full = lineguard.create(name, image_size=SIZE, **params).fit(support).predict(test)
    again = grown(name, support, **params).predict(test)
    torch.testing.assert_close(again.scores, full.scores, rtol=rtol, atol=rtol * full.scores.abs().max().item())
    torch.testing.assert_close(again.maps, full.maps, rtol=rtol, atol=rtol * full.maps.abs().max().item())


# fewshot's lighting reference stays that of the first 6 images, a refit's is that of all 12: a little further
@pytest.mark.parametrize(("name", "params", "spread"), [("patchcore", {}, 0.05),
                                                        ("fewshot", {"brightness_views": 1, "vflip": False}, 0.1)])
def test_a_grown_coreset_keeps_the_old_bank_and_the_size_of_a_refit(name, params, spread, parts):
    support, test, labels, _ = parts
    start = lineguard.create(name, image_size=SIZE, **params).fit(support[:6])
    old_bank = start.memory_bank_.clone()
    start.update(support[6:])
    refit = lineguard.create(name, image_size=SIZE, **params).fit(support)
    assert torch.equal(start.memory_bank_[:len(old_bank)], old_bank)
    assert abs(len(start.memory_bank_) - len(refit.memory_bank_)) <= 1
    grown_scores, refit_scores = start.predict(test).scores, refit.predict(test).scores
    assert image_auroc(labels, grown_scores) >= 0.9
    assert (grown_scores - refit_scores).abs().max() < spread * refit_scores.max()


def test_save_load_after_update_keeps_scores_and_history(parts, tmp_path):
    support, test, _, _ = parts
    detector = grown("patchcore", support)
    assert [step["images"] for step in detector.updates_] == [3, 3]
    detector.save(tmp_path / "model")
    reloaded = lineguard.load(tmp_path / "model")
    assert reloaded.updates_ == detector.updates_
    assert torch.equal(reloaded.predict(test).scores, detector.predict(test).scores)
    assert not hasattr(reloaded.fit(support[:4]), "updates_")  # a new fit starts a new history


def test_methods_that_cannot_grow_are_refused_by_name(parts):
    support = parts[0]
    with pytest.raises(CannotGrowError, match="fastrecon cannot add"):
        lineguard.create("fastrecon", image_size=SIZE).fit(support[:4]).update(support[4:])
    with pytest.raises(CannotGrowError, match="ledoit-wolf"):
        lineguard.create("padim", image_size=SIZE, shrinkage="ledoit-wolf").fit(support[:4]).update(support[4:])
    with pytest.raises(NotFittedError):
        lineguard.create("knn", image_size=SIZE).update(support)


def test_update_command_grows_recalibrates_and_records(mvtec_folder, tmp_path):
    runner = CliRunner()
    model = tmp_path / "model"
    fitted = runner.invoke(app, ["fit", "-m", "knn", "--data", str(mvtec_folder), "--out", str(model),
                                 "--image-size", str(SIZE), "--shots", "4", "--calibrate", "none"])
    assert fitted.exit_code == 0, fitted.output
    bank = lineguard.load(model).memory_bank_
    new = write_mvtec_layout(tmp_path / "more", size=SIZE, n_train=8, n_test_good=1, n_test_defective=1,
                             seed=5) / "train" / "good"
    result = runner.invoke(app, ["update", str(model), str(new), "--recalibrate", "--holdout", "0.25"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    config = json.loads((model / "config.json").read_text())
    assert [step["images"] for step in config["state"]["updates_"]] == [6]  # 8 new, 2 held out
    assert "image_threshold_" in config["state"]
    assert len(lineguard.load(model).memory_bank_) == len(bank) * 10 // 4
    refused = runner.invoke(app, ["update", str(model), str(tmp_path / "nowhere")])
    assert refused.exit_code == 2
