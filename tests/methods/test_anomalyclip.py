"""AnomalyCLIP on a tiny random CLIP: training, layers, saving, resuming, and the errors a user meets."""

from __future__ import annotations

import huggingface_hub
import pytest
import torch

import lineguard
from lineguard.backbones import WeightsNotFoundError
from lineguard.methods import NotFittedError
from lineguard.prompts.clip import NotAClipError
from lineguard.prompts.detector import save_prompts
from lineguard.prompts.training import train_prompts
from tests.prompts.tiny import interrupt_after_epoch, labelled, tiny

SMALL = {"n_ctx": 4, "deep_depth": 2, "deep_length": 2}


@pytest.fixture(scope="module")
def data():
    return labelled("texture", 64, seed=3, n=4)


def learn(data, **kw):
    detector = lineguard.create("anomalyclip", **tiny(**SMALL))
    run = train_prompts(detector, data, epochs=3, batch_size=4, lr=1e-2, **kw)
    return detector, run


def test_training_lowers_the_loss_and_predicts_maps_of_every_layer(data):
    detector, run = learn(data)
    assert run.losses[-1] < run.losses[0]
    assert detector.chosen_layers() == (0, 1) and detector.first_dpam_block() == 0
    assert set(detector.prompts_) == {"normal", "abnormal", "deep"}
    assert detector.prompts_["normal"].shape == (4, 64) and detector.prompts_["deep"].shape == (1, 2, 64)
    result = detector.predict(data.images.float() / 255)
    assert result.scores.shape == (8,) and result.maps.shape == (8, 64, 64)
    assert torch.all((result.scores >= 0) & (result.scores <= 1))


@pytest.mark.slow
def test_save_load_and_resume_give_identical_results(data, tmp_path, monkeypatch):
    full, _ = learn(data, checkpoint_dir=tmp_path / "full")
    images = data.images[:3].float() / 255
    expected = full.predict(images)
    save_prompts(full, tmp_path / "prompts")
    full.save(tmp_path / "model")
    for again in (lineguard.create("anomalyclip", **tiny(**SMALL, prompts=str(tmp_path / "prompts"))).predict(images),
                  lineguard.load(tmp_path / "model").predict(images)):
        assert torch.equal(again.scores, expected.scores) and torch.equal(again.maps, expected.maps)

    interrupt_after_epoch(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        learn(data, checkpoint_dir=tmp_path / "cut")
    monkeypatch.undo()
    resumed, run = learn(data, checkpoint_dir=tmp_path / "cut", resume=True)
    assert run.resumed_after == 2
    assert all(torch.equal(resumed.prompts_[k], full.prompts_[k]) for k in full.prompts_)


def test_missing_weights_prompts_and_text_tower_are_clear_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("LINEGUARD_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    images = torch.rand(1, 3, 56, 56)
    with pytest.raises(WeightsNotFoundError, match="clip-vit-l14-336.full.safetensors"):
        lineguard.create("anomalyclip").encode(images)
    with pytest.raises(NotFittedError, match="prompts=FOLDER"):
        lineguard.create("anomalyclip", **tiny(**SMALL)).predict(images)
    with pytest.raises(NotAClipError, match="no text tower"):
        lineguard.create("anomalyclip", backbone="effnet-lite0").encode(images)
    with pytest.raises(ValueError, match="multiple of the patch size 16"):
        lineguard.create("anomalyclip", **tiny(**SMALL, image_size=60)).encode(images)
