"""A saved model folder is self-contained and read as untrusted input; parameters are type-checked."""

from __future__ import annotations

import json
import shutil

import pytest
import timm
import torch
from safetensors.torch import load_file, save_file

import lineguard
from lineguard.backbones.weights import load_weights_file
from lineguard.errors import ParameterError
from lineguard.methods.model_folder import ModelFolderError


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    """resnet18 weights as a .pth outside any model folder (random values, a real layout)."""
    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    torch.save(timm.create_model("resnet18").state_dict(), path)
    return path


def test_the_weights_a_model_names_are_copied_into_its_folder(weights_file, tmp_path):
    images = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    detector = lineguard.create("knn", backbone="resnet18", weights=str(weights_file), image_size=64).fit(images)
    detector.save(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["params"]["weights"] == "weights.safetensors"
    copied = load_weights_file(tmp_path / "m" / "weights.safetensors")
    assert list(copied) == list(torch.load(weights_file))  # in the file's own order
    shutil.move(tmp_path / "m", tmp_path / "moved")  # the folder stands alone
    reloaded = lineguard.load(tmp_path / "moved")
    assert reloaded.weights == str((tmp_path / "moved" / "weights.safetensors").resolve())
    assert torch.equal(reloaded.predict(images).scores, detector.predict(images).scores)
    reloaded.save(tmp_path / "moved")  # saved again in place: still relative, nothing copied onto itself
    assert json.loads((tmp_path / "moved" / "config.json").read_text())["params"]["weights"] == "weights.safetensors"


def test_a_folder_cannot_reach_outside_itself(weights_file, tmp_path, parts):
    detector = lineguard.create("knn", image_size=128).fit(parts[0][:2])
    folder = detector.save(tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    (tmp_path / "outside").mkdir()
    (folder / "link.safetensors").symlink_to(tmp_path / "outside" / "w.safetensors")
    for value in (str(weights_file), "../outside/w.safetensors", "link.safetensors"):
        config["params"]["weights"] = value
        (folder / "config.json").write_text(json.dumps(config))
        with pytest.raises(ModelFolderError, match="weights=.*points outside the model folder"):
            lineguard.load(folder)
    shutil.copy(weights_file, folder / "inside.pth")  # inside, but a pickle
    config["params"]["weights"] = "inside.pth"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelFolderError, match="only safetensors files are read"):
        lineguard.load(folder)


def test_learned_state_is_checked(tmp_path, parts):
    detector = lineguard.create("padim", image_size=64, n_features=8).fit(parts[0][:4])
    folder = detector.save(tmp_path / "m")
    assert lineguard.load(folder).channels_.dtype == torch.int64  # indices are state too
    tensors = load_file(folder / "state.safetensors")
    for name, bad in (("mean_", tensors["mean_"].double()), ("channels_", tensors["channels_"].float()),
                      ("fit", tensors["mean_"].clone())):
        save_file({**tensors, name: bad}, folder / "state.safetensors")
        with pytest.raises(ModelFolderError, match=f"state.safetensors: .*'{name}'"):
            lineguard.load(folder)


def test_thresholds_come_whole_and_valid(tmp_path, parts):
    detector = lineguard.create("knn", image_size=128).fit(parts[0][:4])
    detector.calibrate(detector.predict(parts[0][4:8]))
    folder = detector.save(tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    for change, words in (({"image_threshold_": "high"}, "must be numbers"),
                          ({"image_threshold_": config["state"]["image_center_"] - 1}, "not above")):
        (folder / "config.json").write_text(json.dumps({**config, "state": {**config["state"], **change}}))
        with pytest.raises(ModelFolderError, match=f"config.json: invalid thresholds: .*{words}"):
            lineguard.load(folder)


@pytest.mark.parametrize(("params", "words"), [
    ({"k": "abc"}, "knn parameter k must be int, got 'abc' (str)"),
    ({"patch_size": 2.5}, "knn parameter patch_size must be int, got 2.5 (float)"),
    ({"levels": 5}, "knn parameter levels must be list[int] | None, got 5 (int)"),
    ({"levels": [1, "2"]}, "knn parameter levels must be list[int] | None"),
    ({"k": True}, "knn parameter k must be int, got True (bool)"),
    ({"sigma": "4"}, "knn parameter sigma must be float"),
])
def test_parameters_of_the_wrong_type_are_named_before_any_image_is_read(params, words):
    detector = lineguard.create("knn", backbone="no-such-backbone", **params)  # constructing never fails
    with pytest.raises(ParameterError) as raised:
        detector.fit(torch.zeros(1, 3, 32, 32))
    assert words in str(raised.value)


def test_parameters_of_the_right_type_pass_unchanged():
    detector = lineguard.create("knn", sigma=4, levels=[2, 3], weights=None)  # an int is a float
    assert detector.sigma == 4 and isinstance(detector.sigma, int) and detector.levels == [2, 3]


def test_a_fewshot_model_carries_its_encoder(tmp_path):
    from lineguard.methods.siamese import EncoderConfig, SiameseEncoder, save_encoder

    config = EncoderConfig(image_size=64, hidden=16, predictor_hidden=4, channels=152)  # Lite0 levels 2, 3
    save_encoder(SiameseEncoder(config), tmp_path / "enc")
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    detector = lineguard.create("fewshot", image_size=64, encoder=str(tmp_path / "enc"), brightness_views=0).fit(images)
    detector.save(tmp_path / "m")
    shutil.rmtree(tmp_path / "enc")
    reloaded = lineguard.load(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "config.json").read_text())["params"]["encoder"] == "encoder"
    assert torch.equal(reloaded.predict(images).scores, detector.predict(images).scores)


@pytest.mark.parametrize(("method", "params"), [
    ("knn", {"patch_size": 5}),
    ("fewshot", {"reweight_neighbours": 3, "brightness_views": 2, "hflip": False, "vflip": False}),
    ("dfr", {"epochs": 1, "patch_batch_size": 32, "batch_size": 2}),
])
def test_a_folder_saved_in_format_1_loads_under_todays_names(method, params, parts, tmp_path):
    """A folder as lineguard wrote it before format 2: today's folder with version 1 and the old names."""
    from lineguard.methods.model_folder import RENAMED

    support, test = parts[0][:2], parts[1][:2]
    detector = lineguard.create(method, image_size=64, **params).fit(support)
    detector.save(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    old_names = {new: old for old, new in RENAMED[1][method].items()}
    config = {**config, "format_version": 1, "params": {old_names.get(k, k): v for k, v in config["params"].items()}}
    assert set(config["params"]) & set(old_names.values())  # the folder really uses the old names
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    reloaded = lineguard.load(tmp_path / "m")
    assert reloaded.get_params() == detector.get_params()
    assert torch.equal(reloaded.predict(test).maps, detector.predict(test).maps)
