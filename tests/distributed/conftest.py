"""Shared pieces of the Ray tests: a small fitted model, a folder of line images, the local path's rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from lineguard.cli import app

RAY_SIZE = 64  # working resolution of the Ray tests' models: the point is the plumbing, not the detector

runner = CliRunner()


@pytest.fixture(autouse=True)
def one_thread():
    """The local runs on one torch thread, as each Ray worker: a matrix product's rounding depends on the number
    of threads, and the rows are compared to 1e-6 and the map files byte for byte."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def invoke(*args: object):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def rows_of(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]


def same_results(first: Path, second: Path) -> None:
    """Identical rows (scores within 1e-6) and decisions, and the same map and mask bytes behind each row. The
    files' numbers may differ: a run resumed after a kill numbers past a map written just before its row."""
    a, b = rows_of(first), rows_of(second)
    assert [r["path"] for r in a] == [r["path"] for r in b]
    for x, y in zip(a, b, strict=True):
        assert abs(x["score"] - y["score"]) <= 1e-6 * max(1.0, abs(x["score"]))
        apart = ("score", "map", "mask")  # compared on their own below
        assert {k: v for k, v in x.items() if k not in apart} == {k: v for k, v in y.items() if k not in apart}
        for kind in ("map", "mask"):
            assert (kind in x) == (kind in y), f"{x['path']}: {kind} in one run only"
            if kind in x:
                assert (first / x[kind]).read_bytes() == (second / y[kind]).read_bytes(), f"{x['path']}: {kind}"


@pytest.fixture(scope="session")
def ray_model(mvtec_folder, tmp_path_factory) -> Path:
    """PatchCore fitted locally on the synthetic parts, calibrated on their labelled test split (F1-max): rows
    with both decisions, masks and regions."""
    model = tmp_path_factory.mktemp("ray") / "model"
    invoke("fit", "--method", "patchcore", "--data", mvtec_folder, "--out", model, "--image-size", RAY_SIZE,
           "--calibrate", "none")
    invoke("calibrate", model, "--data", mvtec_folder, "--rule", "f1")
    return model


@pytest.fixture(scope="session")
def line_images(mvtec_folder, tmp_path_factory) -> Path:
    """The parts' train and test images in two camera folders of 8 (4 defective in all), and a broken file."""
    line = tmp_path_factory.mktemp("line")
    for i, source in enumerate(sorted(mvtec_folder.glob("t*/*/*.png"))):
        camera = line / f"cam{i % 2}"
        camera.mkdir(exist_ok=True)
        (camera / f"{i:02d}.png").write_bytes(source.read_bytes())
    (line / "cam0" / "broken.png").write_bytes(b"not an image")
    return line
