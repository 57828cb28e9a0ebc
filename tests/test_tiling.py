"""Tiling: tiles cover the image at its own resolution, their maps stitch without seams, defects far smaller
than the frame are found where they are, and bad settings are refused by name."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

import lineguard
from lineguard.cli import app
from lineguard.methods import Prediction
from lineguard.methods.knn import KNN
from lineguard.serve import create_app
from lineguard.synthetic import make_sheets
from lineguard.tiling import TiledDetector, Tiling, TilingError, tiled
from tests.conftest import to_tensor


def test_tiles_cover_the_image_and_the_last_sits_on_the_edge():
    tiling = Tiling(64, 16)
    assert tiling.starts(200) == [0, 48, 96, 136] and tiling.starts(50) == [0]
    boxes = tiling.boxes(50, 200)
    covered = torch.zeros(50, 200)
    for rows, columns in boxes:
        covered[rows, columns] += 1
    assert covered.min() >= 1 and all(r.stop - r.start == 50 and c.stop - c.start == 64 for r, c in boxes)


@pytest.mark.parametrize(("tile", "overlap", "named"), [(8, 0, "tile=8"), (64, 64, "overlap=64"),
                                                        (64, -1, "overlap=-1"), (64.5, 0, "tile")])
def test_bad_tile_sizes_are_refused_by_name(tile, overlap, named):
    with pytest.raises(TilingError, match=named):
        Tiling(tile, overlap)
    with pytest.raises(TilingError, match="overlap=4 needs a tile"):
        tiled(KNN(), None, 4)


class TileIndex(KNN):
    """Scores every pixel of the n-th tile it is shown n: the stitched map shows how neighbours join."""

    def _predict(self, images):
        self.shown = getattr(self, "shown", 0)
        values = torch.arange(self.shown, self.shown + len(images)).float()
        self.shown += len(images)
        return Prediction(values, values[:, None, None].expand(-1, *images.shape[-2:]).clone())


@pytest.mark.parametrize("overlap", [0, 16])
def test_overlapping_maps_cross_fade_without_seams(overlap):
    detector = TileIndex(image_size=32)
    detector.memory_bank_ = torch.zeros(1, 1)  # fitted
    prediction = TiledDetector(detector, Tiling(64, overlap)).predict(torch.rand(1, 3, 64, 400))
    stitched = prediction.maps[0]
    assert stitched.shape == (64, 400)  # the image's own pixels
    jump = (stitched[:, 1:] - stitched[:, :-1]).abs().max().item()  # neighbouring tiles differ by 1
    if overlap:
        assert jump <= 1 / (overlap + 1) + 1e-5  # a linear cross-fade, no step
    else:
        assert jump == pytest.approx(1.0)  # without overlap the seam is a full step
    assert prediction.scores[0] == len(Tiling(64, overlap).boxes(64, 400)) - 1  # the highest tile score


@pytest.fixture(scope="module")
def sheets():
    train = make_sheets(4, 0, height=192, width=384, seed=1)
    test = make_sheets(2, 2, height=192, width=384, area=(0.006, 0.008), seed=2)  # flaws of 0.6-0.8 %
    return to_tensor(train), test


def test_a_small_flaw_is_found_where_it_is_in_the_original_pixels(sheets, tmp_path):
    train, test = sheets
    detector = tiled(lineguard.create("knn", image_size=128), 64, 16).fit(train)  # 64 px tiles seen at 128 px
    prediction = detector.predict(to_tensor(test))
    assert prediction.maps.shape == (4, 192, 384)
    assert prediction.scores[2:].min() > 1.5 * prediction.scores[:2].max()
    for item, anomaly_map in zip(test[2:], prediction.maps[2:], strict=True):
        y, x = divmod(anomaly_map.argmax().item(), anomaly_map.shape[1])
        near = torch.nn.functional.max_pool2d(torch.from_numpy(item.mask)[None, None].float(), 17, 1, 8)[0, 0]
        assert near[y, x] > 0
    detector.save(tmp_path / "model")
    reloaded = lineguard.load(tmp_path / "model")
    assert isinstance(reloaded, TiledDetector) and reloaded.tiling == Tiling(64, 16)
    assert torch.equal(reloaded.predict(to_tensor(test)).scores, prediction.scores)


def test_fit_and_predict_tile_from_the_command_line(sheets, tmp_path):
    train, test = sheets
    for split in ("train", "test"):
        good = tmp_path / "data" / split / "good"
        good.mkdir(parents=True)
        for i, image in enumerate(train):
            Image.fromarray((image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(good / f"{i}.png")
    line = tmp_path / "line"
    line.mkdir()
    for i, item in enumerate(test):
        Image.fromarray(item.image[:, : 384 - 64 * (i % 2)]).save(line / f"{i}.png")  # two sizes
    runner = CliRunner()
    model = tmp_path / "model"
    fitted = runner.invoke(app, ["fit", "-m", "knn", "--data", str(tmp_path / "data"), "--out", str(model),
                                 "--image-size", "64", "--tile", "64", "--overlap", "16", "--calibrate", "none"])
    assert fitted.exit_code == 0, fitted.output + repr(fitted.exception)
    assert json.loads((model / "tiling.json").read_text()) == {"tile": 64, "overlap": 16}
    scored = runner.invoke(app, ["predict", str(model), str(line), "--out", str(tmp_path / "results"),
                                 "--no-report"])
    assert scored.exit_code == 0, scored.output + repr(scored.exception)
    rows = [json.loads(line) for line in (tmp_path / "results" / "results.jsonl").read_text().splitlines()]
    shapes = {r["path"].rsplit("/", 1)[-1]: np.load(tmp_path / "results" / r["map"]).shape for r in rows}
    assert shapes == {"0.png": (192, 384), "1.png": (192, 320), "2.png": (192, 384), "3.png": (192, 320)}
    bad = runner.invoke(app, ["fit", "-m", "knn", "--data", str(tmp_path / "data"), "--out", str(model),
                              "--tile", "4"])
    assert bad.exit_code == 2 and "tile=4" in bad.output


def test_the_service_scores_a_tiled_model_at_each_upload_size(sheets):
    train, test = sheets
    detector = tiled(lineguard.create("knn", image_size=64), 64, 16).fit(train)
    detector.calibrate(detector.predict(to_tensor(test[:2])))
    client = TestClient(create_app(detector))
    assert client.get("/v1/model").json()["image_size"] is None
    buffer = io.BytesIO()
    Image.fromarray(test[2].image[:, :320]).save(buffer, format="PNG")
    result = client.post("/v1/inspect", files={"file": ("sheet.png", buffer.getvalue(), "image/png")}).json()
    assert (result["height"], result["width"]) == (192, 320)
    assert Image.open(io.BytesIO(base64.b64decode(result["map_png"]))).size == (320, 192)
