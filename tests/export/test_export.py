"""Export folders: OpenVINO IR, external data, what export.json records, the runtime's inputs, refusals, the CLI.
(Every method's parity on both runtimes is in tests/methods/test_contract.py.)"""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import lineguard
from lineguard.cli import app
from lineguard.errors import ParameterError
from lineguard.export import ExportedModel, ExportFolderError, export_detector, load_export
from lineguard.export import search as search_module
from lineguard.export.graphs import TEXT_PROMPT_METHODS, NotExportableError, exportable_methods, refusal
from lineguard.export.spec import EXTERNAL_DATA_FILE, read_spec
from lineguard.methods import NotFittedError, available_methods, method_class
from lineguard.inspect import inspect
from lineguard.scoring.threshold import NotCalibratedError
from lineguard.serve.inspector import Inspector, Limits
from lineguard.synthetic import make_batch
from tests.conftest import SIZE, to_tensor
from tests.export.parity import assert_same_answers


@pytest.fixture(scope="module")
def calibrated(parts):
    """PatchCore fitted on the support, calibrated on six other good parts; its answers on the test batch."""
    detector = lineguard.create("patchcore", image_size=SIZE).fit(parts[0])
    detector.calibrate(detector.predict(to_tensor(make_batch(6, 0, kind="part", size=SIZE, seed=12))))
    return detector, detector.predict(parts[1])


@pytest.fixture(scope="module")
def exported(calibrated, tmp_path_factory):
    """The calibrated detector exported to ONNX (default settings)."""
    return export_detector(calibrated[0], tmp_path_factory.mktemp("export"))


def check(folder, calibrated, images, **runtime):
    detector, result = calibrated
    got = load_export(folder, **runtime).predict(images)
    assert_same_answers(got.scores, got.maps, result.scores.numpy(), result.maps.numpy(), detector.thresholds,
                        f"{folder.name} {runtime}")


@pytest.mark.slow
def test_export_json_records_thresholds_size_params_and_banks(calibrated, exported):
    detector = calibrated[0]
    spec = json.loads((exported / "export.json").read_text())
    assert spec["method"] == "patchcore" and spec["image_size"] == SIZE and spec["format"] == "onnx"
    assert spec["params"] == json.loads(json.dumps(detector.get_params()))
    assert spec["thresholds"] == asdict(detector.thresholds)
    assert spec["input_normalization"] == {"mean": [0.5] * 3, "std": [0.5] * 3}  # EfficientNet-Lite's
    assert [bank["rows"] for bank in spec["details"]["banks"]] == [len(detector.memory_bank_)]
    assert spec["external_data"] is None and not (exported / EXTERNAL_DATA_FILE).exists()
    model = load_export(exported)
    assert model.thresholds == detector.thresholds and model.get_params() == spec["params"]
    assert model.name == "patchcore" and model.image_size == SIZE and model.runtime == "onnxruntime"


@pytest.mark.slow
def test_weights_go_to_external_data_above_the_limit(calibrated, exported, parts, tmp_path):
    export_detector(calibrated[0], tmp_path, external_data_bytes=1000)  # the path of weights over 1 GiB
    assert read_spec(tmp_path).external_data == EXTERNAL_DATA_FILE
    inside, outside = (tmp_path / "model.onnx").stat().st_size, (tmp_path / EXTERNAL_DATA_FILE).stat().st_size
    assert outside > 10 * inside and inside + outside > (exported / "model.onnx").stat().st_size
    for runtime in ("onnxruntime", "openvino"):
        check(tmp_path, calibrated, parts[1].numpy(), runtime=runtime)


