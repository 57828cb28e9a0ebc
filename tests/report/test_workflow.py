"""The line workflow on the command line: fit + calibrate, predict with decisions, report, recalibrate."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from lineguard.cli import MIN_BATCH_FOR_DECISIONS, app
from lineguard.io.datasets import load_dataset
from lineguard.synthetic import make_batch

runner = CliRunner()


def invoke(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


@pytest.fixture(scope="module")
def model(mvtec_folder, tmp_path_factory):
    folder = tmp_path_factory.mktemp("model") / "m"
    # 8 good images: 2 held out, which only mean + 3 sd turns into a usable threshold (and fit warns)
    output = invoke("fit", "--method", "knn", "--data", mvtec_folder, "--out", folder, "--image-size",
                    128, "--calibrate", "mu3sigma").output
    assert "fitted knn on 6 images" in output and "mu3sigma: mean + 3 sd of 2 good images" in output
    assert "only 2 good image(s) to calibrate on" in " ".join(output.split())
    return folder


def state(model_folder):
    return json.loads((model_folder / "config.json").read_text())["state"]


def test_fit_holds_out_good_images_for_the_thresholds(model):
    thresholds = state(model)
    assert thresholds["image_threshold_"] > thresholds["image_center_"]
    assert thresholds["pixel_threshold_"] > thresholds["pixel_center_"]


def test_predict_rows_have_decisions_regions_and_masks(model, mvtec_folder, tmp_path):
    results = tmp_path / "results"
    invoke("predict", model, mvtec_folder / "test", "--out", results)
    rows = [json.loads(line) for line in (results / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and (results / "thresholds.json").exists()
    for row in rows:
        assert row["decision"] == ("defect" if row["normalized_score"] >= 1.0 else "ok")
        mask = np.asarray(Image.open(results / row["mask"])) > 0
        assert mask.shape == (128, 128)  # the original image's size
        assert bool(row["regions"]) == mask.any()
        for box in row["regions"]:
            assert mask[box["y0"]:box["y1"], box["x0"]:box["x1"]].sum() == box["area"]
    defective = [r for r in rows if "/good/" not in r["path"]]
    assert all(r["decision"] == "defect" for r in defective)

    labels = {str(s.path.resolve()): s.defect for s in load_dataset(mvtec_folder).test}
    invoke("report", results, "--data", mvtec_folder, "--out", tmp_path / "page")
    text = (tmp_path / "page" / "index.html").read_text()
    assert text.count("<tr data-label=") == 8 and "ROC curve" in text
    assert text.count('data-decision="defect"') == sum(r["decision"] == "defect" for r in rows)
    assert all(f'data-label="{labels[r["path"]]}"' in text for r in rows)


def test_predict_and_the_service_say_the_same_of_each_image(model, mvtec_folder, tmp_path):
    from fastapi.testclient import TestClient

    import lineguard
    from lineguard.serve import create_app

    invoke("predict", model, mvtec_folder / "test", "--out", tmp_path / "results", "--no-report")
    rows = [json.loads(line) for line in (tmp_path / "results" / "results.jsonl").read_text().splitlines()]
    client = TestClient(create_app(lineguard.load(model)))
    files = [("files", (row["path"], open(row["path"], "rb"), "image/png")) for row in rows]
    answers = client.post("/v1/inspect-batch?images=false", files=files).json()["results"]
    keys = ("score", "normalized_score", "decision", "regions")
    assert [{k: a[k] for k in keys} for a in answers] == [{k: r[k] for k in keys} for r in rows]
    assert {r["decision"] for r in rows} == {"ok", "defect"}


@pytest.mark.slow
def test_recalibrating_refuses_to_mix_decisions_in_one_results_folder(model, mvtec_folder, tmp_path):
    recalibrated = tmp_path / "model"
    recalibrated.mkdir()
    for file in model.iterdir():
        (recalibrated / file.name).write_bytes(file.read_bytes())
    invoke("predict", recalibrated, mvtec_folder / "test" / "good", "--out", tmp_path / "results",
           "--no-report")

    output = invoke("calibrate", recalibrated, "--threshold", 3.5).output
    assert "set by hand" in output and state(recalibrated)["image_threshold_"] == 3.5
    assert state(recalibrated)["pixel_threshold_"] == 3.5
    result = runner.invoke(app, ["predict", str(recalibrated), str(mvtec_folder / "test"), "--out",
                                 str(tmp_path / "results")])
    assert result.exit_code != 0 and "other thresholds" in result.output

    invoke("calibrate", recalibrated, "--data", mvtec_folder, "--rule", "f1")
    assert "F1-max on 8 labelled images" in state(recalibrated)["calibration_"]
    invoke("calibrate", recalibrated, mvtec_folder / "test" / "good", "--rule", "quantile",
           "--false-alarm-rate", 0.25)
    assert "quantile: 0.25 false-alarm rate on 4 good images" == state(recalibrated)["calibration_"]
    bad = runner.invoke(app, ["calibrate", str(recalibrated)])
    assert bad.exit_code != 0 and "--threshold" in bad.output


def test_uncalibrated_models_predict_without_decisions(mvtec_folder, tmp_path):
    invoke("fit", "--method", "knn", "--data", mvtec_folder, "--out", tmp_path / "m", "--image-size", 128,
           "--shots", 2, "--calibrate", "none")
    assert "image_threshold_" not in state(tmp_path / "m")
    output = invoke("predict", tmp_path / "m", mvtec_folder / "test" / "good", "--out", tmp_path / "r").output
    assert "no thresholds" in output
    row = json.loads((tmp_path / "r" / "results.jsonl").read_text().splitlines()[0])
    assert "decision" not in row and "uncalibrated" in (tmp_path / "r" / "report" / "index.html").read_text()


def write_batch(folder, items):
    folder.mkdir()
    for i, item in enumerate(items):
        Image.fromarray(item.image).save(folder / f"{i:02d}_{item.defect}.png")
    return folder


def test_a_test_batch_method_decides_from_the_batch_itself(tmp_path):
    items = make_batch(16, 0, kind="part", size=128, seed=21)
    items[3].image[40:70, 50:80] = 12  # a dark blot on one part
    out = tmp_path / "r"
    output = invoke("predict", "--method", "testbatch", write_batch(tmp_path / "line", items), "--out", out,
                    "--image-size", 128).output
    assert "of this batch" in " ".join(output.split()) and "no thresholds" not in output
    assert "1 of 16 images decided defect: 03_good.png" in " ".join(output.split())
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["path"].endswith("03_good.png") for r in rows if r["decision"] == "defect"] == [True]
    assert all(r["decision"] == ("defect" if r["normalized_score"] >= 1.0 else "ok") for r in rows)
    assert (out / "thresholds.json").exists()

    # another batch into the same folder: its decisions would use other thresholds, so it gets scores only
    other = write_batch(tmp_path / "other", make_batch(10, 1, kind="part", size=128, seed=5))
    output = invoke("predict", "--method", "testbatch", other, "--out", out, "--image-size", 128,
                    "--param", "look_alikes=6").output
    assert "another batch" in " ".join(output.split())
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 27 and sum("decision" in r for r in rows) == 16


def test_mad_factor_sets_how_far_above_the_batch_median_a_defect_lies(tmp_path):
    line = write_batch(tmp_path / "line", make_batch(12, 1, kind="part", size=128, seed=8))
    rows = {}
    for factor in (3, 6):
        invoke("predict", "--method", "testbatch", line, "--out", tmp_path / f"r{factor}", "--image-size", 128,
               "--mad-factor", factor, "--no-report")
        assert f"median + {factor} robust sd" in (tmp_path / f"r{factor}" / "thresholds.json").read_text()
        text = (tmp_path / f"r{factor}" / "results.jsonl").read_text()
        rows[factor] = [json.loads(line) for line in text.splitlines()]
    # normalised = (score − median) / (factor · robust sd): twice the factor, half the normalised score
    for three, six in zip(rows[3], rows[6], strict=True):
        assert three["score"] == six["score"]
        assert six["normalized_score"] == pytest.approx(three["normalized_score"] / 2, rel=1e-6, abs=1e-9)
    bad = runner.invoke(app, ["predict", "--method", "testbatch", str(line), "--out", str(tmp_path / "r0"),
                              "--mad-factor", "0"])
    assert bad.exit_code != 0 and "--mad-factor must be positive" in bad.output


def test_a_batch_too_small_for_a_spread_gets_scores_only(tmp_path):
    line = write_batch(tmp_path / "line", make_batch(MIN_BATCH_FOR_DECISIONS - 2, 1, kind="part", size=128))
    output = invoke("predict", "--method", "mutual", line, "--out", tmp_path / "r", "--image-size", 128).output
    assert "too few" in output
    rows = [json.loads(line) for line in (tmp_path / "r" / "results.jsonl").read_text().splitlines()]
    assert len(rows) == MIN_BATCH_FOR_DECISIONS - 1 and not any("decision" in r for r in rows)


def test_holdout_needs_images_to_spare(mvtec_folder, tmp_path):
    result = runner.invoke(app, ["fit", "--data", str(mvtec_folder), "--out", str(tmp_path / "m"),
                                 "--holdout", "0.95"])
    assert result.exit_code != 0 and "cannot hold out" in result.output


def test_evaluate_report_decides_at_the_f1_threshold(mvtec_folder, tmp_path):
    invoke("evaluate", "--method", "knn", "--data", mvtec_folder, "--image-size", 128, "--report",
           tmp_path / "r")
    text = (tmp_path / "r" / "index.html").read_text()
    assert "optimistic" in text and text.count("<tr data-label=") == 8 and "aupro" in text
    assert text.count('data-decision="defect"') == 4  # planted defects are separable: F1 = 1
