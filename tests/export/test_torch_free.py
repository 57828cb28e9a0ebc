"""An export runs without PyTorch: ``lineguard predict`` and the service on an export folder, in a child process
that never imports torch, and in a virtual environment where torch is not installed at all (``pip install
'./runtime[openvino,serve]'``; .ci/run builds one and names its python in ``LINEGUARD_RUNTIME_PYTHON``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import lineguard
from lineguard.cli import app
from lineguard.export import export_detector
from lineguard.synthetic import make_batch, make_sheets
from lineguard.tiling import tiled
from tests.conftest import SIZE, to_tensor

pytestmark = pytest.mark.slow  # an export, and child processes that import the CLI and the service

SCRIPT = Path(__file__).with_name("run_export.py")
RUNTIME_PYTHON = "LINEGUARD_RUNTIME_PYTHON"


def line_of(folder: Path, detector, parts) -> tuple[Path, dict]:
    """``detector`` saved and exported to ONNX in ``folder``, ``parts`` as PNGs (and one broken file), and the rows
    ``lineguard predict`` gives for them with the model itself (PyTorch)."""
    detector.save(folder / "model")
    export_detector(detector, folder / "export")
    (folder / "images").mkdir()
    for i, part in enumerate(parts):
        Image.fromarray(part.image).save(folder / "images" / f"{i}.png")
    (folder / "images" / "broken.png").write_bytes(b"not an image")
    done = CliRunner().invoke(app, ["predict", str(folder / "model"), str(folder / "images"), "--out",
                                    str(folder / "torch-results"), "--no-report"])
    assert done.exit_code == 0, done.output
    rows = [json.loads(line) for line in (folder / "torch-results" / "results.jsonl").read_text().splitlines()]
    return folder, {Path(row["path"]).name: row for row in rows}


@pytest.fixture(scope="module")
def line(parts, tmp_path_factory):
    """A calibrated kNN and parts not at its working size."""
    detector = lineguard.create("knn", image_size=SIZE).fit(parts[0][:4])
    detector.calibrate(detector.predict(to_tensor(make_batch(4, 0, kind="part", size=SIZE, seed=12))))
    return line_of(tmp_path_factory.mktemp("line"), detector, make_batch(2, 2, kind="part", size=160, seed=13))


@pytest.fixture(scope="module")
def tiled_line(tmp_path_factory):
    """A calibrated kNN in 128 px tiles (overlap 16) at a working size of 64 px, and sheets of two sizes."""
    detector = tiled(lineguard.create("knn", image_size=64), 128, 16)
    detector.fit(to_tensor(make_sheets(3, 0, height=192, width=320, seed=1)))
    detector.calibrate(detector.predict(to_tensor(make_sheets(4, 0, height=192, width=320, seed=2))))
    flaws = (0.005, 0.02)  # of the frame: large enough for the model to call them defects
    sheets = (make_sheets(1, 1, height=192, width=320, area=flaws, seed=3)
              + make_sheets(1, 1, height=150, width=260, area=flaws, seed=4))
    return line_of(tmp_path_factory.mktemp("tiled-line"), detector, sheets)


def run(python: str, line, runtime: str, env: dict[str, str], out: Path) -> dict:
    folder, _ = line
    done = subprocess.run([python, str(SCRIPT), str(folder / "export"), str(folder / "images"), runtime, str(out)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def boxes(regions: list[dict]) -> list[tuple]:
    """Regions as boxes and areas, their peaks to 1e-4 (a map value, which differs in the sixth digit)."""
    return [(r["x0"], r["y0"], r["x1"], r["y1"], r["area"], pytest.approx(r["peak"], rel=1e-4)) for r in regions]


def check(answer: dict, line) -> None:
    """No torch; predict's rows are the model's (scores to 1e-4 of their range, same decisions and regions),
    the service says what predict says, and the broken file is refused by both."""
    assert answer["torch"] is False, "torch was imported"
    assert answer["report"], "predict wrote no report"
    expected = line[1]
    rows = {Path(row["path"]).name: row for row in answer["rows"]}
    assert sorted(rows) == sorted(expected) == ["0.png", "1.png", "2.png", "3.png"]
    scores = np.array([expected[name]["score"] for name in sorted(rows)])
    got = np.array([rows[name]["score"] for name in sorted(rows)])
    assert np.abs(got - scores).max() <= 1e-4 * (scores.max() - scores.min())  # read and resized without torch
    for name, row in rows.items():
        assert row["decision"] == expected[name]["decision"]
        assert boxes(row["regions"]) == boxes(expected[name]["regions"])
        served = answer["served"][name]
        assert served["decision"] == row["decision"] and served["regions"] == row["regions"]
        assert served["score"] == pytest.approx(row["score"], rel=1e-6)
    assert answer["served"]["broken.png"] == 400
    assert {row["decision"] for row in rows.values()} == {"ok", "defect"}


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_predict_and_serve_on_an_export_never_import_torch(line, runtime, tmp_path):
    check(run(sys.executable, line, runtime, dict(os.environ), tmp_path / "results"), line)


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_a_tiled_export_runs_without_torch(tiled_line, runtime, tmp_path):
    """Images of two sizes cut into the model's tiles without PyTorch: the model's rows, maps at their own size."""
    check(run(sys.executable, tiled_line, runtime, dict(os.environ), tmp_path / "results"), tiled_line)


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_runtime_install_without_torch(line, tiled_line, runtime, tmp_path):
    python = os.environ.get(RUNTIME_PYTHON)
    if not python:
        pytest.skip(f"{RUNTIME_PYTHON} is not set: it names the python of a virtual environment with "
                    "`pip install './runtime[openvino,serve]'` and no torch (.ci/run builds one)")
    assert Path(python).is_file(), f"{RUNTIME_PYTHON}={python} does not exist"
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}  # the installed copy only
    probe = subprocess.run([python, "-c", "import importlib.util as u; print(u.find_spec('torch') is None)"],
                           capture_output=True, text=True, env=env)
    assert probe.stdout.strip() == "True", f"{python} has torch installed: the test would prove nothing"
    check(run(python, line, runtime, env, tmp_path / "results"), line)
    check(run(python, tiled_line, runtime, env, tmp_path / "tiled-results"), tiled_line)