@pytest.mark.slow
def test_a_bank_searched_in_many_blocks(calibrated, parts, tmp_path, monkeypatch):
    """PatchCore's search and re-weighting over blocks of 100 of its 307 bank rows (the last one partial)."""
    monkeypatch.setattr(search_module, "BLOCK_ENTRIES_PER_IMAGE", 100 * (SIZE // 8) ** 2)
    export_detector(calibrated[0], tmp_path)
    assert read_spec(tmp_path).details["banks"] == [{"module": "bank", "rows": 307, "block_rows": 100}]
    for runtime in ("onnxruntime", "openvino"):
        check(tmp_path, calibrated, parts[1].numpy(), runtime=runtime)


def test_runtime_takes_images_as_a_detector_does(calibrated, exported, parts):
    detector, result = calibrated
    model = load_export(exported, batch_size=4)
    images = parts[1]
    single = model.predict(images[0].numpy())  # one (3, S, S) image
    assert single.scores.shape == (1,) and single.maps.shape == (1, SIZE, SIZE)
    batches = model.predict(iter([images[:5], images[5:]]))  # an iterable of (CPU tensor) batches
    assert np.allclose(batches.scores, result.scores.numpy(), rtol=1e-5)
    larger = torch.nn.functional.interpolate(images, size=(200, 160), mode="bilinear")  # off the working size
    resized = model.predict(larger.numpy())  # resized without torch, as the detector resizes with it
    torch.testing.assert_close(torch.from_numpy(resized.scores), detector.predict(larger).scores, rtol=1e-4,
                               atol=1e-4)
    empty = model.predict(np.empty((0, 3, SIZE, SIZE), np.float32))
    assert empty.scores.shape == (0,) and empty.maps.shape == (0, SIZE, SIZE)
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\).*\(2, 1, 8, 8\)"):
        model.predict(np.zeros((2, 1, 8, 8), np.float32))


def test_uncalibrated_export_gives_scores_but_no_decisions(exported, parts, tmp_path):
    for name in ("model.onnx", "export.json"):
        (tmp_path / name).write_bytes((exported / name).read_bytes())
    spec = json.loads((tmp_path / "export.json").read_text())
    (tmp_path / "export.json").write_text(json.dumps({**spec, "thresholds": None}))
    model = load_export(tmp_path)
    assert model.thresholds is None
    finding = inspect(model, parts[1][:1].numpy())[0]
    assert finding.decision is None and finding.normalized_score is None and finding.score > 0
    with pytest.raises(NotCalibratedError, match="no thresholds"):
        Inspector(model, limits=Limits())


@pytest.mark.slow
def test_export_command_writes_openvino_ir(calibrated, parts, tmp_path):
    calibrated[0].save(tmp_path / "model")
    ir = tmp_path / "ir"
    result = CliRunner().invoke(app, ["export", str(tmp_path / "model"), "--out", str(ir), "--format", "openvino"])
    assert result.exit_code == 0, result.output
    assert "exported patchcore (openvino" in result.output
    assert (ir / "model.xml").is_file() and (ir / "model.bin").is_file() and not (ir / "model.onnx").exists()
    check(ir, calibrated, parts[1].numpy())  # OpenVINO by default for an IR folder
    with pytest.raises(ExportFolderError, match="onnxruntime cannot run it"):
        load_export(ir, runtime="onnxruntime")
    lineguard.create("testbatch").save(tmp_path / "batch")
    refused = CliRunner().invoke(app, ["export", str(tmp_path / "batch"), "--out", str(tmp_path / "no")])
    assert refused.exit_code == 2 and "cannot export testbatch" in refused.output


def test_load_takes_a_model_folder_or_an_export_folder(calibrated, exported, tmp_path):
    """lineguard.load gives a Detector for a model folder and an ExportedModel for an export; both are scorers of
    the one pipeline. A runtime only goes with an export."""
    calibrated[0].save(tmp_path / "model")
    assert isinstance(lineguard.load(tmp_path / "model"), lineguard.Detector)
    model = lineguard.load(exported, runtime="openvino", threads=1)
    assert isinstance(model, ExportedModel) and model.runtime == "openvino" and model.array_input
    with pytest.raises(ParameterError, match="model folder: runtime and threads apply to export folders"):
        lineguard.load(tmp_path / "model", runtime="onnxruntime")
    refused = CliRunner().invoke(app, ["predict", str(exported), str(tmp_path), "--out", str(tmp_path / "r"),
                                       "--runtime", "tensorrt"])
    assert refused.exit_code == 2 and "--runtime must be one of onnxruntime, openvino" in refused.output


def test_every_method_exports_or_says_why(tmp_path):
    """Every method of the registry trained on normal images exports; test-batch methods refuse, and say why."""
    for name in available_methods():
        if name in TEXT_PROMPT_METHODS:
            assert refusal(name, method_class(name).uses_normal_images).startswith(f"{name} scores images against "
                                                                                   "text prompts")
        elif method_class(name).uses_normal_images:
            assert name in exportable_methods(), name
        else:
            with pytest.raises(NotExportableError, match="scores a batch against itself.*feature extractor"):
                export_detector(lineguard.create(name), tmp_path)
    with pytest.raises(NotFittedError):
        export_detector(lineguard.create("patchcore"), tmp_path)
    with pytest.raises(ValueError, match="onnx, openvino"):
        export_detector(lineguard.create("patchcore"), tmp_path, format="tflite")


def test_not_an_export_folder(tmp_path):
    with pytest.raises(ExportFolderError, match="not a lineguard export folder.*lineguard export"):
        load_export(tmp_path)
    (tmp_path / "export.json").write_text('{"format_version": 99}')
    with pytest.raises(ExportFolderError, match="unsupported export format 99"):
        load_export(tmp_path)

