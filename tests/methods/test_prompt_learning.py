"""Prompt learning on effnet-lite0: trained on synthetic textures, it finds defects on synthetic parts."""

from __future__ import annotations

import pytest
import torch

import lineguard
from lineguard.methods import NotFittedError
from lineguard.metrics import image_auroc
from lineguard.prompts.detector import PromptsError, save_prompts
from lineguard.prompts.training import train_prompts
from tests.prompts.tiny import interrupt_after_epoch, labelled


@pytest.fixture(scope="module")
def trained():
    textures = labelled("texture", 128, seed=5)
    detector = lineguard.create("prompts", image_size=128)
    run = train_prompts(detector, textures, epochs=40, batch_size=4)
    return detector, run


@pytest.mark.slow
def test_loss_falls_and_defects_of_an_unseen_category_rank_first(trained, parts):
    detector, run = trained
    assert run.losses[-1] < 0.9 * run.losses[0]
    _, test, labels, _ = parts  # parts: a category the prompts never saw
    result = detector.predict(test)
    assert result.maps.shape == (len(test), 128, 128)
    assert image_auroc(labels, result.scores) >= 0.85  # 0.94 measured; one linear direction, no part seen


def test_prompts_folder_and_model_folder_give_identical_scores(trained, parts, tmp_path):
    detector, _ = trained
    test = parts[1]
    expected = detector.predict(test)
    save_prompts(detector, tmp_path / "prompts")
    from_prompts = lineguard.create("prompts", image_size=128, prompts=str(tmp_path / "prompts")).predict(test)
    detector.save(tmp_path / "model")
    from_model = lineguard.load(tmp_path / "model").predict(test)
    for again in (from_prompts, from_model):
        assert torch.equal(again.scores, expected.scores) and torch.equal(again.maps, expected.maps)


def test_prompts_of_another_feature_space_or_none_are_clear_errors(trained, tmp_path):
    save_prompts(trained[0], tmp_path / "prompts")
    with pytest.raises(PromptsError, match="patch_size=3.*patch_size=1"):
        lineguard.create("prompts", patch_size=1, prompts=str(tmp_path / "prompts")).predict(torch.rand(1, 3, 64, 64))
    with pytest.raises(NotFittedError, match="train-prompts --method prompts"):
        lineguard.create("prompts").predict(torch.rand(1, 3, 64, 64))
    with pytest.raises(PromptsError, match="not a prompts folder"):
        lineguard.create("prompts", prompts=str(tmp_path)).predict(torch.rand(1, 3, 64, 64))


@pytest.mark.slow
def test_interrupted_prompt_training_resumes_to_identical_prompts(tmp_path, monkeypatch):
    data = labelled("texture", 64, seed=7, n=4)

    def learn(folder):
        detector = lineguard.create("prompts", image_size=64)
        train_prompts(detector, data, epochs=3, batch_size=2, checkpoint_dir=folder, resume=True)
        return detector.prompts_

    full = learn(tmp_path / "full")
    interrupt_after_epoch(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        learn(tmp_path / "cut")
    monkeypatch.undo()
    resumed = learn(tmp_path / "cut")
    assert resumed.keys() == full.keys() and all(torch.equal(resumed[k], full[k]) for k in full)
