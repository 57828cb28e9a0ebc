"""A tiled model (``--tile``) exports: the graph scores tiles at the working size, the runtime cuts each image at
its own size into the model's tiles and stitches their maps, so the export answers as the model does."""

from __future__ import annotations

import json

import numpy as np
import pytest

from typer.testing import CliRunner

import lineguard
from lineguard.cli import app
from lineguard.export import ExportFolderError, export_detector, load_export
from lineguard.synthetic import make_sheets
from lineguard.tiling import tiled
from tests.conftest import to_tensor
from tests.export.parity import assert_same_answers

pytestmark = pytest.mark.slow  # exports (about 2 s each)


@pytest.fixture(scope="module")
def tiled_model():
    """PatchCore in 128 px tiles overlapping by 16, scored at 64 px, fitted and calibrated on 192 × 320 sheets."""
    detector = tiled(lineguard.create("patchcore", image_size=64), 128, 16)
    detector.fit(to_tensor(make_sheets(3, 0, height=192, width=320, seed=1)))
    detector.calibrate(detector.predict(to_tensor(make_sheets(4, 0, height=192, width=320, seed=2))))
    return detector


@pytest.mark.parametrize("format", ["onnx", "openvino"])
def test_a_tiled_export_answers_as_the_model_at_each_images_size(tiled_model, format, tmp_path):
    pytest.importorskip("onnxruntime" if format == "onnx" else "openvino")
    folder = export_detector(tiled_model, tmp_path / "export", format=format)
    spec = json.loads((folder / "export.json").read_text())
    assert spec["tiling"] == {"tile": 128, "overlap": 16} and spec["image_size"] == 64
    exported = load_export(folder)
    assert exported.image_size is None  # the pipeline hands it images at their own size, as the model
    for height, width in ((192, 320), (150, 260)):
        images = to_tensor(make_sheets(2, 2, height=height, width=width, seed=height))
        expected, got = tiled_model.predict(images), exported.predict(images.numpy())
        assert got.maps.shape == (4, height, width)
        assert_same_answers(got.scores, got.maps, expected.scores.numpy(), expected.maps.numpy(),
                            tiled_model.thresholds, f"{format} {height} x {width}")


def test_lineguard_export_of_a_tiled_model_folder_takes_images_of_different_sizes_together(tiled_model, tmp_path):
    pytest.importorskip("onnxruntime")
    tiled_model.save(tmp_path / "model")
    done = CliRunner().invoke(app, ["export", str(tmp_path / "model"), "--out", str(tmp_path / "export")])
    assert done.exit_code == 0, done.output
    exported = load_export(tmp_path / "export")
    images = [to_tensor(make_sheets(0, 1, height=height, width=width, seed=5)) for height, width in
              ((192, 320), (100, 140))]  # the second smaller than a tile along one axis: one tile, its own size
    got = exported.predict(image.numpy() for image in images)
    expected = [tiled_model.predict(image) for image in images]
    assert [m.shape for m in got.maps] == [(192, 320), (100, 140)]
    for i, answer in enumerate(expected):
        assert got.scores[i] == pytest.approx(float(answer.scores[0]), rel=1e-4)
        assert np.abs(got.maps[i] - answer.maps[0].numpy()).max() <= 1e-4 * float(np.ptp(answer.maps[0].numpy()))


def test_a_tiled_export_with_a_bad_tiling_is_refused_by_name(tiled_model, tmp_path):
    pytest.importorskip("onnxruntime")
    folder = export_detector(tiled_model, tmp_path / "export")
    spec = json.loads((folder / "export.json").read_text())
    (folder / "export.json").write_text(json.dumps({**spec, "tiling": {"tile": 128, "overlap": 128}}))
    with pytest.raises(ExportFolderError, match="overlap=128"):
        load_export(folder)
