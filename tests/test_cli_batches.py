"""predict --batch-by: independent test batches, each in its own results folder, deciding for itself (no Ray)."""

from __future__ import annotations

import json

from PIL import Image
from typer.testing import CliRunner

from lineguard.cli import app
from lineguard.synthetic import make_batch

runner = CliRunner()


def test_each_folder_is_a_batch_with_its_own_thresholds(tmp_path):
    line = tmp_path / "line"
    for camera, seed in (("cam0", 1), ("cam1", 2)):
        (line / camera).mkdir(parents=True)
        for i, item in enumerate(make_batch(8, 1, size=64, seed=seed)):
            Image.fromarray(item.image).save(line / camera / f"{i}-{item.defect}.png")
    result = runner.invoke(app, ["predict", "--method", "testbatch", str(line), "--image-size", "64", "--out",
                                 str(tmp_path / "out"), "--batch-by", "folder", "--no-report"])
    assert result.exit_code == 0, result.output
    thresholds = []
    for camera in ("cam0", "cam1"):
        rows = [json.loads(x) for x in (tmp_path / "out" / camera / "results.jsonl").read_text().splitlines()]
        assert len(rows) == 9 and all(camera in r["path"] and r["decision"] in ("ok", "defect") for r in rows)
        thresholds.append(json.loads((tmp_path / "out" / camera / "thresholds.json").read_text()))
    assert thresholds[0] != thresholds[1]  # each batch decided from its own scores


def test_batches_and_workers_are_checked_before_any_work(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    refused = runner.invoke(app, ["predict", str(model), str(tmp_path), "--out", str(tmp_path / "o"),
                                  "--batch-by", "folder"])
    assert refused.exit_code == 2 and "--batch-by splits images into batches for a test-batch" in refused.output
    for option, message in (("--workers=0", "--workers must be at least 1"),
                            ("--batch-by=0", "--batch-by must be 'folder' or a positive number")):
        result = runner.invoke(app, ["predict", "--method", "testbatch", str(tmp_path), "--out", str(tmp_path / "o"),
                                     "--ray", option])
        assert result.exit_code == 2 and message in result.output, result.output
