"""Siamese encoder: pairs within a category, the known-affine registration, the loss, saving and loading."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from lineguard.features.augment import invert_affines, random_affines, warp
from lineguard.methods.model_folder import CONFIG_FILE, STATE_FILE
from lineguard.methods.siamese import (
    LEGACY_CONFIG,
    LEGACY_WEIGHTS,
    EncoderConfig,
    EncoderError,
    SiameseEncoder,
    load_encoder,
    negative_cosine,
    same_category_partners,
    save_encoder,
    train_encoder,
)

TINY = EncoderConfig(image_size=64, hidden=16, predictor_hidden=4)


def test_partners_are_other_images_of_the_same_category():
    sizes = torch.tensor([3, 2, 5])
    category = torch.repeat_interleave(torch.arange(3), sizes)
    rows = torch.arange(10).repeat(20)
    partners = same_category_partners(rows, sizes, torch.Generator().manual_seed(0))
    assert torch.equal(category[partners], category[rows])
    assert (partners != rows).all()
    assert set(partners[rows == 5].tolist()) == {6, 7, 8, 9}  # every other image of the category is drawn


def test_affines_are_undone_by_their_inverse():
    theta = random_affines(6, torch.Generator().manual_seed(1), max_angle=30.0, max_shift=0.1)
    back = invert_affines(theta)
    # composing: x -> A x + t, then the inverse, gives the identity
    square = lambda m: torch.cat([m, torch.tensor([[[0.0, 0.0, 1.0]]]).expand(len(m), -1, -1)], dim=1)  # noqa: E731
    assert torch.allclose(square(theta) @ square(back), torch.eye(3).expand(6, -1, -1), atol=1e-6)


def test_mirroring_and_back_restores_the_image_exactly():
    images = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    theta = random_affines(4, torch.Generator().manual_seed(3), max_angle=0.0, max_shift=0.0)  # flips only
    assert not torch.allclose(warp(images, theta, "zeros"), images)
    restored = warp(warp(images, theta, "zeros"), invert_affines(theta), "zeros")
    assert torch.allclose(restored, images, atol=1e-6)


def test_negative_cosine_by_hand():
    z = torch.tensor([[1.0, 0.0], [0.0, 2.0]]).T.reshape(1, 2, 1, 2)  # two cells: (1, 0) and (0, 2)
    p = torch.tensor([[3.0, 0.0], [0.0, -1.0]]).T.reshape(1, 2, 1, 2)  # same direction, opposite direction
    both = torch.ones(1, 1, 2, dtype=torch.bool)
    assert negative_cosine(p, z, both).item() == pytest.approx(0.0)  # mean of −1 and +1
    assert negative_cosine(p, z, torch.tensor([[[True, False]]])).item() == pytest.approx(-1.0)


def test_an_untrained_encoder_is_the_identity():
    model = SiameseEncoder(replace(TINY, channels=6)).eval()
    features = torch.randn(2, 6, 3, 3)
    assert torch.equal(model(features), features)


@pytest.fixture(scope="module")
def trained():
    generator = torch.Generator().manual_seed(0)
    categories = [torch.rand(n, 3, 64, 64, generator=generator) for n in (3, 2)]
    return train_encoder(categories, TINY, epochs=1, batch_size=2)


def test_save_and_load_give_the_same_embeddings(trained, tmp_path):
    folder = save_encoder(trained, tmp_path / "enc")
    assert sorted(p.name for p in folder.iterdir()) == sorted([CONFIG_FILE, STATE_FILE])
    loaded = load_encoder(folder)
    assert loaded.config == trained.config and loaded.config.channels == 152  # Lite0 stride 8 + 16 levels
    features = torch.randn(2, 152, 4, 4)
    assert torch.equal(loaded(features), trained.eval()(features))


def test_loaded_encoder_refuses_other_features(trained, tmp_path):
    loaded = load_encoder(save_encoder(trained, tmp_path / "enc"))
    loaded.check_features(backbone="effnet-lite0", levels=None, patch_size=3)
    with pytest.raises(EncoderError, match="trained on"):
        loaded.check_features(backbone="resnet18", levels=None, patch_size=3)


def test_an_encoder_folder_of_model_format_1_loads(trained, tmp_path):
    """Before format 2 an encoder was encoder.json (the config, ``radius`` for patch_size) and
    encoder.safetensors."""
    folder = save_encoder(trained, tmp_path / "enc")
    params = json.loads((folder / CONFIG_FILE).read_text())["params"]
    params["radius"] = params.pop("patch_size")
    (folder / LEGACY_CONFIG).write_text(json.dumps(params))
    (folder / STATE_FILE).rename(folder / LEGACY_WEIGHTS)
    (folder / CONFIG_FILE).unlink()
    loaded = load_encoder(folder)
    assert loaded.config == trained.config
    features = torch.randn(2, 152, 4, 4)
    assert torch.equal(loaded(features), trained.eval()(features))


def test_bad_folders_and_data_are_clear_errors(trained, tmp_path):
    with pytest.raises(EncoderError, match="not an encoder folder"):
        load_encoder(tmp_path)
    folder = save_encoder(trained, tmp_path / "enc")
    config = json.loads((folder / CONFIG_FILE).read_text())
    (folder / CONFIG_FILE).write_text(json.dumps({**config, "params": {**config["params"], "hidden": 9}}))
    with pytest.raises(EncoderError, match="do not fit"):
        load_encoder(folder)
    with pytest.raises(ValueError, match="at least two"):
        train_encoder([torch.rand(1, 3, 64, 64)], TINY, epochs=1)


@pytest.mark.slow
def test_train_encoder_command_then_fewshot_on_its_features(tmp_path):
    from typer.testing import CliRunner

    from lineguard.cli import app
    from lineguard.methods.fewshot import FewShot
    from lineguard.synthetic import write_mvtec_layout

    folders = [write_mvtec_layout(tmp_path / kind, kind=kind, size=64, n_train=3, n_test_good=1,
                                  n_test_defective=1, seed=1) for kind in ("part", "texture")]
    out = tmp_path / "encoder"
    args = ["train-encoder", "--data", folders[0], "--data", folders[1], "--out", out, "--image-size", 64,
            "--epochs", 1, "--batch-size", 2, "--device", "cpu"]
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert (out / "checkpoint" / "checkpoint.json").exists()
    encoder = load_encoder(out)

    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    detector = FewShot(image_size=64, encoder=str(out), rotation_views=0, translation_views=0).fit(images)
    assert detector.memory_bank_.shape[1] == encoder.config.channels == 152
    with pytest.raises(EncoderError, match="trained on"):
        FewShot(image_size=64, encoder=str(out), patch_size=5).fit(images)
