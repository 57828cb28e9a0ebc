"""The command line end to end on a small synthetic dataset."""

from __future__ import annotations

import json
import subprocess
import sys

from typer.testing import CliRunner

from lineguard.cli import app, parse_param

runner = CliRunner()


def invoke(*args: str):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def lineguard(*args: str) -> subprocess.CompletedProcess:
    """The installed entry point in a child process, as a user runs it (exit codes, stderr)."""
    return subprocess.run([sys.executable, "-m", "lineguard", *map(str, args)], capture_output=True, text=True)


def test_evaluate_prints_and_writes_metrics(mvtec_folder, tmp_path):
    out = tmp_path / "m.json"
    result = invoke("evaluate", "--method", "knn", "--backbone", "effnet-lite0", "--data", mvtec_folder,
                    "--image-size", 128, "--json", out)
    assert "image AUROC" in result.output and "images/s" in result.output
    record = json.loads(out.read_text())
    assert {"image_auroc", "pixel_auroc", "aupro", "images_per_second", "peak_rss_mb"} <= set(record)
    assert record["image_auroc"] >= 0.9 and record["pixel_auroc"] >= 0.8


def test_fit_predict_resume_and_bad_files(mvtec_folder, tmp_path):
    model, results = tmp_path / "model", tmp_path / "results"
    invoke("fit", "--method", "knn", "--data", mvtec_folder, "--out", model, "--image-size", 128,
           "--shots", 4, "--seed", 1)
    assert json.loads((model / "config.json").read_text())["params"]["image_size"] == 128
    images = tmp_path / "line"
    images.mkdir()
    for i, src in enumerate(sorted((mvtec_folder / "test").rglob("*.png"))):
        (images / f"{i:02d}.png").write_bytes(src.read_bytes())
    (images / "broken.png").write_bytes(b"not an image")
    first = invoke("predict", model, images, "--out", results)
    assert "broken.png" in first.output
    rows = [json.loads(line) for line in (results / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and all((results / r["map"]).exists() for r in rows)
    assert (results / "report" / "index.html").exists()

    # simulated crash: the last two rows are lost and one is torn; a rerun restores exactly the missing ones
    lines = (results / "results.jsonl").read_text().splitlines(keepends=True)
    (results / "results.jsonl").write_text("".join(lines[:6]) + lines[6][:10])
    invoke("predict", model, images, "--out", results, "--no-report")
    again = [json.loads(line) for line in (results / "results.jsonl").read_text().splitlines()]
    assert sorted(r["path"] for r in again) == sorted(r["path"] for r in rows)
    by_path = {r["path"]: r["score"] for r in again}
    diffs = [abs(by_path[r["path"]] - r["score"]) / abs(r["score"]) for r in rows]
    assert max(diffs) < 1e-4, diffs

    # a saved model keeps its fitted settings: options that would only be ignored are refused by name
    refused = runner.invoke(app, ["predict", str(model), str(images), "--out", str(tmp_path / "r2"),
                                  "--image-size", "256", "--keep-aspect"])
    assert refused.exit_code == 2 and "--image-size, --keep-aspect" in refused.output
    assert not (tmp_path / "r2" / "results.jsonl").exists()


def test_user_errors_are_one_clear_line(tmp_path):
    missing = tmp_path / "nowhere"
    result = lineguard("evaluate", "--method", "knn", "--data", missing)
    assert result.returncode == 2
    assert str(missing) in result.stderr and "Traceback" not in result.stderr
    result = lineguard("evaluate", "--method", "knn", "--data", missing, "--param", "bogus=1")
    assert result.returncode == 2 and "bogus" in result.stderr


def test_methods_lists_parameters():
    result = invoke("methods")
    assert "knn" in result.output and "image_size=256" in result.output


def test_demo_writes_a_report(tmp_path):
    result = invoke("demo", "--out", tmp_path / "demo")
    page = tmp_path / "demo" / "report" / "index.html"
    assert page.exists() and str(page.resolve()) in result.output.replace("\n", "")
    html = page.read_text()
    assert html.count('alt="anomaly map"') == 16
    assert len(list((tmp_path / "demo" / "report" / "images").glob("*_overlay.png"))) == 16


def test_benchmark_runs_grid_and_resumes(mvtec_folder, tmp_path):
    args = ["benchmark", "--data", mvtec_folder, "--method", "knn", "--shots", 2, "--seeds", 0, "--seeds", 1,
            "--image-size", 128, "--out", tmp_path / "bench"]
    invoke(*args)
    rows = (tmp_path / "bench" / "results.jsonl").read_text().splitlines()
    assert len(rows) == 2
    table = (tmp_path / "bench" / "results.md").read_text()
    assert "| part | knn | effnet-lite0 | 2 |" in table
    invoke(*args)  # resume: nothing left to run, nothing duplicated
    assert (tmp_path / "bench" / "results.jsonl").read_text().splitlines() == rows


def test_help_lists_every_command():
    result = lineguard("--help")
    assert result.returncode == 0
    assert all(command in result.stdout for command in ("fit", "predict", "evaluate", "benchmark", "demo"))


def test_param_values_are_typed():
    assert parse_param("hflip=False") == ("hflip", False)  # as Python spells it: not the truthy text "False"
    assert parse_param("hflip=true") == ("hflip", True)
    assert parse_param("baseline_quantile=None") == ("baseline_quantile", None)
    assert parse_param("levels=[1, 2]") == ("levels", [1, 2])
    assert parse_param("coreset_ratio=0.25") == ("coreset_ratio", 0.25)
    assert parse_param("encoder=models/enc") == ("encoder", "models/enc")
