"""An export runs without PyTorch: in this interpreter without importing it, and in a virtual environment
where it is not installed at all (``pip install ./runtime``; .ci/run builds one and names its python in
``LINEGUARD_RUNTIME_PYTHON``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import lineguard
from lineguard.export import export_detector
from lineguard.io.images import list_images, load_batch
from lineguard.synthetic import make_batch
from tests.conftest import SIZE, to_tensor

SCRIPT = Path(__file__).with_name("run_export.py")
RUNTIME_PYTHON = "LINEGUARD_RUNTIME_PYTHON"


@pytest.fixture(scope="module")
def line(parts, tmp_path_factory):
    """An ONNX export of a calibrated kNN, a folder of PNG parts (and one broken file), and the model's own
    scores of those files as the PyTorch path reads them."""
    folder = tmp_path_factory.mktemp("line")
    detector = lineguard.create("knn", image_size=SIZE).fit(parts[0][:4])
    detector.calibrate(detector.predict(to_tensor(make_batch(4, 0, kind="part", size=SIZE, seed=12))))
    export_detector(detector, folder / "export")
    (folder / "images").mkdir()
    for i, part in enumerate(make_batch(2, 2, kind="part", size=160, seed=13)):  # not at the working size
        Image.fromarray(part.image).save(folder / "images" / f"{i}.png")
    (folder / "images" / "broken.png").write_bytes(b"not an image")
    images, _, _ = load_batch(list_images(folder / "images"), size=SIZE)
    return folder, detector.predict(images).scores.numpy()


def run(python: str, line, runtime: str, env: dict[str, str]) -> dict:
    folder, _ = line
    done = subprocess.run([python, str(SCRIPT), str(folder / "export"), str(folder / "images"), runtime],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def check(answer: dict, line) -> None:
    assert answer["torch"] is False, "torch was imported"
    assert answer["failed"] == 1 and len(answer["decisions"]) == 4
    assert np.allclose(answer["scores"], line[1], rtol=1e-4, atol=1e-4)  # decoded and resized without torch


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_running_an_export_never_imports_torch(line, runtime):
    check(run(sys.executable, line, runtime, dict(os.environ)), line)


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_runtime_install_without_torch(line, runtime):
    python = os.environ.get(RUNTIME_PYTHON)
    if not python:
        pytest.skip(f"{RUNTIME_PYTHON} is not set: it names the python of a virtual environment with "
                    "`pip install './runtime[openvino]'` and no torch (.ci/run builds one)")
    assert Path(python).is_file(), f"{RUNTIME_PYTHON}={python} does not exist"
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}  # the installed copy only
    probe = subprocess.run([python, "-c", "import importlib.util as u; print(u.find_spec('torch') is None)"],
                           capture_output=True, text=True, env=env)
    assert probe.stdout.strip() == "True", f"{python} has torch installed: the test would prove nothing"
    check(run(python, line, runtime, env), line)
